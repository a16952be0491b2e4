"""Shared by the kubectl tests: a TLS muxstream endpoint and a kubeconfig for it."""

from __future__ import annotations

import os
import shutil
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
import trustme

from muxstream.remote import KubeApi, LocalBackend, RemoteServerConfig, bound_port, serve_remote

KUBECTL = shutil.which("kubectl")
TOKEN = "test-token-5d1c-0123456789"

ATTACH_SCRIPT = 'while read l; do [ "$l" = quit ] && exit 0; echo "got $l"; done'


@dataclass
class Endpoint:
    port: int
    kubeconfig: Path
    cache_dir: Path
    ca: trustme.CA
    ca_path: Path

    def env(self, transport: str) -> dict[str, str]:
        env = dict(os.environ)
        flag = "false" if transport == "spdy" else "true"
        env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = flag
        env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = flag
        return env

    async def kubectl(
        self,
        *args: str,
        transport: str = "websocket",
        stdin: bytes = b"",
        timeout: float = 120,
        token: str | None = TOKEN,
    ) -> trio.CompletedProcess[bytes]:
        assert KUBECTL is not None
        argv = [KUBECTL, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}"]
        if token != TOKEN:
            argv.append(f"--token={token or ''}")
        with trio.fail_after(timeout):
            return await trio.run_process(
                [*argv, *args],
                stdin=stdin,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=self.env(transport),
            )


async def echo_handler(stream: trio.SocketStream) -> None:
    """A TCP echo service: the "pod port" port-forward tests reach."""
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)


def write_kubeconfig(path: Path, port: int, ca_path: Path, user: str | None = None) -> None:
    user = user or f"token: {TOKEN}"
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: mux
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca_path}
users:
- name: mux
  user:
    {user}
contexts:
- name: mux
  context: {{cluster: mux, user: mux, namespace: default}}
current-context: mux
"""
    )


@asynccontextmanager
async def kube_endpoint(
    tmp_path: Path,
    *,
    attach_commands: Mapping[str, Sequence[str]] | None = None,
    client_certs: bool = False,
    attach_tty: bool = False,
    server_names: Sequence[str] = ("127.0.0.1",),
    **config: object,
) -> AsyncIterator[Endpoint]:
    """A TLS endpoint serving pod ``demo`` (container ``main``) from local processes,
    authenticating by token, or by client certificate with ``client_certs``;
    its certificate names ``server_names``."""
    ca = trustme.CA()
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*server_names).configure_cert(context)
    user = None
    if client_certs:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
        client = ca.issue_cert("kubectl-user@example")
        client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.crt"))
        client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
        user = (
            f"client-certificate: {tmp_path / 'client.crt'}\n"
            f"    client-key: {tmp_path / 'client.key'}"
        )
        config = {"token": None, "client_certs": True, **config}
    attach = attach_commands or {"main": ["sh", "-c", ATTACH_SCRIPT]}
    async with LocalBackend(
        attach_commands=attach, cwd=str(tmp_path), attach_tty=attach_tty
    ) as backend:
        options: dict[str, object] = {
            "token": TOKEN,
            "backend": backend,
            "api": KubeApi({"demo": ["main"]}),
        }
        options.update(config)
        server_config = RemoteServerConfig(**options)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                lambda task_status: serve_remote(
                    server_config, 0, ssl_context=context, task_status=task_status
                )
            )
            port = bound_port(listeners)
            kubeconfig = tmp_path / "kubeconfig.yaml"
            write_kubeconfig(kubeconfig, port, ca_path, user)
            yield Endpoint(port, kubeconfig, tmp_path / "kube-cache", ca, ca_path)
            nursery.cancel_scope.cancel()
