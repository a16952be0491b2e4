"""Limits under attack: a hostile peer over real TCP against a live Session.

Each attack must be refused with the right status (RST_STREAM for a stream
error, GOAWAY for a session error) while the memory it costs us stays bounded,
measured with tracemalloc around the attack. Counts are small in CI; the
documented full runs (docs/reliability.md) raise them with environment variables.
"""

from __future__ import annotations

import socket
import struct

import pytest
import trio
import trio.testing

import muxstream
from muxstream.protocol import (
    GoAwayFrame,
    GoAwayStatus,
    Headers,
    PingFrame,
    RemoteProtocolError,
    RstStatus,
    RstStreamFrame,
    SettingsFrame,
    SynReplyFrame,
    WindowUpdateFrame,
)

from ._helpers import (
    RawPeer,
    bomb_block,
    data_frame,
    env_int,
    ping_frame,
    start_session_with_raw_peer,
    syn_stream,
    traced_peak,
    window_update,
)

MiB = 1 << 20
SYN_FLOOD = env_int("MUXSTREAM_SYN_FLOOD", 10_000)
PING_FLOOD = env_int("MUXSTREAM_PING_FLOOD", 20_000)


def _shrink_buffers(session: muxstream.Session, peer: RawPeer) -> None:
    """Small kernel buffers between a session and a peer that never reads."""
    assert isinstance(session.transport, trio.SocketStream)
    assert isinstance(peer.transport, trio.SocketStream)
    session.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


async def _broken_cause(session: muxstream.Session) -> BaseException:
    """Wait until the session is broken and return why."""
    with trio.fail_after(30):
        while session.error is None:
            await trio.sleep(0.01)
    return session.error


async def test_header_bomb_is_a_goaway_and_costs_little_memory() -> None:
    block = bomb_block(64 * MiB)  # ~64 KiB on the wire
    async with trio.open_nursery() as nursery:
        session, peer = await start_session_with_raw_peer(nursery)
        payload = struct.pack(">IIBB", 1, 0, 0, 0) + block
        frame = struct.pack(">II", 0x80030001, len(payload)) + payload
        with traced_peak() as mem:
            await peer.send(frame)
            cause = await _broken_cause(session)
        assert isinstance(cause, RemoteProtocolError) and cause.fatal
        assert mem.peak < 4 * MiB, mem.peak
        while (frames := await peer.read(1 << 20)) is not None:
            if any(isinstance(f, GoAwayFrame) for f in frames):
                break
        goaways = [f for f in peer.frames if isinstance(f, GoAwayFrame)]
        assert goaways == [GoAwayFrame(0, GoAwayStatus.PROTOCOL_ERROR)]
        nursery.cancel_scope.cancel()


async def test_tiny_data_frames_cost_memory_in_proportion_to_their_bytes() -> None:
    """1-byte DATA frames filling a stream's window (the app does not read):
    what we hold must stay near the window, not ~40x it in per-chunk overhead.
    (While one read is parsed, its events exist at once: a transient bounded by
    the 1 MiB read size, checked by the peak.)"""
    window = 64 * 1024
    async with trio.open_nursery() as nursery:
        session, peer = await start_session_with_raw_peer(nursery, initial_window=window)
        # Announce flow control (as muxstream peers do), so the window is enforced.
        await peer.send(window_update(0, 1) + syn_stream(peer, 1))
        stream = await session.accept()
        flood = b"".join(data_frame(1, b"x") for _ in range(window))
        with traced_peak() as mem:
            await peer.send(flood)
            with trio.fail_after(30):
                while stream.buffered < window:
                    await trio.sleep(0.01)
        assert session.error is None
        assert mem.retained < 4 * window, mem.retained
        assert mem.peak < 32 * MiB, mem.peak
        # One byte more overruns the window: a stream error, FLOW_CONTROL_ERROR.
        await peer.send(data_frame(1, b"!"))
        with trio.fail_after(10):
            while not any(isinstance(f, RstStreamFrame) for f in peer.frames):
                await peer.read(1 << 20)
        rsts = [f for f in peer.frames if isinstance(f, RstStreamFrame)]
        assert rsts == [RstStreamFrame(1, RstStatus.FLOW_CONTROL_ERROR)]
        nursery.cancel_scope.cancel()


