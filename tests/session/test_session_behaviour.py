"""Session behaviour: streams, flow control, resets, failures, timers."""

from __future__ import annotations

import hashlib

import pytest
import trio
import trio.testing

import muxstream
from muxstream import CLIENT, SERVER, Session, Stream
from muxstream.protocol import (
    Connection,
    DataReceived,
    GoAwayReceived,
    GoAwayStatus,
    PingReceived,
    ReplyReceived,
    Role,
    RstStatus,
    StreamOpened,
    StreamReset,
)
from muxstream.testing import RawPeer, open_session_pair, start_session

from ._helpers import NO_KEEPALIVE, raw_server, start_client


async def _echo_all(session: Session) -> None:
    async with trio.open_nursery() as nursery:
        async for stream in session:

            async def echo(s: Stream) -> None:
                while data := await s.receive_some():
                    await s.send_all(data)
                await s.send_eof()

            nursery.start_soon(echo, stream)


async def test_many_streams_echo_concurrently(make_link) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        async with open_session_pair(await make_link(), **NO_KEEPALIVE) as (client, server):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_echo_all, server)
                results: dict[int, bool] = {}

                async def one(i: int) -> None:
                    stream = await client.open_stream({"n": str(i)})
                    payload = (b"%d:" % i) * (1000 * (i + 1))
                    async with trio.open_nursery() as inner:
                        inner.start_soon(_send_then_eof, stream, payload)
                        results[i] = await stream.receive_all() == payload

                async with trio.open_nursery() as clients:
                    for i in range(20):
                        clients.start_soon(one, i)
                nursery.cancel_scope.cancel()
        assert results == {i: True for i in range(20)}


async def _send_then_eof(stream: Stream, payload: bytes) -> None:
    await stream.send_all(payload)
    await stream.send_eof()


async def test_stream_headers_and_reply_headers_travel() -> None:
    with trio.fail_after(10):
        async with open_session_pair(**NO_KEEPALIVE) as (client, server):
            async with trio.open_nursery() as nursery:
                accepted: list[Stream] = []

                async def accept() -> None:
                    accepted.append(await server.accept())

                nursery.start_soon(accept)
                stream = await client.open_stream({"StreamType": "stdin", "x": ["1", "2"]})
            assert accepted[0].headers["streamtype"] == "stdin"
            assert accepted[0].headers.get_all("x") == ["1", "2"]
            assert stream.stream_id % 2 == 1 and accepted[0].stream_id == stream.stream_id


async def test_slow_reader_stalls_only_its_own_stream() -> None:
    window = 64 * 1024
    with trio.fail_after(30):
        async with open_session_pair(initial_window=window, **NO_KEEPALIVE) as (client, server):
            stalled_out = await _open_accepted(client, server)
            busy_out = await _open_accepted(client, server)
            stalled_sent = 0

            async def push_stalled() -> None:
                nonlocal stalled_sent
                while True:
                    await stalled_out[0].send_all(b"s" * 8192)
                    stalled_sent += 8192

            async with trio.open_nursery() as nursery:
                nursery.start_soon(push_stalled)
                payload = b"b" * (4 * 1024 * 1024)
                nursery.start_soon(_send_then_eof, busy_out[0], payload)
                got = await busy_out[1].receive_all()
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            assert got == payload
            # The stalled stream's receiver holds no more than its window.
            assert stalled_out[1].buffered <= window
            assert stalled_sent <= window + 8192


async def _open_accepted(client: Session, server: Session) -> tuple[Stream, Stream]:
    accepted: list[Stream] = []
    async with trio.open_nursery() as nursery:

        async def accept() -> None:
            accepted.append(await server.accept())

        nursery.start_soon(accept)
        opened = await client.open_stream()
    return opened, accepted[0]


async def test_reset_wakes_blocked_sender_and_receiver() -> None:
    with trio.fail_after(10):
        async with open_session_pair(initial_window=1024, **NO_KEEPALIVE) as (client, server):
            ours, theirs = await _open_accepted(client, server)
            errors: list[BaseException] = []

            async def blocked_send() -> None:
                try:
                    await ours.send_all(b"x" * 100_000)
                except trio.BrokenResourceError as exc:
                    errors.append(exc)

            async def blocked_receive() -> None:
                try:
                    while await ours.receive_some():
                        pass
                except trio.BrokenResourceError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(blocked_send)
                nursery.start_soon(blocked_receive)
                await trio.testing.wait_all_tasks_blocked()
                theirs.reset(RstStatus.CANCEL)
            assert len(errors) == 2
            for exc in errors:
                assert isinstance(exc.__cause__, muxstream.StreamResetError)
                assert exc.__cause__.status == RstStatus.CANCEL


