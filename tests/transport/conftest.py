"""Fixtures for the transport tests: TLS contexts from a CA made at test time."""

from __future__ import annotations

import ssl

import pytest
import trustme


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


# -- one HTTP server serving every transport, as the tests use it --------------

import dataclasses  # noqa: E402

import trio  # noqa: E402

from muxstream.transport import HTTPRequest, serve_http  # noqa: E402

K8S_VERSIONS = ["v4.channel.k8s.io", "v3.channel.k8s.io"]
WS_SUBPROTOCOLS = ["v5.channel.k8s.io", "SPDY/3.1+portforward.k8s.io"]


async def echo(stream: trio.abc.Stream) -> None:
    """Send back everything received; at EOF half-close (if possible) and close."""
    async with stream:
        while chunk := await stream.receive_some():
            await stream.send_all(chunk)
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()


async def demo_app(request: HTTPRequest) -> None:
    """Routes by path, like a small API server (see docs/transports.md)."""
    if request.path == "/upgrade":
        if not request.is_upgrade:
            await request.respond(400, body="upgrade required")
            return
        version = request.negotiate_protocol(K8S_VERSIONS)
        if version is None and request.protocol_versions:
            # What Kubernetes answers when versions do not match.
            await request.respond(
                403,
                [("x-accepted-stream-protocol-versions", v) for v in K8S_VERSIONS],
                "unable to upgrade: unable to negotiate protocol",
            )
            return
        await echo(await request.accept_upgrade(version))
    elif request.path == "/ws":
        if not request.is_websocket:
            await request.respond(400, body="websocket required")
            return
        subprotocol = request.negotiate_subprotocol(WS_SUBPROTOCOLS)
        await echo(await request.accept_websocket(subprotocol))
    elif request.path == "/version":
        await request.respond_json({"major": "1", "minor": "32"})
    elif request.path == "/post" and request.method == "POST":
        await request.respond_json({"length": len(request.body), "query": request.query_params})
    elif request.path == "/boom":
        raise RuntimeError("application bug (expected by the test)")
    elif request.path == "/silent":
        return
    else:
        await request.respond(404, body="not found")


@dataclasses.dataclass
class Server:
    port: int
    ssl_context: ssl.SSLContext | None  # for clients; None for plain TCP
    host: str = "127.0.0.1"


async def start_server(
    nursery: trio.Nursery, server_context: ssl.SSLContext | None = None, app=demo_app, **options
) -> int:
    listeners = await nursery.start(
        lambda task_status: serve_http(
            app, 0, ssl_context=server_context, task_status=task_status, **options
        )
    )
    return int(listeners[0].socket.getsockname()[1])


@pytest.fixture(params=["tcp", "tls"])
async def server(
    request: pytest.FixtureRequest,
    nursery: trio.Nursery,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> Server:
    """The demo app served over plain TCP and over TLS."""
    if request.param == "tls":
        return Server(await start_server(nursery, server_ssl_context), client_ssl_context)
    return Server(await start_server(nursery), None)


@pytest.fixture
async def tcp_server(nursery: trio.Nursery) -> Server:
    """The demo app over plain TCP only."""
    return Server(await start_server(nursery), None)


@pytest.fixture
def serve(nursery: trio.Nursery):  # type: ignore[no-untyped-def]
    """``await serve(app, **serve_http_options) -> port`` for tests with their own app."""

    async def _serve(app=demo_app, server_context: ssl.SSLContext | None = None, **options) -> int:  # type: ignore[no-untyped-def]
        return await start_server(nursery, server_context, app, **options)

    return _serve
