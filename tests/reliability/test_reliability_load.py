"""Load: many concurrent sessions x many streams moving data on loopback, nothing lost.

Each client stream sends pseudo-random chunks for a bounded time, then FIN; the
server echoes every stream; the client compares SHA-256 digests of what it sent
and what came back. Afterwards no Session or Stream object may survive, no fd or
task may leak, and a second round must not grow the process (memory flat).

CI: ``MUXSTREAM_LOAD_SESSIONS`` x ``MUXSTREAM_LOAD_STREAMS`` = 10 x 10 for
``MUXSTREAM_LOAD_SECONDS`` = 2. The full run (docs/reliability.md) is 100 x 100.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import os

import trio

import muxstream
from muxstream import Session, Stream

from ._helpers import env_int, open_fds, task_count

SESSIONS = env_int("MUXSTREAM_LOAD_SESSIONS", 10)
STREAMS = env_int("MUXSTREAM_LOAD_STREAMS", 10)
SECONDS = float(os.environ.get("MUXSTREAM_LOAD_SECONDS", "2"))
# Under full load on 2 cores a SYN_REPLY can queue behind megabytes already in the
# kernel's buffers (NOTSENT_LOWAT only bounds the unsent part): generous timeouts.
OPTIONS = {"keepalive_interval": 5.0, "ping_timeout": 60.0, "close_timeout": 60.0,
           "open_timeout": 120.0}


def _rss() -> int:
    """Resident memory after giving free heap pages back to the OS (glibc keeps
    them otherwise, which would read as growth where nothing is alive)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _echo_server(session: Session) -> None:
    async def echo(stream: Stream) -> None:
        while data := await stream.receive_some():
            await stream.send_all(data)
        await stream.send_eof()

    async with trio.open_nursery() as nursery:
        async for stream in session:
            nursery.start_soon(echo, stream)


async def _client(port: int, index: int, totals: dict[str, int]) -> None:
    async with muxstream.open_tcp_session("127.0.0.1", port, **OPTIONS) as session:

        # Open every stream first, then move data on all of them at once.
        streams = [await session.open_stream({"load": f"{index}/{n}"}) for n in range(STREAMS)]

        async def one(n: int) -> None:
            stream = streams[n]
            sent, got = hashlib.sha256(), hashlib.sha256()
            received = 0
            seed = hashlib.sha256(b"%d/%d" % (index, n)).digest()

            async def send() -> None:
                nonlocal seed
                deadline = trio.current_time() + SECONDS
                size = 0
                while trio.current_time() < deadline:
                    seed = hashlib.sha256(seed).digest()
                    chunk = seed * (1 + seed[0] * 4)  # 32 B .. 32 KiB
                    await stream.send_all(chunk)
                    sent.update(chunk)
                    size += len(chunk)
                totals["sent"] += size
                await stream.send_eof()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                while data := await stream.receive_some():
                    got.update(data)
                    received += len(data)
            totals["received"] += received
            if sent.digest() != got.digest():
                totals["corrupt"] += 1
            totals["streams"] += 1

        async with trio.open_nursery() as nursery:
            for n in range(STREAMS):
                nursery.start_soon(one, n)


async def _round(port: int) -> dict[str, int]:
    totals = {"sent": 0, "received": 0, "corrupt": 0, "streams": 0}
    async with trio.open_nursery() as nursery:
        for i in range(SESSIONS):
            nursery.start_soon(_client, port, i, totals)
    return totals


def _alive(kind: type) -> int:
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


async def test_many_sessions_and_streams_lose_nothing_and_leave_nothing() -> None:
    gc.collect()  # close what earlier tests left for the collector before counting
    fds, tasks = open_fds(), task_count()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(lambda task_status: muxstream.serve_tcp(
            _echo_server, 0, task_status=task_status, **OPTIONS))
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(120 + SESSIONS * STREAMS * 0.2 + SECONDS * 4):
            first = await _round(port)
            gc.collect()
            rss_after_first = _rss()
            second = await _round(port)
        nursery.cancel_scope.cancel()
    gc.collect()
    rss_after_second = _rss()
    for totals in (first, second):
        assert totals["streams"] == SESSIONS * STREAMS
        assert totals["corrupt"] == 0
        assert totals["received"] == totals["sent"] > 0
    assert _alive(Session) == 0
    assert _alive(Stream) == 0
    with trio.fail_after(10):
        while task_count() > tasks:
            await trio.sleep(0.01)
    assert open_fds() <= fds  # fewer is fine (others' leftovers collected meanwhile)
    # Memory flat: the second round reuses what the first one freed.
    growth = rss_after_second - rss_after_first
    print(f"load: {SESSIONS}x{STREAMS} streams, {first['sent'] + second['sent']} bytes each "
          f"way, RSS after round 1: {rss_after_first / 2**20:.1f} MiB, growth over round 2: "
          f"{growth / 2**20:.1f} MiB")
    assert growth < max(32 << 20, rss_after_first // 5), growth