async def test_ping_returns_round_trip_time(make_link) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(10):
        async with open_session_pair(await make_link(), **NO_KEEPALIVE) as (client, server):
            rtt = await client.ping()
            assert 0 <= rtt < 10
            assert await server.ping() >= 0
            assert client.statistics().pings_sent == 1
            assert client.statistics().pings_received == 1


async def test_fin_before_close_delivers_buffered_data_then_eof() -> None:
    with trio.fail_after(10):
        async with open_session_pair(**NO_KEEPALIVE) as (client, server):
            ours, theirs = await _open_accepted(client, server)
            await theirs.send_all(b"hello")
            await theirs.send_eof()
            await theirs.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert await ours.receive_some() == b"hello"
            assert await ours.receive_some() == b""


# --- a raw peer: a protocol Connection driven by hand over a memory stream -----------


async def _session_with_raw_peer(
    nursery: trio.Nursery, **options: object
) -> tuple[Session, RawPeer]:
    session, b = start_client(nursery, **options)
    return session, raw_server(b)


async def test_malformed_frame_breaks_session_with_goaway_and_typed_error() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            session, peer = await _session_with_raw_peer(nursery)
            # A control frame with SPDY version 2: the session must refuse it.
            await peer.transport.send_all(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")
            with pytest.raises(trio.BrokenResourceError) as info:
                while True:
                    await session.open_stream(timeout=5)
            assert isinstance(info.value.__cause__, muxstream.RemoteProtocolError)
            goaways = []
            while not goaways:
                events = await peer.read_events()
                if not events and not peer.connection.has_data_to_send:
                    break
                goaways += [e for e in events if isinstance(e, GoAwayReceived)]
            assert goaways and goaways[0].status == GoAwayStatus.PROTOCOL_ERROR
            nursery.cancel_scope.cancel()


async def test_peer_vanishing_wakes_every_blocked_call_with_connection_lost() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            session, peer = await _session_with_raw_peer(nursery)
            await peer.read_events()  # SETTINGS
            errors: list[BaseException] = []

            async def accept() -> None:
                try:
                    await session.accept()
                except trio.BrokenResourceError as exc:
                    errors.append(exc)

            async def ping() -> None:
                try:
                    await session.ping()
                except trio.BrokenResourceError as exc:
                    errors.append(exc)

            nursery.start_soon(accept)
            nursery.start_soon(ping)
            await trio.testing.wait_all_tasks_blocked()
            await trio.aclose_forcefully(peer.transport)  # EOF with no GOAWAY
            with trio.fail_after(5):
                while len(errors) < 2:
                    await trio.sleep(0)
            assert all(isinstance(e.__cause__, muxstream.MuxstreamError) for e in errors)
            nursery.cancel_scope.cancel()


async def test_open_stream_times_out_without_reply(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        session, peer = await _session_with_raw_peer(nursery, open_timeout=5)
        with pytest.raises(muxstream.StreamOpenTimeout):
            await session.open_stream()
        assert trio.current_time() == pytest.approx(5)
        # The abandoned stream is reset so the peer can forget it.
        with trio.fail_after(1):
            while not any(isinstance(e, StreamReset) for e in peer.events):
                await peer.read_events()
        assert any(isinstance(e, StreamOpened) for e in peer.events)
        nursery.cancel_scope.cancel()


async def test_keepalive_breaks_session_when_peer_stops_answering(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        a, b = trio.testing.memory_stream_pair()
        session = start_session(nursery, a, role=CLIENT, keepalive_interval=5, ping_timeout=3)

        async def deaf_peer() -> None:  # reads everything, answers nothing
            while await b.receive_some():
                pass

        nursery.start_soon(deaf_peer)
        with pytest.raises(trio.BrokenResourceError) as info:
            await session.accept()
        assert isinstance(info.value.__cause__, muxstream.KeepaliveTimeout)
        assert 8 <= trio.current_time() < 9
        nursery.cancel_scope.cancel()


async def test_close_is_bounded_when_peer_never_sends_eof(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        session, peer = await _session_with_raw_peer(nursery, close_timeout=7)

        async def never_closes() -> None:  # reads, answers pings, never EOF
            while await peer.read_events():
                await peer.flush()
            await trio.sleep_forever()

        nursery.start_soon(never_closes)
        start = trio.current_time()
        await session.aclose()
        assert trio.current_time() - start == pytest.approx(7, abs=0.01)
        assert session.closed
        assert any(isinstance(e, GoAwayReceived) for e in peer.events)
        nursery.cancel_scope.cancel()


async def test_peer_pings_are_answered_while_we_drain_on_close() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            session, peer = await _session_with_raw_peer(nursery)
            closing = trio.Event()

            async def close() -> None:
                await session.aclose()
                closing.set()

            nursery.start_soon(close)
            # Read until the session's FIN (GOAWAY, then EOF).
            while await peer.read_events() or peer.connection.goaway_received is False:
                pass
            assert peer.connection.goaway_received
            peer.connection.ping()
            await peer.flush()  # a ping after their FIN: still read (drained) on their side
            await peer.transport.send_eof()
            await closing.wait()
            assert not any(isinstance(e, PingReceived) for e in peer.events)


async def test_both_sides_closing_at_once_lose_nothing(make_link) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        link = await make_link()
        payload = b"z" * (3 * 1024 * 1024)
        async with open_session_pair(link, **NO_KEEPALIVE) as (client, server):
            ours, theirs = await _open_accepted(client, server)
            got: list[bytes] = []

            async def receive() -> None:
                got.append(await theirs.receive_all())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                await ours.send_all(payload)
                nursery.start_soon(client.aclose)
                nursery.start_soon(server.aclose)
        assert hashlib.sha256(got[0]).digest() == hashlib.sha256(payload).digest()


async def test_cancelled_close_resets_and_closes_hard(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        session, _peer = await _session_with_raw_peer(nursery, close_timeout=100)
        with trio.move_on_after(1):
            await session.aclose()  # the raw peer never answers: cancelled here
        assert session.closed
        with pytest.raises(trio.ClosedResourceError):
            await session.open_stream()
        nursery.cancel_scope.cancel()


async def test_accept_backlog_refuses_excess_streams() -> None:
    with trio.fail_after(10):
        async with open_session_pair(accept_backlog=2, **NO_KEEPALIVE) as (client, server):
            async with trio.open_nursery() as nursery:
                results: list[object] = []

                async def opener() -> None:
                    try:
                        results.append(await client.open_stream(timeout=5))
                    except trio.BrokenResourceError as exc:
                        results.append(exc)

                for _ in range(3):
                    nursery.start_soon(opener)
                await trio.testing.wait_all_tasks_blocked()
                await server.accept()
                await server.accept()
            refused = [r for r in results if isinstance(r, trio.BrokenResourceError)]
            assert len(refused) == 1
            cause = refused[0].__cause__
            assert isinstance(cause, muxstream.StreamResetError)
            assert cause.status == RstStatus.REFUSED_STREAM


async def test_goaway_from_peer_blocks_new_streams() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            session, peer = await _session_with_raw_peer(nursery)
            peer.connection.go_away()
            await peer.flush()
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BrokenResourceError) as info:
                await session.open_stream()
            assert isinstance(info.value.__cause__, muxstream.SessionGoneAway)
            nursery.cancel_scope.cancel()


async def test_idle_timeout_closes_an_unused_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session_pair(idle_timeout=60, **NO_KEEPALIVE) as (client, server):
        await trio.sleep(61)
        assert client.closed and server.closed


async def test_data_from_a_spdystream_like_peer_beyond_the_window_is_accepted() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            session, peer = await _session_with_raw_peer(nursery, initial_window=4096)
            peer.connection = Connection(Role.SERVER, announce=False)
            sid = peer.connection.open_stream({"streamtype": "stdout"})
            await peer.flush()
            stream = await session.accept()
            while not any(isinstance(e, ReplyReceived) for e in await peer.read_events()):
                pass
            peer.connection.peer_flow_control = False  # spdystream ignores windows
            peer.connection.send_data(sid, b"q" * 100_000, end_stream=True)
            await peer.flush()
            assert await stream.receive_all() == b"q" * 100_000
            assert not any(isinstance(e, DataReceived) for e in peer.events)
            nursery.cancel_scope.cancel()


async def test_pings_do_not_count_as_activity_for_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        a, b = trio.testing.memory_stream_pair()
        pinger = start_session(nursery, a, role=CLIENT, keepalive_interval=10)
        idler = start_session(nursery, b, role=SERVER, keepalive_interval=None, idle_timeout=60)
        await trio.sleep(59)
        assert not idler.closed and pinger.pings_sent >= 5
        await trio.sleep(2)
        assert idler.closed
        nursery.cancel_scope.cancel()


async def test_data_keeps_an_idle_timeout_session_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session_pair(idle_timeout=60, **NO_KEEPALIVE) as (client, server):
        ours, theirs = await _open_accepted(client, server)
        for _ in range(10):
            await trio.sleep(30)
            await ours.send_all(b"tick")
            assert await theirs.receive_some() == b"tick"
        assert not client.closed and not server.closed


async def test_reset_with_an_impossible_status_raises_instead_of_doing_nothing() -> None:
    with trio.fail_after(10):
        async with open_session_pair(**NO_KEEPALIVE) as (client, server):
            ours, _theirs = await _open_accepted(client, server)
            with pytest.raises(ValueError):
                ours.reset(1 << 32)
            await ours.send_all(b"still open")
