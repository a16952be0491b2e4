"""Sessions over every transport: TLS, HTTP/1.1 Upgrade and WebSocket (plain and TLS).

Each link is built the way deployments build it: a real loopback TCP
connection, the HTTP handshake through ``handle_http_connection`` on the server
and ``open_*`` on the client, then a session over the resulting streams.
"""

from __future__ import annotations

import hashlib
import os
import ssl

import pytest
import trio
import trio.testing

import muxstream
from muxstream import CLIENT, SERVER, Stream
from muxstream.testing import open_session_pair
from muxstream.transport import (
    HTTPRequest,
    handle_http_connection,
    open_tls_stream,
    open_upgraded_stream,
    open_websocket_stream,
    wrap_tls_server,
)

KINDS = ["tls", "upgrade", "upgrade-tls", "websocket", "websocket-tls"]
Link = tuple[trio.abc.Stream, trio.abc.Stream]


async def open_link(
    nursery: trio.Nursery,
    kind: str,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> Link:
    """A connected (client, server) pair of transports of *kind*; lives in *nursery*."""
    tls = kind == "tls" or kind.endswith("-tls")
    handed_send, handed_receive = trio.open_memory_channel[trio.abc.Stream](1)

    async def app(request: HTTPRequest) -> None:
        stream: trio.abc.Stream
        if kind.startswith("websocket"):
            stream = await request.accept_websocket(request.negotiate_subprotocol(["mux"]))
        else:
            stream = await request.accept_upgrade(request.negotiate_protocol(["mux/1"]))
        await handed_send.send(stream)
        await trio.sleep_forever()  # the session owns the stream from here on

    async def handler(tcp: trio.SocketStream) -> None:
        transport: trio.abc.Stream = tcp
        if tls:
            transport = await wrap_tls_server(tcp, server_context)
        if kind == "tls":
            await handed_send.send(transport)
            await trio.sleep_forever()
        await handle_http_connection(transport, app)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, handler, listeners)
    context = client_context if tls else None
    client: trio.abc.Stream
    if kind == "tls":
        client = await open_tls_stream(
            "127.0.0.1", port, client_context, server_hostname="localhost"
        )
    elif kind.startswith("websocket"):
        client = await open_websocket_stream(
            "127.0.0.1",
            port,
            "/",
            subprotocols=["mux"],
            ssl_context=context,
            server_hostname="localhost",
        )
    else:
        client, response = await open_upgraded_stream(
            "127.0.0.1",
            port,
            "/",
            protocols=["mux/1"],
            ssl_context=context,
            server_hostname="localhost",
        )
        assert response.protocol == "mux/1"
    return client, await handed_receive.receive()


@pytest.fixture(params=KINDS)
def make_link(
    request: pytest.FixtureRequest,
    nursery: trio.Nursery,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
):  # type: ignore[no-untyped-def]
    async def make() -> Link:
        return await open_link(nursery, request.param, server_ssl_context, client_ssl_context)

    return make


async def test_session_echoes_several_streams(make_link) -> None:  # type: ignore[no-untyped-def]
    blobs = [os.urandom(n) for n in (0, 1, 1000, 300_000, 2_000_000)]
    with trio.fail_after(60):
        async with open_session_pair(await make_link()) as (client, server):

            async def echo_all() -> None:
                async with trio.open_nursery() as nursery:
                    for _ in blobs:
                        stream = await server.accept()
                        nursery.start_soon(echo, stream)

            async def echo(stream: Stream) -> None:
                async with stream:
                    while chunk := await stream.receive_some():
                        await stream.send_all(chunk)
                    await stream.send_eof()

            async def roundtrip(blob: bytes) -> None:
                stream = await client.open_stream({"streamtype": "echo"})
                async with stream, trio.open_nursery() as nursery:

                    async def send() -> None:
                        await stream.send_all(blob)
                        await stream.send_eof()

                    nursery.start_soon(send)
                    got = bytearray()
                    while chunk := await stream.receive_some():
                        got += chunk
                assert got == blob

            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo_all)
                for blob in blobs:
                    nursery.start_soon(roundtrip, blob)
            assert await client.ping() >= 0


