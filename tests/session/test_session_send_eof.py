"""``Stream.send_all(data, eof=True)``: data and FIN in one call and one frame.

A short exchange (exec's stdin, an RPC body) sends its bytes then half-closes;
with ``eof=True`` the FIN rides on the last DATA frame, as h2's ``end_stream``
does, instead of following as an empty DATA frame.
"""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

from muxstream.protocol import DataReceived, Flag, StreamOpened
from muxstream.testing import open_session_pair

from ._helpers import NO_KEEPALIVE, data_frames, echo_each_stream, raw_server, start_client


async def test_send_all_with_eof_delivers_data_then_eof(make_link) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(20):
        async with open_session_pair(await make_link(), **NO_KEEPALIVE) as (client, server):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(echo_each_stream, server, reverse=True))
                for size in (1, 100, 70_000, 1 << 20):
                    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
                    stream = await client.open_stream()
                    await stream.send_all(payload, eof=True)
                    with trio.testing.assert_checkpoints():
                        await stream.send_eof()  # already half-closed: a no-op
                    try:
                        await stream.send_all(b"more")
                    except trio.ClosedResourceError:
                        pass
                    else:  # pragma: no cover - the failure being tested for
                        raise AssertionError("send_all after eof=True must raise")
                    assert await stream.receive_all() == payload[::-1]
                    await stream.aclose()
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize("payload", [b"hello", b""])
async def test_a_short_send_with_eof_is_one_data_frame_carrying_fin(payload: bytes) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            session, b = start_client(nursery)
            wire = raw_server(b)
            stream = await session.open_stream(wait_reply=False)
            await stream.send_all(payload, eof=True)  # b"": the same as send_eof()
            while not any(f.flags & Flag.FIN for f in data_frames(wire)):
                await wire.pump()
            assert [(f.data, f.flags) for f in data_frames(wire)] == [(payload, Flag.FIN)]
            nursery.cancel_scope.cancel()


async def test_fin_rides_only_on_the_last_piece_when_the_window_splits_the_send() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            session, b = start_client(nursery)
            wire = raw_server(b, initial_window=64 * 1024)  # the peer's window splits 200 KiB
            payload = b"w" * (200 * 1024)

            async def far_end() -> None:
                while True:
                    await wire.pump()
                    for ev in wire.events:
                        if isinstance(ev, StreamOpened):
                            wire.connection.send_reply(ev.stream_id)
                        elif isinstance(ev, DataReceived):
                            # read everything at once: credit the window back
                            wire.connection.acknowledge_received_data(ev.stream_id, len(ev.data))
                    wire.events.clear()
                    out = wire.connection.data_to_send()
                    if out:
                        await wire.transport.send_all(out)

            nursery.start_soon(far_end)
            stream = await session.open_stream()
            await stream.send_all(payload, eof=True)
            while not any(f.flags & Flag.FIN for f in data_frames(wire)):
                await trio.sleep(0)
            pieces = [f for f in data_frames(wire) if f.data or f.flags]
            assert b"".join(f.data for f in pieces) == payload
            assert len(pieces) > 1
            fins = [bool(f.flags & Flag.FIN) for f in pieces]
            assert fins == [False] * (len(pieces) - 1) + [True]
            assert all(f.data for f in pieces)  # no empty FIN frame after the data
            nursery.cancel_scope.cancel()


async def test_a_stream_ended_both_ways_by_send_all_eof_leaves_the_table() -> None:
    with trio.fail_after(10):
        async with open_session_pair(**NO_KEEPALIVE) as (client, server):
            stream = await client.open_stream(wait_reply=False)  # the reply comes on accept()
            peer = await server.accept()
            await peer.send_all(b"first", eof=True)
            assert await stream.receive_all() == b"first"
            assert client.statistics().streams_open == 1
            await stream.send_all(b"second", eof=True)
            # both FINs are through: the slot is free before aclose()
            assert client.statistics().streams_open == 0
            assert await peer.receive_all() == b"second"
