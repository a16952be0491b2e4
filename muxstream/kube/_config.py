"""Reading kubeconfig files the way kubectl (client-go ``clientcmd``) does.

Which files: ``--kubeconfig``/``path`` alone if given (it must exist); else every
file listed in ``KUBECONFIG`` (``os.pathsep``-separated; duplicates dropped,
missing files skipped); else ``~/.kube/config`` (missing means empty).

Merging: the entries of ``clusters``, ``users`` and ``contexts`` are merged by
name, and the first file that defines a name wins, whole (fields are never mixed
across files); the first non-empty ``current-context`` wins.

Paths: ``certificate-authority``, ``client-certificate``, ``client-key``,
``tokenFile``, and an exec plugin ``command`` containing a ``/`` are relative to
the directory of the file that defined the entry (``~`` is not expanded, as
kubectl does not).

Resolving a context (:meth:`Kubeconfig.resolve`) checks what kubectl checks
before it connects and reads every referenced file, so a broken kubeconfig fails
in one line naming the file and the key, before any network traffic.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import KubeconfigError, MissingDependency

ENV_KUBECONFIG = "KUBECONFIG"
DEFAULT_NAMESPACE = "default"
#: The exec plugin API versions client-go still speaks (v1alpha1 was removed in 1.24).
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
_SECTIONS = {"clusters": "cluster", "users": "user", "contexts": "context"}


def _yaml_load(text: str) -> object:
    try:
        import yaml
    except ImportError:  # pragma: no cover - exercised by the CLI test with a fake path
        raise MissingDependency(
            "reading a kubeconfig needs PyYAML: pip install 'muxstream[kube]'"
        ) from None
    return yaml.safe_load(text)


def default_kubeconfig_paths(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The files kubectl would read without ``--kubeconfig``, in precedence order."""
    env = os.environ if environ is None else environ
    listed = env.get(ENV_KUBECONFIG, "")
    if listed:
        paths: list[Path] = []
        for part in listed.split(os.pathsep):
            if part and Path(part) not in paths:
                paths.append(Path(part))
        return paths
    home = env.get("HOME") or str(Path.home())
    return [Path(home) / ".kube" / "config"]


@dataclass(frozen=True)
class _Entry:
    name: str
    body: Mapping[str, Any]
    file: Path
    key: str  # e.g. 'users["admin"]', for error messages

    def error(self, field_name: str, problem: str) -> KubeconfigError:
        return KubeconfigError(self.file, f"{self.key}.{field_name}", problem)

    def string(self, name: str) -> str:
        value = self.body.get(name)
        if value is None:
            return ""
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.error(name, f"expected a string, got {type(value).__name__}")
        return str(value)

    def flag(self, name: str) -> bool:
        value = self.body.get(name, False)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {value!r}")
        return value

    def path(self, name: str) -> Path | None:
        """A file path field, made absolute against the defining file's directory."""
        text = self.string(name)
        if not text:
            return None
        return self.file.parent.absolute() / text

    def read(self, name: str) -> bytes | None:
        path = self.path(name)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise self.error(name, f"cannot read {path}: {exc.strerror or exc}") from None

    def data(self, name: str) -> bytes | None:
        """A ``*-data`` field: base64 in the file."""
        text = self.string(name)
        if not text:
            return None
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise self.error(name, "not valid base64") from None

    def file_or_data(self, name: str) -> bytes | None:
        if self.body.get(name) and self.body.get(f"{name}-data"):
            raise self.error(name, f"both {name} and {name}-data are set; set one")
        return self.data(f"{name}-data") or self.read(name)


@dataclass(frozen=True)
class ExecConfig:
    """A user's ``exec`` credential plugin (client.authentication.k8s.io)."""

    command: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    api_version: str
    install_hint: str
    provide_cluster_info: bool
    interactive_mode: str
    origin: str  # "FILE: users[...]" for messages


