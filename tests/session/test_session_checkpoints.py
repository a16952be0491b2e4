"""Cancellation never loses data, an async call is one checkpoint, not two, and
a task is woken only by what it waits for.

``receive_some`` follows trio's own sockets: it can be cancelled before it takes
anything, never after (taking the bytes and then raising ``Cancelled`` would drop
them); a call that had to wait has had its checkpoint and returns at once.
"""

from __future__ import annotations

import trio
import trio.testing

from muxstream.testing import open_session_pair

NO_KEEPALIVE = {"keepalive_interval": None}


async def _buffered_pair(session_pair, payload: bytes):  # type: ignore[no-untyped-def]
    client, server = session_pair
    stream = await client.open_stream(wait_reply=False)
    peer = await server.accept()
    await peer.send_all(payload)
    while stream.buffered < len(payload):
        await trio.sleep(0)
    return stream, peer


async def test_a_cancelled_receive_does_not_lose_buffered_data() -> None:
    with trio.fail_after(10):
        async with open_session_pair(**NO_KEEPALIVE) as pair:
            stream, _peer = await _buffered_pair(pair, b"precious")
            with trio.CancelScope() as scope:
                scope.cancel()
                await stream.receive_some()
            assert scope.cancelled_caught  # it was a checkpoint ...
            assert stream.buffered == len(b"precious")  # ... that took nothing
            assert await stream.receive_some() == b"precious"


async def test_a_cancelled_receive_at_eof_still_raises_cancelled() -> None:
    with trio.fail_after(10):
        async with open_session_pair(**NO_KEEPALIVE) as pair:
            stream, peer = await _buffered_pair(pair, b"x")
            await peer.send_eof()
            assert await stream.receive_some() == b"x"
            while not stream.eof_received:
                await trio.sleep(0)
            with trio.CancelScope() as scope:
                scope.cancel()
                await stream.receive_some()
            assert scope.cancelled_caught
            assert await stream.receive_some() == b""


async def test_a_cancelled_send_queues_nothing() -> None:
    with trio.fail_after(10):
        async with open_session_pair(**NO_KEEPALIVE) as (client, server):
            stream = await client.open_stream(wait_reply=False)
            peer = await server.accept()
            with trio.CancelScope() as scope:
                scope.cancel()
                await stream.send_all(b"not sent")
            assert scope.cancelled_caught
            await stream.send_all(b"sent", eof=True)
            assert await peer.receive_all() == b"sent"


async def test_calls_that_return_at_once_are_still_schedule_points() -> None:
    with trio.fail_after(10):
        async with open_session_pair(**NO_KEEPALIVE) as pair:
            stream, peer = await _buffered_pair(pair, b"abc")
            with trio.testing.assert_checkpoints():
                assert await stream.receive_some() == b"abc"
            with trio.testing.assert_checkpoints():
                await stream.send_all(b"def")
            assert await peer.receive_some() == b"def"


async def test_a_receive_that_waited_returns_without_a_second_yield() -> None:
    """The wait was the checkpoint: no extra pass through the scheduler after it."""
    with trio.fail_after(10):
        async with open_session_pair(**NO_KEEPALIVE) as (client, server):
            stream = await client.open_stream(wait_reply=False)
            peer = await server.accept()
            await stream.wait_reply()  # the reply is in: only the data will wake it
            yields = 0

            class Count(trio.abc.Instrument):
                def before_task_step(self, task: trio.lowlevel.Task) -> None:
                    nonlocal yields
                    if task is me:
                        yields += 1

            me = trio.lowlevel.current_task()
            async with trio.open_nursery() as nursery:

                async def later() -> None:
                    await trio.sleep(0.01)
                    await peer.send_all(b"late")

                nursery.start_soon(later)
                instrument = Count()
                trio.lowlevel.add_instrument(instrument)
                try:
                    assert await stream.receive_some() == b"late"
                finally:
                    trio.lowlevel.remove_instrument(instrument)
            assert yields == 1  # resumed once, by the data; no checkpoint after it


async def test_the_reply_does_not_wake_a_receiver_that_waits_for_data() -> None:
    """After open_stream(wait_reply=False), SYN_REPLY wakes reply waiters only."""
    with trio.fail_after(10):
        async with open_session_pair(**NO_KEEPALIVE) as (client, server):
            await client.ping()  # the SETTINGS exchange is over (it wakes every stream)
            stream = await client.open_stream(wait_reply=False)
            steps = 0
            got = []

            async def receiver() -> None:
                got.append(await stream.receive_some())

            class Count(trio.abc.Instrument):
                def before_task_step(self, task: trio.lowlevel.Task) -> None:
                    nonlocal steps
                    if task.name.endswith("receiver"):
                        steps += 1

            instrument = Count()
            trio.lowlevel.add_instrument(instrument)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receiver)
                    peer = await server.accept()  # sends SYN_REPLY
                    await trio.testing.wait_all_tasks_blocked()  # the reply is in
                    await trio.sleep(0.01)
                    assert steps == 1  # started and parked; the reply did not wake it
                    await peer.send_all(b"data")
            finally:
                trio.lowlevel.remove_instrument(instrument)
            assert got == [b"data"] and steps == 2
