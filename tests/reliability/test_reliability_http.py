"""The HTTP edge under attack: slowloris handshakes and oversized WebSocket messages.

Both go through muxstream.transport's server (``handle_http_connection``, the
function ``serve_http`` runs per connection) over memory streams, with the
autojump clock standing in for the minutes a real slowloris takes.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request

from muxstream.transport import HTTPRequest, WebSocketProtocolError, handle_http_connection

from ._helpers import env_int, traced_peak

MiB = 1 << 20
SLOW_CLIENTS = env_int("MUXSTREAM_SLOWLORIS_CLIENTS", 200)


async def _never_called(request: HTTPRequest) -> None:
    raise AssertionError("a request that never completed reached the application")


async def test_slowloris_clients_are_cut_off_at_the_handshake_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each client trickles a valid request head one byte per second, forever.
    The deadline covers the whole head, so every connection gets 408 and is
    closed ``handshake_timeout`` after it opened, however steady the trickle."""
    timeout = 10.0
    head = b"GET /api/v1/namespaces/default/pods/x/exec HTTP/1.1\r\nHost: h\r\n" + (
        b"X-Pad: " + b"a" * 200 + b"\r\n") * 100
    answers: list[bytes] = []
    closed_at: list[float] = []

    async def slow_client(stream: trio.abc.Stream) -> None:
        start = trio.current_time()
        got = b""

        async def trickle() -> None:
            try:
                for i in range(len(head)):
                    await stream.send_all(head[i : i + 1])
                    await trio.sleep(1)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            try:
                while data := await stream.receive_some():
                    got += data
            except trio.BrokenResourceError:
                pass
            nursery.cancel_scope.cancel()
        answers.append(got)
        closed_at.append(trio.current_time() - start)

    with traced_peak() as mem:
        async with trio.open_nursery() as nursery:
            for _ in range(SLOW_CLIENTS):
                client, server = trio.testing.memory_stream_pair()
                nursery.start_soon(lambda s=server: handle_http_connection(
                    s, _never_called, handshake_timeout=timeout))
                nursery.start_soon(slow_client, client)
    assert len(answers) == SLOW_CLIENTS
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[0][:100]
    assert max(closed_at) <= timeout + 6  # + the lingering close's own bound
    assert mem.retained < 2 * MiB, mem.retained


async def test_oversized_websocket_message_is_refused_with_1009_in_bounded_memory() -> None:
    """A client streams one 64 MiB message in 64 KiB fragments to a server whose
    limit is 1 MiB: the server closes with 1009 once the limit is passed, and
    never holds more than about the limit."""
    limit = 1 * MiB
    outcome: list[BaseException] = []

    async def app(request: HTTPRequest) -> None:
        ws = await request.accept_websocket(max_message_size=limit)
        try:
            while await ws.receive_some():
                pass
        except trio.BrokenResourceError as exc:
            outcome.append(exc)

    client_stream, server_stream = trio.testing.memory_stream_pair()
    ws = WSConnection(ConnectionType.CLIENT)
    close_codes: list[int] = []
    with traced_peak() as mem, trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle_http_connection, server_stream, app)
            await client_stream.send_all(ws.send(Request(host="h", target="/ws")))
            while True:
                ws.receive_data(await client_stream.receive_some())
                if any(isinstance(e, AcceptConnection) for e in ws.events()):
                    break
            fragment = bytes(64 * 1024)

            async def read_close() -> None:
                while data := await client_stream.receive_some():
                    ws.receive_data(data)
                    for event in ws.events():
                        if isinstance(event, CloseConnection):
                            close_codes.append(event.code)
                            return

            nursery.start_soon(read_close)
            try:
                for i in range(1024):
                    await client_stream.send_all(
                        ws.send(BytesMessage(fragment, message_finished=i == 1023)))
                    if close_codes:
                        break
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
    assert close_codes == [1009]
    assert len(outcome) == 1
    assert isinstance(outcome[0].__cause__, WebSocketProtocolError)
    assert outcome[0].__cause__.code == 1009
    assert mem.peak < 8 * limit, mem.peak


@pytest.mark.parametrize("size", [64 * 1024])
async def test_oversized_request_head_is_refused_431(size: int) -> None:
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: handle_http_connection(server, _never_called))
        await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"b" * size + b"\r\n\r\n")
        got = b""
        with trio.fail_after(30):
            try:
                while data := await client.receive_some():
                    got += data
            except trio.BrokenResourceError:
                pass
    assert got.startswith(b"HTTP/1.1 431 ")