@dataclass(frozen=True)
class ClusterSettings:
    """Everything needed to reach one cluster as one user (a resolved context).

    File-backed values have been read (``ca_pem``, ``client_cert_pem``,
    ``client_key_pem``); ``token_file`` is kept as a path because it is re-read
    whenever it changes.
    """

    context: str
    server: str
    namespace: str = DEFAULT_NAMESPACE
    ca_pem: bytes | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    token: str | None = None
    token_file: Path | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    username: str | None = None
    password: str | None = None
    exec: ExecConfig | None = None
    cluster_info: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Kubeconfig:
    """Merged kubeconfig content (see the module docstring for the rules).

    Build it with :func:`load_kubeconfig`; :meth:`resolve` gives the settings
    of one context.
    """

    files: list[Path]
    current_context: str = ""
    clusters: dict[str, _Entry] = field(default_factory=dict)
    users: dict[str, _Entry] = field(default_factory=dict)
    contexts: dict[str, _Entry] = field(default_factory=dict)

    def resolve(
        self, context: str | None = None, *, namespace: str | None = None
    ) -> ClusterSettings:
        """The settings of ``context`` (default: current-context).

        ``namespace`` overrides the context's namespace (``-n``). Raises
        :class:`KubeconfigError` for anything kubectl would refuse.
        """
        where = os.pathsep.join(map(str, self.files))
        name = context or self.current_context
        if not name:
            raise KubeconfigError(
                where, "current-context", "not set (and no context was given)"
            )
        if name not in self.contexts:
            key = "current-context" if not context else "context"
            raise KubeconfigError(where, key, f'context "{name}" does not exist')
        ctx = self.contexts[name]
        cluster_name, user_name = ctx.string("cluster"), ctx.string("user")
        if cluster_name not in self.clusters:
            raise ctx.error("cluster", f'cluster "{cluster_name}" does not exist')
        cluster = self.clusters[cluster_name]
        server = cluster.string("server")
        if not server:
            raise cluster.error("server", "no server URL")
        if not server.startswith(("https://", "http://")):
            raise cluster.error("server", f"{server!r} is not an http(s) URL")
        insecure = cluster.flag("insecure-skip-tls-verify")
        ca = cluster.file_or_data("certificate-authority")
        if insecure and ca:
            raise cluster.error(
                "insecure-skip-tls-verify",
                "certificate-authority is set too: specifying a root certificates "
                "file with the insecure flag is not allowed",
            )
        settings: dict[str, Any] = {
            "context": name,
            "server": server.rstrip("/"),
            "namespace": namespace or ctx.string("namespace") or DEFAULT_NAMESPACE,
            "ca_pem": ca,
            "insecure_skip_tls_verify": insecure,
            "tls_server_name": cluster.string("tls-server-name") or None,
            "proxy_url": cluster.string("proxy-url") or None,
            "cluster_info": {
                "server": server,
                "certificate-authority-data": base64.b64encode(ca).decode() if ca else "",
                "insecure-skip-tls-verify": insecure,
                "tls-server-name": cluster.string("tls-server-name"),
                "proxy-url": cluster.string("proxy-url"),
            },
        }
        if user_name:
            if user_name not in self.users:
                raise ctx.error("user", f'user "{user_name}" does not exist')
            settings.update(_user_settings(self.users[user_name]))
        return ClusterSettings(**settings)


def _user_settings(user: _Entry) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if user.body.get("auth-provider"):
        provider = user.body["auth-provider"]
        kind = provider.get("name") if isinstance(provider, dict) else provider
        raise user.error(
            "auth-provider",
            f"auth-provider {kind!r} is not supported (kubectl removed it too): "
            "use an exec credential plugin",
        )
    token_file = user.path("tokenFile")
    if token_file is not None:
        out["token_file"] = token_file
        user.read("tokenFile")  # fail now, naming the key, if it cannot be read
    out["token"] = user.string("token") or None
    cert = user.file_or_data("client-certificate")
    key = user.file_or_data("client-key")
    if bool(cert) != bool(key):
        missing = "client-key" if cert else "client-certificate"
        raise user.error(missing, "a client certificate needs both certificate and key")
    out["client_cert_pem"], out["client_key_pem"] = cert, key
    out["username"] = user.string("username") or None
    out["password"] = user.string("password") or None
    exec_body = user.body.get("exec")
    if exec_body:
        out["exec"] = _exec_config(user, exec_body)
    return out


