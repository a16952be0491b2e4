"""Shared pieces of the exec-service security tests: a spied server on loopback,
hand-written requests and their answers.

Imported relatively (``from ._security_helpers import ...``).
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import trio
import trustme

from muxstream._cli import _serve
from muxstream._cli._common import Address
from muxstream.remote import (
    ExecRequest,
    KubeApi,
    LocalBackend,
    ProcessHandle,
    RemoteEndpoint,
    RemoteServer,
    RemoteServerConfig,
    bound_port,
    serve_remote,
)

TOKEN = "security-test-token"
EXEC = "/api/v1/namespaces/default/pods/demo/exec"
ATTACH = "/api/v1/namespaces/default/pods/demo/attach"
PORTFORWARD = "/api/v1/namespaces/default/pods/demo/portforward"
TRANSPORTS = ["websocket", "spdy"]


# --- helpers -------------------------------------------------------------------------


class SpyBackend:
    """Counts every start/attach (then delegates): a refusal must leave it at zero."""

    def __init__(self, inner: LocalBackend) -> None:
        self.inner = inner
        self.started: list[ExecRequest] = []

    async def start(self, request: ExecRequest) -> ProcessHandle:
        self.started.append(request)
        return await self.inner.start(request)

    async def attach(self, request: ExecRequest) -> ProcessHandle:
        self.started.append(request)
        return await self.inner.attach(request)


@asynccontextmanager
async def exec_service(
    tmp_path: Path, ssl_context: ssl.SSLContext | None = None, **config: Any
) -> AsyncIterator[tuple[int, SpyBackend]]:
    """``serve_remote`` on 127.0.0.1:0 (token auth, commands run in ``tmp_path``);
    yields (port, spy backend)."""
    config.setdefault("token", TOKEN)
    async with LocalBackend(cwd=str(tmp_path), attach_commands={"main": ["cat"]}) as local:
        spy = SpyBackend(local)
        server_config = RemoteServerConfig(
            backend=spy, api=KubeApi({"demo": ["main"]}), **config
        )
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(serve_remote, server_config, 0, ssl_context=ssl_context)
            )
            yield bound_port(listeners), spy
            nursery.cancel_scope.cancel()


def upgrade_head(
    target: str,
    *,
    authorization: Sequence[bytes] = (b"Bearer " + TOKEN.encode(),),
    kind: str = "spdy",
    host: bytes | None = b"127.0.0.1",
    extra: Sequence[bytes] = (),
) -> bytes:
    """An upgrade request for ``target`` as raw bytes (any header bytes allowed);
    ``extra`` header lines go in as given, ``host=None`` sends no Host."""
    lines = [f"{'GET' if kind == 'websocket' else 'POST'} {target} HTTP/1.1".encode()]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += extra
    lines.append(b"Connection: Upgrade")
    if kind == "websocket":
        lines += [
            b"Upgrade: websocket",
            b"Sec-WebSocket-Version: 13",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            b"Sec-WebSocket-Protocol: v5.channel.k8s.io",
        ]
    else:
        protocol = b"portforward.k8s.io" if "portforward" in target else b"v4.channel.k8s.io"
        lines += [b"Upgrade: SPDY/3.1", b"X-Stream-Protocol-Version: " + protocol]
    lines += [b"Authorization: " + value for value in authorization]
    lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def exchange(port: int, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` to 127.0.0.1:port; return the response's status and body.

    A 101 returns at once with an empty body (the test then fails on the status)."""
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                assert chunk, f"connection closed without a response: {data!r}"
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if status != 101:
                while len(body) < length:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    body += chunk
    return status, body


def plain_endpoint(port: int, transport: str) -> RemoteEndpoint:
    return RemoteEndpoint(
        f"http://127.0.0.1:{port}", token=TOKEN, transport=transport  # type: ignore[arg-type]
    )


def exec_query(*command: str, **flags: str) -> str:
    pairs = [("command", word) for word in command] + list(flags.items())
    return EXEC + "?" + urlencode(pairs, quote_via=quote)


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts from a throw-away CA (certificate for 127.0.0.1)."""
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.ECDSA).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@asynccontextmanager
async def cli_service(
    tmp_path: Path, **config_options: Any
) -> AsyncIterator[tuple[int, SpyBackend]]:
    """What `muxstream serve` runs (raw sessions, /muxstream, exec; its accept loop
    and limits) on 127.0.0.1:0 with a token, in-process; yields (port, spy backend)."""
    config_options.setdefault("token", TOKEN)
    async with LocalBackend(cwd=str(tmp_path)) as local:
        spy = SpyBackend(local)
        config = RemoteServerConfig(backend=spy, **config_options)
        server = _serve.Server(config.token, RemoteServer(config, spy), None, close_timeout=5)
        async with trio.open_nursery() as nursery:
            address = Address("127.0.0.1", 0)
            listeners = await nursery.start(
                _serve.listen, server.handle_tcp, address, config.limits, nursery
            )
            yield bound_port(listeners), spy
            nursery.cancel_scope.cancel()
