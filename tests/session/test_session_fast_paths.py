"""The fast paths: opening without waiting for SYN_REPLY, and inline writes.

``open_stream(wait_reply=False)`` saves a round trip per stream; these tests pin
what it promises (data may follow SYN_STREAM at once, refusals still surface,
``Stream.wait_reply`` waits later and times out). Inline writes (the task that
queued frames writes them when the writer task is idle) must keep the wire
order and leave what the kernel did not take to the writer.
"""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

import muxstream
from muxstream import CLIENT, SessionOptions
from muxstream.protocol import DataFrame, DataReceived, RstStatus, StreamOpened
from muxstream.testing import RawPeer, open_session_pair, open_tcp_transport_pair

from ._helpers import NO_KEEPALIVE, echo_each_stream, raw_server, start_client


async def _deaf(transport: trio.abc.Stream) -> None:
    """A peer that reads everything and answers nothing."""
    while await transport.receive_some():
        pass


async def test_open_without_reply_sends_data_at_once_and_gets_the_echo(make_link) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(20):
        async with open_session_pair(await make_link(), **NO_KEEPALIVE) as (client, server):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo_each_stream, server)
                for i in range(20):
                    stream = await client.open_stream({"n": str(i)}, wait_reply=False)
                    await stream.send_all(b"x" * (i + 1))
                    await stream.send_eof()
                    assert await stream.receive_all() == b"x" * (i + 1)
                    reply = await stream.wait_reply()
                    assert reply is stream.reply_headers
                    await stream.aclose()
                nursery.cancel_scope.cancel()


async def test_reply_headers_are_empty_until_the_reply_and_wait_reply_returns_them() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            session, b = start_client(nursery)
            peer = raw_server(b)
            stream = await session.open_stream({"kind": "x"}, wait_reply=False)
            await stream.send_all(b"early")
            opened = await peer.read_until(StreamOpened)
            assert isinstance(opened, StreamOpened)
            # DATA may follow SYN_STREAM before any SYN_REPLY.
            data = await peer.read_until(DataReceived)
            assert isinstance(data, DataReceived) and data.data == b"early"
            assert not stream.reply_headers
            peer.connection.send_reply(opened.stream_id, {"answer": "yes"})
            await peer.flush()
            reply = await stream.wait_reply()
            assert reply["answer"] == "yes"
            assert stream.reply_headers["answer"] == "yes"
            nursery.cancel_scope.cancel()


async def test_refused_stream_surfaces_on_the_next_call() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            session, b = start_client(nursery)
            peer = raw_server(b)
            stream = await session.open_stream(wait_reply=False)
            opened = await peer.read_until(StreamOpened)
            assert isinstance(opened, StreamOpened)
            peer.connection.reset_stream(opened.stream_id, RstStatus.REFUSED_STREAM)
            await peer.flush()
            with pytest.raises(trio.BrokenResourceError) as info:
                await stream.receive_some()
            assert isinstance(info.value.__cause__, muxstream.StreamResetError)
            assert info.value.__cause__.status == RstStatus.REFUSED_STREAM
            with pytest.raises(trio.BrokenResourceError):
                await stream.wait_reply()
            nursery.cancel_scope.cancel()


