"""WebSocketStream over in-memory transports: stream contract, framing, violations, close."""

from __future__ import annotations

import itertools
import os
import struct

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong

from muxstream import KeepaliveTimeout
from muxstream.transport import (
    WebSocketClosedError,
    WebSocketProtocolError,
    WebSocketStream,
)


def ws_pair(
    transport_pair: tuple[trio.abc.Stream, trio.abc.Stream] | None = None, **options: object
) -> tuple[WebSocketStream, WebSocketStream]:
    a, b = transport_pair or trio.testing.memory_stream_pair()
    return (
        WebSocketStream(a, client=True, **options),  # type: ignore[arg-type]
        WebSocketStream(b, client=False, **options),  # type: ignore[arg-type]
    )


def raw_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """One RFC 6455 frame built by hand (so tests can build illegal ones)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class ScriptedStream(trio.abc.Stream):
    """Receives the given chunks, then EOF; records what is sent."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.sent = bytearray()
        self.closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.closed:
            raise trio.ClosedResourceError
        return self.chunks.pop(0) if self.chunks else b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        if self.closed:
            raise trio.ClosedResourceError
        self.sent += data

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


def close_codes_sent(transport: ScriptedStream) -> list[int]:
    """The close codes a server-side WebSocketStream wrote, parsed as a client would."""
    conn = Connection(ConnectionType.CLIENT)
    conn.receive_data(bytes(transport.sent))
    return [e.code for e in conn.events() if isinstance(e, CloseConnection)]


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    out = bytearray()
    while chunk := await stream.receive_some():
        out += chunk
    return bytes(out)


# -- the trio stream contract ------------------------------------------------


async def test_websocket_stream_passes_check_half_closeable_stream() -> None:
    # close_timeout bounds the check where one side closes while the other
    # keeps sending and never reads (its close frame is never answered).
    async def maker() -> tuple[WebSocketStream, WebSocketStream]:
        return ws_pair(close_timeout=0.5)

    async def clogged_maker() -> tuple[WebSocketStream, WebSocketStream]:
        return ws_pair(trio.testing.lockstep_stream_pair(), close_timeout=0.5)

    with trio.fail_after(60):
        await trio.testing.check_half_closeable_stream(maker, clogged_maker)


# -- messages are a byte stream ------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12),
    empties=st.lists(st.integers(min_value=0, max_value=3000), max_size=4),
    chunking=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=20),
    max_bytes=st.one_of(st.none(), st.integers(min_value=1, max_value=5000)),
)
def test_websocket_bytes_survive_any_message_split_and_chunking(
    data: bytes, cuts: list[int], empties: list[int], chunking: list[int], max_bytes: int | None
) -> None:
    # Split `data` into messages at `cuts` (plus empty messages), encode them as
    # a client would, cut the wire bytes at arbitrary points, and read it back.
    points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    messages = [data[a:b] for a, b in itertools.pairwise(points)]
    for e in empties:
        messages.insert(e % (len(messages) + 1), b"")
    client = Connection(ConnectionType.CLIENT)
    wire = b"".join(client.send(BytesMessage(data=m)) for m in messages)
    wire += client.send(CloseConnection(code=1000))
    chunks, i, k = [], 0, 0
    while i < len(wire):
        n = chunking[k % len(chunking)]
        chunks.append(wire[i : i + n])
        i, k = i + n, k + 1

    async def main() -> None:
        ws = WebSocketStream(ScriptedStream(chunks), client=False)
        received = bytearray()
        with trio.fail_after(10):
            while chunk := await ws.receive_some(max_bytes):
                assert max_bytes is None or len(chunk) <= max_bytes
                received += chunk
        assert received == data
        await ws.aclose()

    trio.run(main)


async def test_websocket_receive_message_keeps_boundaries_and_empty_messages() -> None:
    messages = [b"\x00", b"", b"\x01hello", b"x" * 70000, b""]
    client = Connection(ConnectionType.CLIENT)
    wire = b"".join(client.send(BytesMessage(data=m)) for m in messages)
    # The 70000-byte message split into two frames by hand: a frame spanning reads.
    wire += client.send(BytesMessage(data=b"ab", message_finished=False))
    wire += client.send(BytesMessage(data=b"cd", message_finished=True))
    wire += client.send(CloseConnection(code=1000))
    ws = WebSocketStream(
        ScriptedStream([wire[i : i + 1000] for i in range(0, len(wire), 1000)]), client=False
    )
    got = []
    with trio.fail_after(10):
        while True:
            try:
                got.append(await ws.receive_message())
            except trio.EndOfChannel:
                break
    assert got == [*messages, b"abcd"]


