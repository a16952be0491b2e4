"""Credentials that change while a program runs: token files and exec plugins.

A ``tokenFile`` is re-read whenever it changes (size, mtime or inode), so a
rotated service-account token is picked up on the next request. (client-go
re-reads it once a minute; checking a ``stat`` per request is as cheap and
never uses a stale token.)

An exec plugin (client.authentication.k8s.io ``v1`` or ``v1beta1``) is run as
client-go runs it: ``command args...`` with the configured ``env`` added, the
``KUBERNETES_EXEC_INFO`` document in the environment, stdin closed (we are never
interactive), stderr passed through to ours. Its ``ExecCredential`` is cached
until ``status.expirationTimestamp`` (forever if it has none), and dropped when
the server answers 401 so the next request runs the plugin again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ._config import ClusterSettings, ExecConfig
from ._errors import CredentialError

#: Seconds an exec plugin may run: long enough for a plugin that waits on a
#: browser sign-in, bounded so a wedged plugin cannot hang every request.
DEFAULT_EXEC_TIMEOUT = 300.0
#: Largest ExecCredential we accept from a plugin (real ones are a few KiB).
MAX_EXEC_OUTPUT = 1024 * 1024

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Credential:
    """What one request authenticates with (any field may be None)."""

    token: str | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    expires: dt.datetime | None = None


class TokenFile:
    """A bearer token in a file, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._token = ""

    def read(self) -> str:
        """The current token. Raises :class:`CredentialError` if the file cannot
        be read or is empty."""
        try:
            info = self.path.stat()
            seen = (info.st_mtime_ns, info.st_size, info.st_ino)
            if seen != self._seen:
                token = self.path.read_text(encoding="utf-8").strip()
                if not token:
                    raise CredentialError(f"token file {self.path} is empty")
                self._token, self._seen = token, seen
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialError(f"cannot read token file {self.path}: {exc}") from None
        return self._token


class ExecPlugin:
    """Runs a kubeconfig ``exec`` plugin and caches its credential.

    ``now`` is the clock expiry is judged by (tests pass a fake one).
    """

    def __init__(
        self,
        config: ExecConfig,
        cluster_info: Mapping[str, Any],
        *,
        now: Clock = utc_now,
        timeout: float = DEFAULT_EXEC_TIMEOUT,
    ) -> None:
        self.config = config
        self.cluster_info = cluster_info
        self.now = now
        self.timeout = timeout
        self.runs = 0
        self._cached: Credential | None = None
        self._lock = trio.Lock()

    def invalidate(self) -> None:
        """Forget the cached credential (the server refused it)."""
        self._cached = None

    def _valid(self, credential: Credential | None) -> bool:
        if credential is None:
            return False
        return credential.expires is None or self.now() < credential.expires

    async def credential(self) -> Credential:
        """The cached credential, or a fresh one if it expired or was invalidated."""
        async with self._lock:  # concurrent requests share one plugin run
            if not self._valid(self._cached):
                self._cached = await self._run()
            assert self._cached is not None
            return self._cached

    def _exec_info(self) -> str:
        spec: dict[str, Any] = {"interactive": False}
        if self.config.provide_cluster_info:
            spec["cluster"] = dict(self.cluster_info)
        return json.dumps(
            {"apiVersion": self.config.api_version, "kind": "ExecCredential", "spec": spec}
        )

    async def _run(self) -> Credential:
        config = self.config
        name = config.command
        if config.interactive_mode == "Always":
            raise CredentialError(
                f"{config.origin}: the plugin needs interactiveMode Always; muxstream "
                "runs exec plugins non-interactively"
            )
        env = dict(os.environ)
        env.update(config.env)
        env["KUBERNETES_EXEC_INFO"] = self._exec_info()
        self.runs += 1
        try:
            with trio.fail_after(self.timeout):
                result = await trio.run_process(
                    [config.command, *config.args],
                    stdin=b"",
                    capture_stdout=True,
                    check=False,
                    env=env,
                )
        except FileNotFoundError:
            hint = f" ({config.install_hint.strip()})" if config.install_hint else ""
            raise CredentialError(f"exec plugin {name!r} not found{hint}") from None
        except PermissionError:
            raise CredentialError(f"exec plugin {name!r} is not executable") from None
        except trio.TooSlowError:
            raise CredentialError(
                f"exec plugin {name!r} did not finish within {self.timeout:g} s"
            ) from None
        if result.returncode != 0:
            raise CredentialError(f"exec plugin {name!r} exited with status {result.returncode}")
        return parse_exec_credential(result.stdout[:MAX_EXEC_OUTPUT], config)


def parse_exec_credential(output: bytes, config: ExecConfig) -> Credential:
    """Decode a plugin's ExecCredential (stdout). Raises :class:`CredentialError`."""
    name = config.command

    def bad(problem: str) -> CredentialError:
        return CredentialError(f"exec plugin {name!r} returned {problem}")

    try:
        document = json.loads(output)
    except ValueError:
        raise bad("output that is not JSON") from None
    if not isinstance(document, dict) or document.get("kind") != "ExecCredential":
        raise bad("something that is not an ExecCredential")
    if document.get("apiVersion") != config.api_version:
        raise bad(
            f"apiVersion {document.get('apiVersion')!r}, expected {config.api_version!r}"
        )
    status = document.get("status")
    if not isinstance(status, dict):
        raise bad("an ExecCredential without status")
    token = status.get("token") or None
    cert = status.get("clientCertificateData") or None
    key = status.get("clientKeyData") or None
    if bool(cert) != bool(key):
        raise bad("a client certificate without its key (or a key without certificate)")
    if not token and not cert:
        raise bad("neither a token nor a client certificate")
    if token is not None and not isinstance(token, str):
        raise bad("a token that is not a string")
    expires = None
    stamp = status.get("expirationTimestamp")
    if stamp:
        try:
            expires = dt.datetime.fromisoformat(str(stamp))
        except ValueError:
            raise bad(f"an unparsable expirationTimestamp {stamp!r}") from None
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
    return Credential(
        token=token,
        client_cert_pem=str(cert).encode() if cert else None,
        client_key_pem=str(key).encode() if key else None,
        expires=expires,
    )


class CredentialSource:
    """The credential for every request of one :class:`~muxstream.kube.Cluster`.

    Precedence (as client-go): an exec plugin's credential, then ``tokenFile``
    (re-read on change), then ``token``; basic auth and client certificates
    from the kubeconfig apply when no plugin supplies their counterpart.
    """

    def __init__(self, settings: ClusterSettings, *, now: Clock = utc_now) -> None:
        self.settings = settings
        self.token_file = TokenFile(settings.token_file) if settings.token_file else None
        self.plugin = (
            ExecPlugin(settings.exec, settings.cluster_info, now=now) if settings.exec else None
        )

    @property
    def refreshable(self) -> bool:
        """Whether a 401 may be worth one more try (a plugin or token file may
        give a different credential next time)."""
        return self.plugin is not None or self.token_file is not None

    def invalidate(self) -> None:
        if self.plugin is not None:
            self.plugin.invalidate()

    async def current(self) -> Credential:
        settings = self.settings
        cert, key = settings.client_cert_pem, settings.client_key_pem
        token = settings.token
        if self.token_file is not None:
            token = self.token_file.read()
        if self.plugin is not None:
            fresh = await self.plugin.credential()
            token = fresh.token or token
            if fresh.client_cert_pem:
                cert, key = fresh.client_cert_pem, fresh.client_key_pem
        await trio.lowlevel.checkpoint()
        return Credential(token=token, client_cert_pem=cert, client_key_pem=key)
