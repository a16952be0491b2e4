"""HTTP/1.1 Upgrade (h11), both sides, over loopback TCP and TLS."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from muxstream.transport import (
    HandshakeError,
    HandshakeNoAnswer,
    HandshakeTimeout,
    HTTPRequest,
    UpgradeRefused,
    handle_http_connection,
    open_upgraded_stream,
    wrap_upgrade_client,
)

K8S_OFFER = ["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io"]


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    out = bytearray()
    while chunk := await stream.receive_some():
        out += chunk
    return bytes(out)


async def raw_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes, return everything the server sends until it closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        return await read_to_eof(stream)


async def raw_server(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> int:
    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    return int(listeners[0].socket.getsockname()[1])


async def test_upgrade_echo_with_protocol_negotiation(server) -> None:  # type: ignore[no-untyped-def]
    payload = os.urandom(1024 * 1024)
    with trio.fail_after(30):
        stream, response = await open_upgraded_stream(
            server.host,
            server.port,
            "/upgrade",
            method="POST",
            protocols=K8S_OFFER,
            headers={"authorization": "Bearer t0ken"},
            ssl_context=server.ssl_context,
            server_hostname="localhost",
        )
        assert response.status == 101
        assert response.protocol == "v4.channel.k8s.io"  # the client's first supported choice
        assert response.headers.get("upgrade") == "SPDY/3.1"
        async with stream:
            received = bytearray()

            async def send() -> None:
                await stream.send_all(payload)
                if isinstance(stream, trio.abc.HalfCloseableStream):
                    await stream.send_eof()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                while len(received) < len(payload):
                    received += await stream.receive_some()
        assert received == payload


async def test_upgraded_tcp_stream_is_half_closeable(tcp_server) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        stream, _ = await open_upgraded_stream(tcp_server.host, tcp_server.port, "/upgrade")
        async with stream:
            assert isinstance(stream, trio.abc.HalfCloseableStream)
            await stream.send_all(b"ping")
            await stream.send_eof()
            assert await read_to_eof(stream) == b"ping"


async def test_bytes_right_after_101_reach_the_client() -> None:
    client_side, server_side = trio.testing.memory_stream_pair()

    async def server() -> None:
        await server_side.receive_some()  # the request
        await server_side.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n\x80\x03\x00\x01first frame"
        )
        await server_side.send_all(b"; second read")
        await server_side.send_eof()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            stream, response = await wrap_upgrade_client(
                client_side, "/x", host="example", protocols=K8S_OFFER
            )
        assert response.protocol == "v4.channel.k8s.io"
        assert await read_to_eof(stream) == b"\x80\x03\x00\x01first frame; second read"


async def test_bytes_right_behind_the_request_reach_the_application() -> None:
    client_side, server_side = trio.testing.memory_stream_pair()
    seen: list[bytes] = []

    async def app(request: HTTPRequest) -> None:
        stream = await request.accept_upgrade()
        seen.append(await read_to_eof(stream))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle_http_connection, server_side, app)
            await client_side.send_all(
                b"POST /exec HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                b"Content-Length: 0\r\n\r\n\x80\x03\x00\x01early frame bytes"
            )
            await client_side.send_eof()
            head = await client_side.receive_some()
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert seen == [b"\x80\x03\x00\x01early frame bytes"]


async def test_unsupported_versions_are_refused_with_status_and_body(server) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(10), pytest.raises(UpgradeRefused) as info:
        await open_upgraded_stream(
            server.host,
            server.port,
            "/upgrade",
            protocols=["v99.example"],
            ssl_context=server.ssl_context,
            server_hostname="localhost",
        )
    refused = info.value
    assert refused.status == 403
    assert b"unable to negotiate protocol" in refused.body
    assert refused.headers.get_all("x-accepted-stream-protocol-versions") == [
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
    ]


async def test_upgrade_request_without_connection_header_is_refused(tcp_server) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(10):
        response = await raw_exchange(
            tcp_server.port,
            b"GET /upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: SPDY/3.1\r\nConnection: close\r\n\r\n",
        )
    assert response.startswith(b"HTTP/1.1 400 ")
    assert response.endswith(b"upgrade required")


async def test_plain_request_to_upgrade_url_gets_real_refusal(tcp_server) -> None:  # type: ignore[no-untyped-def]
    # The client did ask for an upgrade, but the app refuses: a typed error.
    with trio.fail_after(10), pytest.raises(UpgradeRefused) as info:
        await open_upgraded_stream(tcp_server.host, tcp_server.port, "/nowhere")
    assert info.value.status == 404
    assert info.value.body == b"not found"


async def test_slow_request_gets_408_and_close(
    serve,
    autojump_clock: trio.testing.MockClock,  # type: ignore[no-untyped-def]
) -> None:
    port = await serve(handshake_timeout=5.0)
    with trio.fail_after(60):
        response = await raw_exchange(port, b"GET /upgrade HTTP/1.1\r\nHost: x\r\nUpgr")
    assert response.startswith(b"HTTP/1.1 408 ")


async def test_idle_keepalive_connection_is_closed_silently(
    serve,
    autojump_clock: trio.testing.MockClock,  # type: ignore[no-untyped-def]
) -> None:
    port = await serve(handshake_timeout=5.0)
    with trio.fail_after(60):
        assert await raw_exchange(port, b"") == b""


async def test_silent_server_gives_handshake_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    port = await raw_server(nursery, silent)
    with trio.fail_after(60), pytest.raises(HandshakeTimeout):
        await open_upgraded_stream("127.0.0.1", port, "/", handshake_timeout=5.0)


async def test_oversized_request_head_gets_431(tcp_server) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(10), pytest.raises(UpgradeRefused) as info:
        await open_upgraded_stream(
            tcp_server.host, tcp_server.port, "/upgrade", headers={"x-big": "a" * 100_000}
        )
    assert info.value.status == 431


async def test_oversized_request_body_gets_413(serve) -> None:  # type: ignore[no-untyped-def]
    port = await serve(max_body_size=1000)
    with trio.fail_after(10):
        response = await raw_exchange(
            port, b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"b" * 5000
        )
    assert response.startswith(b"HTTP/1.1 413 ")


async def test_malformed_request_gets_400(tcp_server) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(10):
        response = await raw_exchange(tcp_server.port, b"THIS IS NOT HTTP\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "malformed HTTP response"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\n", "Connection"),
        (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", "h2c"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            b"X-Stream-Protocol-Version: v1.evil\r\n\r\n",
            "did not offer",
        ),
        (b"HTTP/1.1 101 Switching", "closed"),
    ],
)
async def test_bad_upgrade_answers_raise_handshake_error(
    nursery: trio.Nursery, answer: bytes, message: str
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.send_all(answer)
        await stream.aclose()

    port = await raw_server(nursery, handler)
    with trio.fail_after(10), pytest.raises(HandshakeError, match=message) as info:
        await open_upgraded_stream("127.0.0.1", port, "/", protocols=K8S_OFFER)
    assert not isinstance(info.value, UpgradeRefused)


@pytest.mark.parametrize(
    ("answer", "tls"),
    [(b"", False), (b"\x15\x03\x01\x00\x02\x02\x46", True), (b"\x16\x03\x03\x00\x10", True)],
)
async def test_no_http_answer_is_told_apart(
    nursery: trio.Nursery, answer: bytes, tls: bool
) -> None:
    # A TLS server read in plain text closes, or sends a TLS record (an alert): the
    # client says so instead of passing on h11's "can't handle event type ...".
    async def not_http(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        if answer:
            await stream.send_all(answer)
        await stream.aclose()

    port = await raw_server(nursery, not_http)
    with trio.fail_after(20), pytest.raises(HandshakeNoAnswer) as info:
        await open_upgraded_stream("127.0.0.1", port, "/")
    assert info.value.tls is tls
    assert "h11" not in str(info.value) and "ConnectionClosed" not in str(info.value)