async def test_websocket_send_message_round_trip() -> None:
    c, s = ws_pair()
    async with c, s:
        with trio.fail_after(10):
            await c.send_message(b"\x01stdout")
            await c.send_message(b"")
            assert await s.receive_message() == b"\x01stdout"
            assert await s.receive_message() == b""
            await s.send_message(b"\x03" + b"z" * 100000)
            assert await c.receive_message() == b"\x03" + b"z" * 100000


async def test_websocket_send_all_splits_into_bounded_messages() -> None:
    a, b = trio.testing.memory_stream_pair()
    ws = WebSocketStream(a, client=True, send_message_size=1000)
    await ws.send_all(b"q" * 2500)
    server = Connection(ConnectionType.SERVER)
    server.receive_data(bytes(await b.receive_some()))
    sizes = [len(e.data) for e in server.events() if isinstance(e, BytesMessage)]
    assert sizes == [1000, 1000, 500]


# -- control frames --------------------------------------------------------------


async def test_websocket_answers_ping_while_reading() -> None:
    a, b = trio.testing.memory_stream_pair()
    ws = WebSocketStream(b, client=False)
    client = Connection(ConnectionType.CLIENT)
    await a.send_all(client.send(Ping(payload=b"are you there")) + client.send(BytesMessage(b"x")))
    with trio.fail_after(10):
        assert await ws.receive_some() == b"x"
        client.receive_data(bytes(await a.receive_some()))
    assert list(client.events()) == [Pong(payload=b"are you there")]


async def test_websocket_keepalive_pings_are_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c, s = ws_pair()
    async with trio.open_nursery() as nursery:
        # With a 2 s pong timeout, a single unanswered ping would abort s and
        # make read_all(s) raise.
        nursery.start_soon(s.run_keepalive, 5.0, 2.0)
        nursery.start_soon(read_all, c)  # the client answers pings as it reads
        nursery.start_soon(read_all, s)
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    assert s._ping_count >= 10  # observing the keepalive
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.aclose)
            nursery.start_soon(s.aclose)


async def test_websocket_keepalive_timeout_aborts(autojump_clock: trio.testing.MockClock) -> None:
    a, b = trio.testing.memory_stream_pair()
    ws = WebSocketStream(b, client=False)  # the peer (a) never answers
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.run_keepalive, 5.0, 2.0)
        with trio.fail_after(30):
            with pytest.raises(trio.BrokenResourceError) as info:
                await ws.receive_some()
    assert isinstance(info.value.__cause__, KeepaliveTimeout)
    await ws.aclose()
    await a.aclose()


# -- peer violations: typed errors, the right close code, no hang -----------------


@pytest.mark.parametrize(
    ("bad_frame", "code"),
    [
        (raw_frame(0x1, b"text"), 1003),  # a text message on a binary stream
        (raw_frame(0x2, b"unmasked", mask=False), 1002),  # client frames must be masked
        (raw_frame(0x3, b"?"), 1002),  # reserved opcode
        (raw_frame(0x9, b"p", fin=False), 1002),  # fragmented control frame
        (raw_frame(0x0, b"orphan"), 1002),  # continuation without a message
    ],
)
async def test_websocket_violation_from_client_is_typed_and_answered(
    bad_frame: bytes, code: int
) -> None:
    transport = ScriptedStream([raw_frame(0x2, b"before"), bad_frame])
    ws = WebSocketStream(transport, client=False)
    with trio.fail_after(10):
        assert await ws.receive_some() == b"before"  # earlier data is delivered first
        with pytest.raises(trio.BrokenResourceError) as info:
            await ws.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await ws.send_all(b"more")
        await ws.aclose()
    error = info.value.__cause__
    assert isinstance(error, WebSocketProtocolError)
    assert error.code == code
    assert close_codes_sent(transport) == [code]
    assert transport.closed


async def test_websocket_client_rejects_masked_server_frame() -> None:
    ws = WebSocketStream(ScriptedStream([raw_frame(0x2, b"masked", mask=True)]), client=True)
    with trio.fail_after(10), pytest.raises(trio.BrokenResourceError) as info:
        await ws.receive_some()
    assert isinstance(info.value.__cause__, WebSocketProtocolError)
    assert info.value.__cause__.code == 1002


