"""WebSocket over loopback TCP and TLS: handshake, subprotocols, errors, close."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import struct

import pytest
import trio
import trio.testing

from muxstream.transport import (
    HandshakeError,
    HTTPRequest,
    UpgradeRefused,
    WebSocketProtocolError,
    WebSocketStream,
    handle_http_connection,
    open_websocket_stream,
    wrap_tls_server,
    wrap_websocket_client,
)


async def test_websocket_echo_with_subprotocol(server) -> None:  # type: ignore[no-untyped-def]
    payload = os.urandom(2 * 1024 * 1024 + 17)
    with trio.fail_after(30):
        ws = await open_websocket_stream(
            server.host,
            server.port,
            "/ws",
            subprotocols=["v5.channel.k8s.io", "v4.channel.k8s.io"],
            headers={"authorization": "Bearer t0ken"},
            ssl_context=server.ssl_context,
            server_hostname="localhost",
        )
        assert ws.subprotocol == "v5.channel.k8s.io"
        received = bytearray()
        async with ws, trio.open_nursery() as nursery:
            nursery.start_soon(ws.send_all, payload)
            while len(received) < len(payload):
                received += await ws.receive_some()
    assert received == payload


async def test_websocket_message_api_over_tcp(tcp_server) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        ws = await open_websocket_stream(
            tcp_server.host, tcp_server.port, "/ws", subprotocols=["v5.channel.k8s.io"]
        )
        async with ws:
            # The echo server is a byte stream, so it may regroup bytes into
            # different messages: only the concatenation is guaranteed.
            for message in [b"\x00stdin", b"", b"\x04" + b'{"Width":80,"Height":24}']:
                await ws.send_message(message)
            got = bytearray()
            while len(got) < 6 + 25:
                got += await ws.receive_message()
    assert got == b"\x00stdin\x04" + b'{"Width":80,"Height":24}'


async def test_wrong_subprotocol_is_a_handshake_error(serve) -> None:  # type: ignore[no-untyped-def]
    async def app(request: HTTPRequest) -> None:
        ws = await request.accept_websocket()  # accepts, but picks no subprotocol
        await ws.aclose()

    port = await serve(app)
    with trio.fail_after(10), pytest.raises(HandshakeError, match="none of the offered"):
        await open_websocket_stream("127.0.0.1", port, "/", subprotocols=["v5.channel.k8s.io"])


async def test_subprotocol_not_offered_is_a_handshake_error(
    nursery: trio.Nursery,
) -> None:
    import h11

    from muxstream.transport._websocket_handshake import accept_token

    async def handler(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(await stream.receive_some())
        request = conn.next_event()
        assert isinstance(request, h11.Request)
        key = dict(request.headers)[b"sec-websocket-key"].decode()
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Accept: " + accept_token(key).encode() + b"\r\n"
            b"Sec-WebSocket-Protocol: evil.example\r\n\r\n"
        )
        await stream.aclose()

    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(10), pytest.raises(HandshakeError, match="did not offer"):
        await open_websocket_stream("127.0.0.1", port, "/", subprotocols=["v5.channel.k8s.io"])


async def test_websocket_refused_when_server_wants_upgrade_only(tcp_server) -> None:  # type: ignore[no-untyped-def]
    # kubectl tries WebSocket first and falls back to SPDY when refused.
    with trio.fail_after(10), pytest.raises(UpgradeRefused) as info:
        await open_websocket_stream(tcp_server.host, tcp_server.port, "/upgrade-only-nothing")
    assert info.value.status == 404


async def test_websocket_handshake_missing_key_is_refused(serve) -> None:  # type: ignore[no-untyped-def]
    errors: list[Exception] = []

    async def app(request: HTTPRequest) -> None:
        try:
            await request.accept_websocket()
        except HandshakeError as exc:
            errors.append(exc)

    port = await serve(app)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    with trio.fail_after(10):
        async with stream:
            await stream.send_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            response = await stream.receive_some()
    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"Sec-WebSocket-Key" in response
    assert [str(e) for e in errors] == ["missing Sec-WebSocket-Key"]


async def test_garbage_after_101_is_a_websocket_protocol_error(serve) -> None:  # type: ignore[no-untyped-def]
    async def app(request: HTTPRequest) -> None:
        ws = await request.accept_websocket()
        await ws.transport_stream.send_all(b"\xff\xfe not a websocket frame")
        await trio.sleep_forever()

    port = await serve(app)
    with trio.fail_after(10):
        ws = await open_websocket_stream("127.0.0.1", port, "/")
        with pytest.raises(trio.BrokenResourceError) as info:
            await ws.receive_some()
        await ws.aclose()
    assert isinstance(info.value.__cause__, WebSocketProtocolError)
    assert info.value.__cause__.code == 1002


SMALL_RCVBUF = 32 * 1024  # set before the handshake: no window autotuning
LARGE_SNDBUF = 4 * 1024 * 1024  # megabytes still queued when the sender closes


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("direction", ["server_sends", "client_sends"])
async def test_close_with_data_in_flight_loses_nothing(
    nursery: trio.Nursery,
    direction: str,
    tls: bool,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    # The sender closes as soon as its last send_all returns, while megabytes
    # still sit in its send buffer and the slow receiver keeps pinging it. A
    # close that does not wait for the peer's close frame (and EOF) gets a RST
    # from the receiver's pings and the kernel drops the queued megabytes.
    payload = os.urandom(16 * 1024 * 1024)
    digest = hashlib.sha256(payload).hexdigest()
    results: list[str] = []

    async def slow_receive(ws: WebSocketStream) -> str:
        h = hashlib.sha256()
        n = 0
        async with trio.open_nursery() as pinger:
            pinger.start_soon(ws.run_keepalive, 0.002)
            while chunk := await ws.receive_some(4096):
                h.update(chunk)
                n += 1
                if n % 16 == 0:
                    await trio.sleep(0.001)  # a slow consumer
            pinger.cancel_scope.cancel()
        await ws.aclose()
        return h.hexdigest()

    async def app(request: HTTPRequest) -> None:
        ws = await request.accept_websocket()
        if direction == "server_sends":
            await ws.send_all(payload)
            await ws.aclose()
        else:
            results.append(await slow_receive(ws))

    async def handler(stream: trio.SocketStream) -> None:
        if direction == "server_sends":
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LARGE_SNDBUF)
        transport: trio.abc.Stream = stream
        if tls:
            transport = await wrap_tls_server(stream, server_ssl_context)
        await handle_http_connection(transport, app)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    if direction == "client_sends":
        listeners[0].socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, handler, listeners)

    with trio.fail_after(60):
        sock = trio.socket.socket()
        if direction == "server_sends":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LARGE_SNDBUF)
        await sock.connect(("127.0.0.1", port))
        client: trio.abc.Stream = trio.SocketStream(sock)
        if tls:
            client = trio.SSLStream(client, client_ssl_context, server_hostname="localhost")
        ws = await wrap_websocket_client(client, "/", host="localhost")
        if direction == "server_sends":
            results.append(await slow_receive(ws))
        else:
            await ws.send_all(payload)
            await ws.aclose()
            while not results:
                await trio.sleep(0.01)
    assert results == [digest]


async def test_frames_right_behind_the_handshake_are_kept_both_ways() -> None:
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage

    from muxstream.transport._websocket_handshake import accept_token

    # Server side: a client frame arrives in the same chunk as the request.
    client_side, server_side = trio.testing.memory_stream_pair()
    seen: list[bytes] = []

    async def app(request: HTTPRequest) -> None:
        ws = await request.accept_websocket()
        seen.append(await ws.receive_some())
        await trio.aclose_forcefully(ws)

    key = "dGhlIHNhbXBsZSBub25jZQ=="
    frame = Connection(ConnectionType.CLIENT).send(BytesMessage(b"early client bytes"))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle_http_connection, server_side, app)
            await client_side.send_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
                + key.encode()
                + b"\r\n\r\n"
                + frame
            )
    assert seen == [b"early client bytes"]

    # Client side: a server frame arrives in the same chunk as the 101.
    client_side, server_side = trio.testing.memory_stream_pair()

    async def server() -> None:
        import h11

        conn = h11.Connection(h11.SERVER)
        conn.receive_data(bytes(await server_side.receive_some()))
        request = conn.next_event()
        assert isinstance(request, h11.Request)
        their_key = dict(request.headers)[b"sec-websocket-key"].decode()
        await server_side.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Accept: "
            + accept_token(their_key).encode()
            + b"\r\n\r\n"
            + Connection(ConnectionType.SERVER).send(BytesMessage(b"early server bytes"))
        )

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            ws = await wrap_websocket_client(client_side, "/", host="x")
        assert await ws.receive_some() == b"early server bytes"
        await trio.aclose_forcefully(ws)


@pytest.mark.parametrize("api", ["receive_some", "receive_message", "send_all"])
async def test_connection_reset_wakes_every_call_with_broken_resource(
    serve,  # type: ignore[no-untyped-def]
    api: str,
) -> None:
    # The server vanishes abruptly (RST, as a cutting proxy or a killed peer
    # does) while the client is blocked: the call must fail, not hang.
    async def app(request: HTTPRequest) -> None:
        ws = await request.accept_websocket()
        await ws.send_message(b"one message, then gone")
        await trio.sleep(0.05)
        raw = ws.transport_stream
        assert isinstance(raw, trio.SocketStream)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await trio.aclose_forcefully(raw)

    port = await serve(app)
    with trio.fail_after(20):
        ws = await open_websocket_stream("127.0.0.1", port, "/")
        assert await ws.receive_message() == b"one message, then gone"
        with pytest.raises(trio.BrokenResourceError):
            if api == "receive_some":
                await ws.receive_some()
            elif api == "receive_message":
                await ws.receive_message()
            else:
                while True:
                    await ws.send_all(b"x" * 65536)
        await ws.aclose()