async def test_wait_reply_times_out_and_resets(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        session, b = start_client(nursery, open_timeout=5)
        peer = raw_server(b)
        stream = await session.open_stream(wait_reply=False)
        assert trio.current_time() == 0  # no round trip waited
        with pytest.raises(muxstream.StreamOpenTimeout):
            await stream.wait_reply(timeout=3)
        assert trio.current_time() == pytest.approx(3)
        from muxstream.protocol import StreamReset

        reset = await peer.read_until(StreamReset)
        assert isinstance(reset, StreamReset) and reset.status == RstStatus.CANCEL
        with pytest.raises(trio.ClosedResourceError):  # reset here, like reset()
            await stream.send_all(b"late")
        nursery.cancel_scope.cancel()


async def test_wait_reply_on_an_accepted_stream_is_a_value_error() -> None:
    with trio.fail_after(10):
        async with open_session_pair(trio.testing.memory_stream_pair(),
                                     **NO_KEEPALIVE) as (client, server):
            await client.open_stream(wait_reply=False)
            accepted = await server.accept()
            with pytest.raises(ValueError):
                await accepted.wait_reply()


async def test_inline_writes_keep_order_when_the_kernel_takes_only_part() -> None:
    """A tiny send buffer makes inline writes partial: the writer must finish
    each batch before anything else is written, or the peer sees torn frames."""
    import socket

    with trio.fail_after(60):
        a, b = await open_tcp_transport_pair()
        a.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        b.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async with open_session_pair((a, b), **NO_KEEPALIVE) as (client, server):
            payloads = {i: bytes([i]) * (50_000 + 997 * i) for i in range(8)}

            async def send(i: int) -> None:
                stream = await client.open_stream({"i": str(i)}, wait_reply=False)
                view = memoryview(payloads[i])
                for off in range(0, len(view), 7_001):
                    await stream.send_all(view[off : off + 7_001])
                    if off % 3:
                        await client.ping()  # urgent frames interleave with DATA
                await stream.send_eof()

            got: dict[int, bytes] = {}

            async def receive_one(stream: muxstream.Stream) -> None:
                got[int(stream.headers["i"])] = await stream.receive_all()

            async with trio.open_nursery() as nursery:
                for i in payloads:
                    nursery.start_soon(send, i)
                for _ in payloads:
                    nursery.start_soon(receive_one, await server.accept())
            assert got == payloads


async def test_mixed_frame_sizes_over_tcp_arrive_intact() -> None:
    """The TCP reader reads a frame header alone after a large DATA frame and the
    payload straight into the bytes it hands out: any mix of sizes, interleaved
    with PINGs and a second stream, must arrive byte for byte."""
    import hashlib
    import random

    rng = random.Random(7)
    sizes = [rng.choice([1, 7, 100, 4096, 65_535, 65_536, 65_537, 131_072, 300_001])
             for _ in range(120)]
    with trio.fail_after(60):
        async with open_session_pair(await open_tcp_transport_pair(),
                                     **NO_KEEPALIVE) as (client, server):
            sent = {0: hashlib.sha256(), 1: hashlib.sha256()}
            got: dict[int, str] = {}

            async def produce(n: int) -> None:
                stream = await client.open_stream({"n": str(n)}, wait_reply=False)
                for i, size in enumerate(sizes[n::2]):
                    chunk = bytes([(i + n) % 251]) * size
                    sent[n].update(chunk)
                    await stream.send_all(chunk)
                    if i % 5 == 0:
                        await client.ping()
                await stream.send_eof()

            async def consume(stream: muxstream.Stream) -> None:
                digest = hashlib.sha256()
                while chunk := await stream.receive_some():
                    assert isinstance(chunk, bytes)
                    digest.update(chunk)
                got[int(stream.headers["n"])] = digest.hexdigest()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce, 0)
                nursery.start_soon(produce, 1)
                for _ in range(2):
                    nursery.start_soon(consume, await server.accept())
            assert got == {n: h.hexdigest() for n, h in sent.items()}