# Over TLS the session cannot half-close (trio.SSLStream has no send_eof): once
# everything is written, the closing session's writer keeps answering PINGs while
# its reader drains, so the consumer's pings keep working until the close.
@pytest.mark.parametrize("make_link", KINDS, indirect=True)
async def test_session_close_right_after_bulk_send_loses_nothing(make_link) -> None:  # type: ignore[no-untyped-def]
    # The producer leaves the session block as soon as its last send_all returns;
    # the consumer reads slowly and pings as it goes. Every byte must arrive.
    payload = os.urandom(256 * 1024)
    count = 32  # 8 MiB
    client_transport, server_transport = await make_link()
    result: dict[str, object] = {}

    async def consumer() -> None:
        digest = hashlib.sha256()
        async with muxstream.open_session(
            server_transport, role=SERVER, keepalive_interval=None, close_timeout=20
        ) as session:
            stream = await session.accept()
            reads = 0
            while chunk := await stream.receive_some(16384):
                digest.update(chunk)
                reads += 1
                if reads % 16 == 0:
                    try:
                        await session.ping(timeout=10)
                    except trio.BrokenResourceError as exc:
                        # The producer is closing: it answers no more pings.
                        gone = (muxstream.SessionClosed, muxstream.SessionGoneAway)
                        assert isinstance(exc.__cause__, gone), exc.__cause__
        result["digest"] = digest.hexdigest()

    async def producer() -> None:
        async with muxstream.open_session(
            client_transport, role=CLIENT, keepalive_interval=None, close_timeout=20
        ) as session:
            stream = await session.open_stream({"streamtype": "data"})
            for _ in range(count):
                await stream.send_all(payload)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            nursery.start_soon(producer)
    assert result["digest"] == hashlib.sha256(payload * count).hexdigest()


async def _stream_pair(
    nursery: trio.Nursery, link: Link, **options: object
) -> tuple[Stream, Stream]:
    async def run(task_status: trio.TaskStatus[tuple[Stream, Stream]]) -> None:
        async with open_session_pair(link, keepalive_interval=None, **options) as (client, server):
            accepted: list[Stream] = []

            async def accept() -> None:
                accepted.append(await server.accept())

            async with trio.open_nursery() as inner:
                inner.start_soon(accept)
                opened = await client.open_stream({"purpose": "check"})
            task_status.started((opened, accepted[0]))
            await trio.sleep_forever()

    pair: tuple[Stream, Stream] = await nursery.start(run)
    return pair


async def test_session_stream_passes_trio_half_closeable_checks(make_link) -> None:  # type: ignore[no-untyped-def]
    window = 4096
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:

            async def maker() -> tuple[Stream, Stream]:
                return await _stream_pair(nursery, await make_link())

            async def clogged_maker() -> tuple[Stream, Stream]:
                a, b = await _stream_pair(
                    nursery, await make_link(), initial_window=window, session_window=1 << 20
                )
                await a.send_all(b"x" * window)  # both windows full: the next send blocks
                await b.send_all(b"x" * window)
                return a, b

            await trio.testing.check_half_closeable_stream(maker, clogged_maker)
            nursery.cancel_scope.cancel()


async def test_garbage_after_101_reaches_the_session_and_fails_typed() -> None:
    from muxstream.protocol import RemoteProtocolError
    from muxstream.transport import wrap_upgrade_client

    client_side, server_side = trio.testing.memory_stream_pair()

    async def server() -> None:
        await server_side.receive_some()
        await server_side.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
            b"\x80\x07\x00\x01\x00\x00\x00\x04junk"  # a control frame of SPDY version 7
        )

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            stream, _ = await wrap_upgrade_client(client_side, "/", host="x")
        with pytest.raises(BaseException) as info:  # the session's nursery may group it
            async with muxstream.open_session(stream, role=CLIENT) as session:
                await session.ping()
    error = info.value
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, trio.BrokenResourceError)
    assert isinstance(error.__cause__, RemoteProtocolError)


@pytest.mark.parametrize("make_link", KINDS, indirect=True)
async def test_two_sessions_close_promptly_even_without_half_close(make_link) -> None:  # type: ignore[no-untyped-def]
    # Over TLS neither end can send EOF before closing; the close must still end
    # once GOAWAY went both ways, not after close_timeout.
    client_transport, server_transport = await make_link()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            ready = trio.Event()

            async def server() -> None:
                async with muxstream.open_session(
                    server_transport, role=SERVER, keepalive_interval=None, close_timeout=60
                ) as session:
                    stream = await session.accept()
                    assert await stream.receive_all() == b"bye"
                    await stream.send_eof()
                    ready.set()

            nursery.start_soon(server)
            start = trio.current_time()
            async with muxstream.open_session(
                client_transport, role=CLIENT, keepalive_interval=None, close_timeout=60
            ) as session:
                stream = await session.open_stream()
                await stream.send_all(b"bye")
                await stream.send_eof()
                assert await stream.receive_all() == b""
                await ready.wait()
        assert trio.current_time() - start < 15