async def test_syn_stream_flood_is_refused_beyond_the_backlog_with_flat_memory() -> None:
    """SYN_FLOOD streams (1,000,000 in the full run) from a peer that reads our
    answers: the first ``accept_backlog`` wait for accept(), every other one is
    refused with REFUSED_STREAM, and memory does not grow with the count."""
    backlog = 16
    batch = 1000
    async with trio.open_nursery() as nursery:
        session, peer = await start_session_with_raw_peer(nursery, accept_backlog=backlog)
        refused = 0
        other: list[object] = []
        done = trio.Event()

        async def read_answers() -> None:
            nonlocal refused
            while (frames := await peer.read(1 << 20)) is not None:
                for f in frames:
                    if isinstance(f, RstStreamFrame) and f.status == RstStatus.REFUSED_STREAM:
                        refused += 1
                    elif not isinstance(f, SettingsFrame | WindowUpdateFrame):
                        other.append(f)
                peer.frames.clear()  # the test's own memory must not grow with the count
                if refused >= SYN_FLOOD - backlog:
                    done.set()
                    return

        nursery.start_soon(read_answers)
        headers = Headers({"streamtype": "data"})
        with traced_peak() as mem:
            sid = 1
            for _ in range(SYN_FLOOD // batch):
                chunk = b"".join(syn_stream(peer, sid + 2 * i, headers) for i in range(batch))
                sid += 2 * batch
                await peer.send(chunk)
            with trio.fail_after(120):
                await done.wait()
        assert session.error is None
        assert refused == SYN_FLOOD - backlog
        assert other == []
        # The backlog is intact and usable.
        stream = await session.accept()
        assert stream.stream_id == 1 and stream.headers["streamtype"] == "data"
        assert mem.peak < 16 * MiB, mem.peak
        nursery.cancel_scope.cancel()


async def test_syn_stream_flood_beyond_max_concurrent_streams_is_refused() -> None:
    """Streams that were accepted count against max_concurrent_streams: more are refused."""
    async with trio.open_nursery() as nursery:
        session, peer = await start_session_with_raw_peer(
            nursery, max_concurrent_streams=10, accept_backlog=1000)
        await peer.send(b"".join(syn_stream(peer, 1 + 2 * i) for i in range(50)))
        with trio.fail_after(10):
            while sum(isinstance(f, RstStreamFrame) for f in peer.frames) < 40:
                await peer.read(1 << 20)
        rsts = [f for f in peer.frames if isinstance(f, RstStreamFrame)]
        assert {f.status for f in rsts} == {RstStatus.REFUSED_STREAM}
        assert sorted(f.stream_id for f in rsts) == [1 + 2 * i for i in range(10, 50)]
        accepted = [await session.accept() for _ in range(10)]
        assert [s.stream_id for s in accepted] == [1 + 2 * i for i in range(10)]
        nursery.cancel_scope.cancel()


async def test_ping_flood_from_a_reading_peer_is_answered_with_bounded_memory() -> None:
    async with trio.open_nursery() as nursery:
        session, peer = await start_session_with_raw_peer(nursery)
        echoes = 0
        done = trio.Event()

        async def read_echoes() -> None:
            nonlocal echoes
            while (frames := await peer.read(1 << 20)) is not None:
                echoes += sum(isinstance(f, PingFrame) for f in frames)
                peer.frames.clear()
                if echoes >= PING_FLOOD:
                    done.set()
                    return

        nursery.start_soon(read_echoes)
        batch = b"".join(ping_frame(2 * i + 1) for i in range(500))
        with traced_peak() as mem:
            for _ in range(PING_FLOOD // 500):
                await peer.send(batch)
            with trio.fail_after(60):
                await done.wait()
        assert session.error is None
        assert mem.peak < 8 * MiB, mem.peak
        nursery.cancel_scope.cancel()


async def test_ping_flood_from_a_peer_that_never_reads_stays_bounded() -> None:
    """The echoes cannot be written: we must stop reading (TCP backpressure) or
    give up on the session, not queue echoes without limit."""
    async with trio.open_nursery() as nursery:
        session, peer = await start_session_with_raw_peer(nursery)
        _shrink_buffers(session, peer)  # reach "the kernel's buffers are full" sooner
        batch = b"".join(ping_frame(2 * i + 1) for i in range(4096))  # 48 KiB
        sent = 0
        stalled = False
        with traced_peak() as mem:
            with trio.move_on_after(20):
                while session.error is None:
                    with trio.move_on_after(2) as scope:
                        await peer.send(batch)
                    if scope.cancelled_caught:
                        stalled = True  # our reader stopped reading: backpressure
                        break
                    sent += len(batch)
        # Never tens of MiB of queued echoes: the flood was stopped either way.
        assert stalled or session.error is not None
        assert mem.retained < 12 * MiB, mem.retained
        assert session.statistics().queued_answers <= 100_000
        nursery.cancel_scope.cancel()


async def test_session_window_update_overflow_is_a_goaway() -> None:
    async with trio.open_nursery() as nursery:
        session, peer = await start_session_with_raw_peer(nursery)
        await peer.send(window_update(0, 0x7FFFFFFF))
        cause = await _broken_cause(session)
        assert isinstance(cause, RemoteProtocolError) and cause.fatal
        while (await peer.read(1 << 20)) is not None:
            pass
        assert GoAwayFrame(0, GoAwayStatus.PROTOCOL_ERROR) in peer.frames
        nursery.cancel_scope.cancel()


async def test_stream_window_update_overflow_resets_only_that_stream() -> None:
    async with trio.open_nursery() as nursery:
        session, peer = await start_session_with_raw_peer(nursery)
        await peer.send(syn_stream(peer, 1) + syn_stream(peer, 3))
        bad = await session.accept()
        good = await session.accept()
        await peer.send(window_update(1, 0x7FFFFFFF))
        with pytest.raises(trio.BrokenResourceError) as info:
            with trio.fail_after(10):
                await bad.receive_some()
        assert isinstance(info.value.__cause__, muxstream.StreamResetError)
        assert info.value.__cause__.status == RstStatus.FLOW_CONTROL_ERROR
        await good.send_all(b"still fine")
        with trio.fail_after(10):
            while not any(isinstance(f, RstStreamFrame) for f in peer.frames):
                await peer.read(1 << 20)
        assert RstStreamFrame(1, RstStatus.FLOW_CONTROL_ERROR) in peer.frames
        assert session.error is None
        nursery.cancel_scope.cancel()


async def test_data_beyond_the_stream_window_is_a_flow_control_reset() -> None:
    window = 64 * 1024
    async with trio.open_nursery() as nursery:
        session, peer = await start_session_with_raw_peer(nursery, initial_window=window)
        # Announce flow control, as a muxstream peer does (spdystream peers are exempt).
        await peer.send(window_update(0, 1) + syn_stream(peer, 1))
        stream = await session.accept()
        await peer.send(data_frame(1, bytes(window)) + data_frame(1, b"over"))
        with trio.fail_after(10):
            while not any(isinstance(f, RstStreamFrame) for f in peer.frames):
                await peer.read(1 << 20)
        assert RstStreamFrame(1, RstStatus.FLOW_CONTROL_ERROR) in peer.frames
        with pytest.raises(trio.BrokenResourceError):
            while await stream.receive_some():
                pass
        assert session.error is None
        nursery.cancel_scope.cancel()


async def test_data_beyond_the_session_window_is_a_goaway() -> None:
    async with trio.open_nursery() as nursery:
        session, peer = await start_session_with_raw_peer(
            nursery, initial_window=1 << 20, session_window=65536)
        await peer.send(window_update(0, 1) + syn_stream(peer, 1) + syn_stream(peer, 3))
        await session.accept()
        await session.accept()
        await peer.send(data_frame(1, bytes(40000)) + data_frame(3, bytes(40000)))
        cause = await _broken_cause(session)
        assert isinstance(cause, RemoteProtocolError) and cause.fatal
        nursery.cancel_scope.cancel()


async def test_a_peer_that_never_reads_bounds_our_writes_and_trips_keepalive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """send_all blocks once write_buffer_size is queued (memory bounded), and the
    keepalive, whose PING cannot get through either, ends the session."""
    buffer = 256 * 1024
    async with trio.open_nursery() as nursery:
        session, peer = await start_session_with_raw_peer(
            nursery, write_buffer_size=buffer, keepalive_interval=5, ping_timeout=5)
        await peer.send(syn_stream(peer, 1))
        stream = await session.accept()
        chunk = bytes(64 * 1024)
        sent = 0
        with traced_peak() as mem:
            with pytest.raises(trio.BrokenResourceError) as info:
                while True:
                    await stream.send_all(chunk)
                    sent += len(chunk)
                    assert session.statistics().write_buffer <= buffer + len(chunk)
        assert isinstance(info.value.__cause__, muxstream.KeepaliveTimeout)
        # The kernel's buffers plus ours, not an unbounded queue.
        assert sent < 64 * MiB
        assert mem.peak < buffer + 4 * MiB, mem.peak
        nursery.cancel_scope.cancel()


async def test_the_peer_flow_control_announcement_does_not_disable_limits() -> None:
    """A spdystream-like peer (no windows) is held by TCP backpressure instead: the
    stream buffer stays within twice its window even if the app never reads."""
    window = 64 * 1024
    async with trio.open_nursery() as nursery:
        session, peer = await start_session_with_raw_peer(nursery, initial_window=window)
        await peer.send(syn_stream(peer, 1))
        stream = await session.accept()
        with trio.fail_after(10):
            while not any(isinstance(f, SynReplyFrame) for f in peer.frames):
                await peer.read(1 << 20)
        block = data_frame(1, bytes(16 * 1024))
        sent = 0
        with trio.move_on_after(3):
            while sent < 64 * MiB:
                await peer.send(block)
                sent += len(block)
        assert stream.buffered <= 2 * window + 16 * 1024 + 1 << 20
        assert sent < 64 * MiB
        nursery.cancel_scope.cancel()


async def test_a_flood_of_headers_frames_cannot_pile_up_header_memory() -> None:
    """HEADERS frames compress ~1000:1: 100 of 200 KiB each are a few KiB on the
    wire. What a stream keeps of them must stay bounded (max_header_block); past
    that the stream is reset, the session lives on."""
    import struct

    async with trio.open_nursery() as nursery:
        session, peer = await start_session_with_raw_peer(nursery)
        await peer.send(syn_stream(peer, 1) + syn_stream(peer, 3))
        stream = await session.accept()
        other = await session.accept()
        big = Headers({"x-big": "a" * 200_000})
        frames = []
        for _ in range(100):
            block = peer.compressor.compress(big)
            payload = struct.pack(">I", 1) + block
            frames.append(struct.pack(">II", 0x80030008, len(payload)) + payload)
        wire = b"".join(frames)
        assert len(wire) < 200_000
        with traced_peak() as mem:
            await peer.send(wire)
            await peer.send(data_frame(3, b"ping"))
            with trio.fail_after(30):
                assert await other.receive_some() == b"ping"
        assert session.error is None
        with pytest.raises(trio.BrokenResourceError) as info, trio.fail_after(10):
            await stream.receive_some()
        assert isinstance(info.value.__cause__, muxstream.StreamResetError)
        assert info.value.__cause__.status == RstStatus.PROTOCOL_ERROR
        with trio.fail_after(10):
            while RstStreamFrame(1, RstStatus.PROTOCOL_ERROR) not in peer.frames:
                await peer.read(1 << 20)
        assert mem.retained < 2 * MiB, mem.retained
        nursery.cancel_scope.cancel()


async def test_repeated_headers_frames_keep_every_value() -> None:
    import struct

    async with trio.open_nursery() as nursery:
        session, peer = await start_session_with_raw_peer(nursery)
        await peer.send(syn_stream(peer, 1))
        stream = await session.accept()
        wire = b""
        for values in (["a", "b"], ["c", "d"], ["e"]):
            block = peer.compressor.compress(Headers({"x-v": values, "x-" + values[0]: "1"}))
            payload = struct.pack(">I", 1) + block
            wire += struct.pack(">II", 0x80030008, len(payload)) + payload
        await peer.send(wire + data_frame(1, b"end", flags=1))
        with trio.fail_after(10):
            assert await stream.receive_all() == b"end"
        assert stream.extra_headers.get_all("x-v") == ["a", "b", "c", "d", "e"]
        assert {"x-a", "x-c", "x-e"} <= set(stream.extra_headers)
        nursery.cancel_scope.cancel()