async def test_ping_timeouts_fire_on_time_in_any_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One task enforces every ping's deadline: a later ping with a shorter
    timeout must still time out first, each exactly at its own deadline."""
    async with trio.open_nursery() as nursery:
        session, b = start_client(nursery)
        nursery.start_soon(_deaf, b)
        fired: dict[str, float] = {}

        async def ping(name: str, timeout: float) -> None:
            with pytest.raises(muxstream.PingTimeout):
                await session.ping(timeout=timeout)
            fired[name] = trio.current_time()

        async with trio.open_nursery() as pings:
            pings.start_soon(ping, "long", 30)
            await trio.sleep(1)
            pings.start_soon(ping, "short", 2)
            await trio.sleep(1)
            pings.start_soon(ping, "middle", 10)
        assert fired == {"long": pytest.approx(30), "short": pytest.approx(3),
                         "middle": pytest.approx(12)}
        # Answered and timed-out pings leave nothing behind.
        assert session.statistics().pings_outstanding == 0
        nursery.cancel_scope.cancel()


async def test_a_ping_waiting_when_the_session_closes_hard_wakes_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        session, b = start_client(nursery, close_timeout=1)
        nursery.start_soon(_deaf, b)
        woke: list[float] = []

        async def ping() -> None:
            with pytest.raises((trio.ClosedResourceError, trio.BrokenResourceError)):
                await session.ping(timeout=100)
            woke.append(trio.current_time())

        nursery.start_soon(ping)
        await trio.testing.wait_all_tasks_blocked()
        await session.aclose()  # the deaf peer never sends EOF: hard close at 1 s
        await trio.testing.wait_all_tasks_blocked()
        assert woke and woke[0] < 5
        nursery.cancel_scope.cancel()


def test_a_sender_waits_for_a_worthwhile_piece_of_write_buffer_room() -> None:
    """Other senders' leftovers (a few bytes of room) are not worth a DATA frame:
    the sender waits for MIN_PIECE of room, or for what it has left if less."""
    from muxstream._core import MIN_PIECE, SessionCore
    from muxstream._stream import StreamCore

    a, _b = trio.testing.memory_stream_pair()
    limit = 1 << 20
    core = SessionCore(a, CLIENT, SessionOptions(write_buffer_size=limit, keepalive_interval=None),
                       begin_close=lambda trigger: None)
    conn = core.conn
    filler, sid = conn.open_stream(), conn.open_stream()
    stream = StreamCore(sid)
    while (room := limit - conn.ordered_bytes) > 100 + 8:  # each frame has an 8-byte header
        conn.send_data(filler, b"f" * min(room - 100 - 8, 100_000))
    assert limit - conn.ordered_bytes == 100
    assert core.send_room(stream, 1 << 20) == 0  # a sliver: wait
    assert stream in core.writer.space_waiters
    assert core.send_room(stream, 100) == 100  # all it has left fits: go
    conn.buffers_to_send(MIN_PIECE)  # the writer took a batch: room >= MIN_PIECE
    assert core.send_room(stream, 1 << 20) >= MIN_PIECE


async def test_what_an_inline_write_leaves_the_writer_sends_first_and_in_order() -> None:
    """An inline write that the kernel takes only part of hands the rest to the
    writer task; no further inline write happens before the writer sent it, and
    the peer reads every byte in queue order."""
    import socket

    from muxstream._writer import Writer
    from muxstream.protocol import Connection, Role

    with trio.fail_after(20):
        a, b = await open_tcp_transport_pair()
        a.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        b.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn = Connection(Role.CLIENT, announce=False)
        writer = Writer(a, conn, buffer_size=1 << 20, reader_lot=trio.lowlevel.ParkingLot())
        sid = conn.open_stream()
        chunks = [bytes([i]) * 100_000 for i in range(4)]
        conn.send_data(sid, chunks[0])
        writer.kick()  # inline: the kernel takes a few KiB
        assert writer.unsent and not conn.has_data_to_send
        conn.send_data(sid, chunks[1])
        writer.kick()  # the writer holds bytes now: no inline write
        assert conn.has_data_to_send
        conn.send_data(sid, chunks[2] + chunks[3], end_stream=True)
        writer.finish()

        received = bytearray()

        async def read_all() -> None:
            while data := await b.receive_some(1 << 16):
                received.extend(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await writer.run(fail=pytest.fail, closed=trio.Event())
        assert writer.unsent == []
        peer = RawPeer()
        frames = peer.decode(bytes(received))
        payload = b"".join(f.data for f in frames if isinstance(f, DataFrame))
        assert payload == b"".join(chunks)


async def test_a_kick_with_nothing_queued_leaves_the_writer_parked() -> None:
    """A stream's close kicks the writer; with nothing queued, waking the
    writer task would only make it park again (a scheduler pass per stream)."""
    from muxstream._writer import Writer
    from muxstream.protocol import Connection, Role

    with trio.fail_after(10):
        a, b = await open_tcp_transport_pair()
        conn = Connection(Role.CLIENT, announce=False)
        writer = Writer(a, conn, buffer_size=1 << 20, reader_lot=trio.lowlevel.ParkingLot())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(writer.run, fail=pytest.fail,
                                                 closed=trio.Event()))
            await trio.testing.wait_all_tasks_blocked()
            assert len(writer.lot) == 1  # the writer task waits for work
            writer.kick()
            assert len(writer.lot) == 1  # nothing queued: it was not woken
            sid = conn.open_stream()
            conn.send_data(sid, b"x", end_stream=True)
            writer.kick()  # queued: written inline, the writer still not needed
            assert len(writer.lot) == 1 and not conn.has_data_to_send
            writer.finish()  # the FIN of the transport: only the writer sends it
            assert len(writer.lot) == 0
        assert await b.receive_some() and writer.done.is_set()
        await a.aclose()
        await b.aclose()


async def test_after_a_small_read_the_reader_waits_instead_of_failing_a_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PING's read empties the socket: trying another read at once would only
    fail with EAGAIN (one wasted system call per small message, each side)."""
    import os as real_os
    import types

    from muxstream import _reader

    failed = 0

    def readv(fd: int, buffers: object) -> int:
        nonlocal failed
        try:
            return real_os.readv(fd, buffers)  # type: ignore[arg-type]
        except BlockingIOError:
            failed += 1
            raise

    fake_os = types.SimpleNamespace(**{**vars(real_os), "readv": readv})
    monkeypatch.setattr(_reader, "os", fake_os)
    with trio.fail_after(20):
        async with open_session_pair(await open_tcp_transport_pair(), **NO_KEEPALIVE) as (
            client, _server,
        ):
            await client.ping()
            failed = 0
            for _ in range(50):
                await client.ping()
    assert failed < 10  # was about 2 per ping (one on each side)


async def test_a_write_buffer_smaller_than_a_piece_still_sends_everything() -> None:
    """Waiting for a worthwhile piece of room must not wait for more room than
    the write buffer can ever have."""
    payload = bytes(range(256)) * 4096  # 1 MiB
    with trio.fail_after(20):
        async with open_session_pair(
            await open_tcp_transport_pair(), write_buffer_size=16 * 1024, **NO_KEEPALIVE
        ) as (client, server):
            stream = await client.open_stream(wait_reply=False)
            peer = await server.accept()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(stream.send_all, payload, eof=True))
                assert await peer.receive_all() == payload