def _exec_config(user: _Entry, body: object) -> ExecConfig:
    if not isinstance(body, dict):
        raise user.error("exec", "expected a mapping")
    entry = _Entry(user.name, body, user.file, f"{user.key}.exec")
    command = entry.string("command")
    if not command:
        raise entry.error("command", "no command")
    if "/" in command:
        command = str(entry.path("command"))
    api_version = entry.string("apiVersion")
    if api_version not in EXEC_API_VERSIONS:
        raise entry.error(
            "apiVersion",
            f"{api_version!r} is not supported (use one of {', '.join(EXEC_API_VERSIONS)})",
        )
    mode = entry.string("interactiveMode")
    if not mode and api_version.endswith("/v1"):
        raise entry.error("interactiveMode", "must be set for client.authentication.k8s.io/v1")
    if mode and mode not in ("Never", "IfAvailable", "Always"):
        raise entry.error("interactiveMode", f"{mode!r} is not Never, IfAvailable or Always")
    args = body.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise entry.error("args", "expected a list of strings")
    env_items = body.get("env") or []
    env: list[tuple[str, str]] = []
    if not isinstance(env_items, list):
        raise entry.error("env", "expected a list of {name, value}")
    for index, item in enumerate(env_items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise entry.error(f"env[{index}]", "expected {name, value}")
        env.append((item["name"], str(item.get("value", ""))))
    return ExecConfig(
        command=command,
        args=tuple(args),
        env=tuple(env),
        api_version=api_version,
        install_hint=entry.string("installHint"),
        provide_cluster_info=entry.flag("provideClusterInfo"),
        interactive_mode=mode or "IfAvailable",
        origin=f"{user.file}: {user.key}.exec",
    )


def _merge(config: Kubeconfig, file: Path, document: object) -> None:
    """Add one file's content to ``config``: the first definition of a name wins."""
    if document is None:
        return  # an empty file is an empty config
    if not isinstance(document, dict):
        raise KubeconfigError(file, "", "not a kubeconfig (expected a mapping at the top)")
    current = document.get("current-context")
    if current and not config.current_context:
        if not isinstance(current, str):
            raise KubeconfigError(file, "current-context", "expected a string")
        config.current_context = current
    for section, inner in _SECTIONS.items():
        items = document.get(section)
        if items is None:
            continue
        if not isinstance(items, list):
            raise KubeconfigError(file, section, "expected a list")
        target: dict[str, _Entry] = getattr(config, section)
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise KubeconfigError(file, f"{section}[{index}]", "expected a name")
            name = item["name"]
            body = item.get(inner) or {}
            key = f'{section}["{name}"].{inner}'
            if not isinstance(body, dict):
                raise KubeconfigError(file, key, "expected a mapping")
            target.setdefault(name, _Entry(name, body, file, key))


def load_kubeconfig(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Kubeconfig:
    """Read and merge kubeconfig files as kubectl does (module docstring).

    ``path`` (kubectl's ``--kubeconfig``) is read alone and must exist; without
    it ``KUBECONFIG`` (from ``environ``, default ``os.environ``) or
    ``~/.kube/config``. Raises :class:`KubeconfigError` (one line naming the
    file and the key), or :class:`MissingDependency` without PyYAML.
    """
    explicit = path is not None
    paths = [Path(path)] if path is not None else default_kubeconfig_paths(environ)
    config = Kubeconfig(files=[])
    for file in paths:
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            if explicit:
                raise KubeconfigError(file, "", "no such file") from None
            continue  # kubectl skips missing files listed in KUBECONFIG
        except (OSError, UnicodeDecodeError) as exc:
            raise KubeconfigError(file, "", f"cannot read: {exc}") from None
        try:
            document = _yaml_load(text)
        except MissingDependency:
            raise
        except Exception as exc:  # yaml.YAMLError and its kin
            mark = getattr(exc, "problem_mark", None)
            line = f"line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise KubeconfigError(file, line, f"malformed YAML: {problem}") from None
        config.files.append(file)
        _merge(config, file, document)
    if not config.files:
        raise KubeconfigError(
            paths[0] if len(paths) == 1 else os.pathsep.join(map(str, paths)),
            "",
            "no kubeconfig found (set KUBECONFIG or pass a kubeconfig path)",
        )
    return config