async def test_websocket_oversized_message_is_refused_with_1009() -> None:
    client = Connection(ConnectionType.CLIENT)
    wire = client.send(BytesMessage(b"12345", message_finished=False))
    wire += client.send(BytesMessage(b"678901", message_finished=True))
    transport = ScriptedStream([wire])
    ws = WebSocketStream(transport, client=False, max_message_size=10)
    with trio.fail_after(10), pytest.raises(trio.BrokenResourceError) as info:
        await ws.receive_message()
    assert isinstance(info.value.__cause__, WebSocketProtocolError)
    assert info.value.__cause__.code == 1009
    await ws.aclose()
    assert close_codes_sent(transport) == [1009]


# -- ends ----------------------------------------------------------------------


async def test_websocket_close_frame_is_eof_and_we_may_still_send() -> None:
    client = Connection(ConnectionType.CLIENT)
    wire = client.send(BytesMessage(b"last words")) + client.send(CloseConnection(code=1001))
    transport = ScriptedStream([wire])
    ws = WebSocketStream(transport, client=False)
    with trio.fail_after(10):
        assert await ws.receive_some() == b"last words"
        assert await ws.receive_some() == b""
        assert await ws.receive_some() == b""
        await ws.send_all(b"the rest of the answer")  # a half-close, like TCP's FIN
        await ws.send_eof()  # answers the close frame with the peer's code
        with pytest.raises(trio.ClosedResourceError):
            await ws.send_all(b"too late")
    client.receive_data(bytes(transport.sent))
    events = list(client.events())
    assert events == [BytesMessage(b"the rest of the answer"), CloseConnection(1001, "")]


async def test_websocket_send_eof_keeps_receiving_until_peer_close() -> None:
    c, s = ws_pair()
    with trio.fail_after(10):
        await c.send_all(b"request")
        await c.send_eof()
        assert await s.receive_some() == b"request"
        assert await s.receive_some() == b""
        await s.send_all(b"response")
        await s.send_eof()
        assert await read_all(c) == b"response"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.aclose)
            nursery.start_soon(s.aclose)


async def test_websocket_abnormal_close_code_raises_after_data() -> None:
    client = Connection(ConnectionType.CLIENT)
    wire = client.send(BytesMessage(b"partial")) + client.send(
        CloseConnection(code=1011, reason="backend exploded")
    )
    ws = WebSocketStream(ScriptedStream([wire]), client=False)
    with trio.fail_after(10):
        assert await ws.receive_some() == b"partial"
        with pytest.raises(trio.BrokenResourceError) as info:
            await ws.receive_some()
    error = info.value.__cause__
    assert isinstance(error, WebSocketClosedError)
    assert (error.code, error.reason) == (1011, "backend exploded")


async def test_websocket_eof_without_close_frame_is_broken() -> None:
    ws = WebSocketStream(ScriptedStream([raw_frame(0x2, b"cut")]), client=False)
    with trio.fail_after(10):
        assert await ws.receive_some() == b"cut"
        with pytest.raises(trio.BrokenResourceError) as info:
            await ws.receive_some()
    assert isinstance(info.value.__cause__, WebSocketClosedError)
    assert info.value.__cause__.code == 1006


async def test_websocket_trailing_data_from_handshake_is_parsed_first() -> None:
    client = Connection(ConnectionType.CLIENT)
    early = client.send(BytesMessage(b"early"))
    late = client.send(BytesMessage(b"late")) + client.send(CloseConnection(code=1000))
    ws = WebSocketStream(ScriptedStream([late]), client=False, trailing_data=early)
    with trio.fail_after(10):
        assert await read_all(ws) == b"earlylate"


async def test_websocket_aclose_waits_for_peer_close_and_loses_nothing() -> None:
    payload = os.urandom(3 * 1024 * 1024)
    c, s = ws_pair()
    result = bytearray()

    async def sender() -> None:
        await c.send_all(payload)
        await c.aclose()  # immediately: the bytes are still in flight

    async def receiver() -> None:
        await trio.testing.wait_all_tasks_blocked()
        while chunk := await s.receive_some(10000):
            result.extend(chunk)
        await s.aclose()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            nursery.start_soon(receiver)
    assert result == payload


async def test_websocket_aclose_is_bounded_when_peer_never_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = trio.testing.memory_stream_pair()
    ws = WebSocketStream(b, client=False, close_timeout=3.0)
    start = trio.current_time()
    await ws.aclose()
    assert trio.current_time() - start == pytest.approx(3.0)
    with pytest.raises(trio.ClosedResourceError):
        await ws.receive_some()
    await a.aclose()
