"""The accept backlog is bounded in header bytes, not only in streams.

Header blocks compress about 1000:1: 128 waiting streams with 200 KiB of headers
each would park 25 MiB per session for a few hundred bytes on the wire.
"""

from __future__ import annotations

import trio
import trio.testing

from muxstream import SERVER, SessionOptions
from muxstream.protocol import Connection, Role, RstStatus, StreamReset
from muxstream.testing import start_session

BIG = "a" * 200_000  # 200 KB of header value, a few hundred bytes compressed


async def _pump(peer: Connection, transport: trio.abc.Stream, events: list[object]) -> None:
    while True:
        data = await transport.receive_some()
        if not data:
            return
        events += peer.receive_data(data)


async def test_big_headers_fill_the_backlog_by_bytes_and_are_refused() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a, b = trio.testing.memory_stream_pair()
            session = start_session(nursery, a, role=SERVER, keepalive_interval=None)
            peer = Connection(Role.CLIENT)
            events: list[object] = []
            nursery.start_soon(_pump, peer, b, events)
            ids = [peer.open_stream({"x": BIG}) for _ in range(20)]
            wire = peer.data_to_send()
            assert len(wire) < 100_000  # the attack is cheap on the wire
            await b.send_all(wire)

            def refused() -> set[int]:
                return {e.stream_id for e in events if isinstance(e, StreamReset)
                        and e.status == RstStatus.REFUSED_STREAM}

            await trio.testing.wait_all_tasks_blocked()
            # 1 MiB / 200 KB: 5 streams wait for accept(), the other 15 are refused.
            assert refused() == set(ids[5:])
            assert session.statistics().streams_waiting == 5
            waiting = session.statistics().waiting_header_bytes
            assert waiting <= SessionOptions().accept_backlog_bytes
            first = await session.accept()
            assert first.stream_id == ids[0]
            # accept() made room for one more.
            extra = peer.open_stream({"x": BIG})
            await b.send_all(peer.data_to_send())
            await trio.testing.wait_all_tasks_blocked()
            assert extra not in refused()
            for expected in [*ids[1:5], extra]:
                assert (await session.accept()).stream_id == expected
            assert session.statistics().waiting_header_bytes == 0
            nursery.cancel_scope.cancel()


async def test_one_stream_is_let_in_whatever_its_headers_size() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a, b = trio.testing.memory_stream_pair()
            session = start_session(nursery, a, role=SERVER, keepalive_interval=None,
                                    accept_backlog_bytes=1000)
            peer = Connection(Role.CLIENT)
            events: list[object] = []
            nursery.start_soon(_pump, peer, b, events)
            sid = peer.open_stream({"x": BIG})
            second = peer.open_stream({"y": "small"})
            await b.send_all(peer.data_to_send())
            stream = await session.accept()
            assert stream.stream_id == sid and stream.headers["x"] == BIG
            await trio.testing.wait_all_tasks_blocked()
            assert any(isinstance(e, StreamReset) and e.stream_id == second for e in events)
            nursery.cancel_scope.cancel()


