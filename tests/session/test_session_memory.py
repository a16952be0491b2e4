"""What a session holds while idle, and that what it shares stays correct.

Every TCP session of a trio run reads into one shared receive buffer (an idle
session holds none of its own), which is safe only because the reader uses the
bytes up before any other reader can run. These tests pin both halves: the
memory an idle session allocates (tracemalloc counts allocations, not time), and
the integrity of concurrent transfers on many sessions that read through the
shared buffer at once.
"""

from __future__ import annotations

import gc
import hashlib
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio
import trio.testing

from muxstream import CLIENT, Session
from muxstream._reader import _RECV_SIZE
from muxstream.testing import open_session_pair, open_tcp_transport_pair, start_session

from ._helpers import NO_KEEPALIVE


@asynccontextmanager
async def tcp_session_pairs(
    n: int, **options: Any,
) -> AsyncIterator[list[tuple[Session, Session]]]:
    """``n`` connected (client, server) session pairs over real TCP."""
    async with AsyncExitStack() as stack:
        pairs = [await stack.enter_async_context(open_session_pair(
            await open_tcp_transport_pair(), **{**NO_KEEPALIVE, **options})) for _ in range(n)]
        yield pairs


async def exchange(client: Session, server: Session) -> None:
    """One stream opened and one message through it (the stream stays open)."""
    stream = await client.open_stream(wait_reply=False)
    await stream.send_all(b"x")
    peer = await server.accept()
    assert await peer.receive_some() == b"x"
    await stream.wait_reply()


async def test_idle_tcp_sessions_hold_no_receive_buffer_of_their_own() -> None:
    # A 1 MiB buffer per session was most of an idle session's memory: 20 idle
    # session pairs now allocate far less than one such buffer per session.
    n = 20
    with trio.fail_after(20):
        async with tcp_session_pairs(1) as (warm,):  # the run's shared buffer is made here
            await exchange(*warm)
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                async with tcp_session_pairs(n) as pairs:
                    for client, server in pairs:
                        await exchange(client, server)
                    gc.collect()
                    grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
    assert grown / (2 * n) < _RECV_SIZE / 4, f"{grown / (2 * n) / 1024:.0f} KiB per session"


async def test_concurrent_sessions_reading_through_the_shared_buffer_lose_nothing() -> None:
    # Small frames make each reader read large chunks into the shared buffer
    # (large frames' payloads are read into their own bytes); with several
    # sessions receiving at once, a reader that yielded to the scheduler
    # between its read and the decoder would find its bytes overwritten by
    # another session's read.
    sessions, size, piece = 4, 8 << 20, 256 * 1024

    async def send(client: Session, seed: int, digests: dict[int, str]) -> None:
        data = hashlib.shake_256(bytes([seed])).digest(size)
        digests[seed] = hashlib.sha256(data).hexdigest()
        stream = await client.open_stream({"seed": str(seed)}, wait_reply=False)
        view = memoryview(data)
        for start in range(0, size, piece):
            await stream.send_all(view[start:start + piece])
        await stream.send_eof()
        await stream.receive_some()  # the receiver's reply: it has everything
        await stream.aclose()

    async def receive(server: Session, got: dict[int, str]) -> None:
        stream = await server.accept()
        digest = hashlib.sha256()
        received = 0
        while data := await stream.receive_some():
            digest.update(data)
            received += len(data)
        got[int(stream.headers["seed"])] = digest.hexdigest()
        await stream.send_all(b"done", eof=True)
        await stream.aclose()

    sent: dict[int, str] = {}
    got: dict[int, str] = {}
    with trio.fail_after(30):
        async with tcp_session_pairs(sessions, max_frame_size=1024) as pairs:
            async with trio.open_nursery() as nursery:
                for seed, (client, server) in enumerate(pairs):
                    nursery.start_soon(receive, server, got)
                    nursery.start_soon(send, client, seed, sent)
    assert got == sent


def _tasks_under(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    found = []
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            found.append(child)
            found += _tasks_under(child)
    return found


async def test_a_session_runs_one_timer_task_for_pings_keepalive_and_idle_timeout() -> None:
    # A task and its sleep cost an idle session ~3.5 KiB: PING deadlines,
    # keepalive and the idle timeout share one task (next to the reader and
    # the writer, and the task that holds their nursery).
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a, _b = trio.testing.memory_stream_pair()
            start_session(nursery, a, role=CLIENT, keepalive_interval=5, idle_timeout=60)
            await trio.testing.wait_all_tasks_blocked()
            names = sorted(t.name.rsplit(".", 1)[-1] for t in _tasks_under(
                trio.lowlevel.current_task()))
            assert names == ["_run_tasks", "run", "run", "run_timers"]
            nursery.cancel_scope.cancel()
