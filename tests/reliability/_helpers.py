"""Shared helpers for the reliability tests: a raw peer against a live Session,
memory measurement, and fd/task counting.

Imported relatively (``from ._helpers import ...``), as tests/remote does.
"""

from __future__ import annotations

import os
import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import trio

import muxstream
from muxstream import SERVER, Session
from muxstream.protocol import (
    SPDY3_DICTIONARY,
    Headers,
    PingFrame,
    SynStreamFrame,
    encode_frame,
)
from muxstream.testing import RawPeer, open_tcp_transport_pair, start_session

NO_KEEPALIVE = {"keepalive_interval": None}


def env_int(name: str, ci_default: int) -> int:
    """A count for a long run: ``ci_default`` unless the environment says otherwise."""
    return int(os.environ.get(name, str(ci_default)))


def syn_stream(peer: RawPeer, stream_id: int, headers: Headers | None = None) -> bytes:
    """A SYN_STREAM whose header block continues ``peer``'s zlib stream."""
    return peer.encode(SynStreamFrame(stream_id, headers or Headers()))


def data_frame(stream_id: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">II", stream_id, (flags << 24) | len(payload)) + payload


def ping_frame(ping_id: int) -> bytes:
    return encode_frame(PingFrame(ping_id))


def window_update(stream_id: int, delta: int) -> bytes:
    return struct.pack(">IIII", 0x80030009, 8, stream_id, delta)


def bomb_block(inflated_size: int) -> bytes:
    """A compressed header block (SPDY dictionary) inflating to ``inflated_size``."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_RLE, zdict=SPDY3_DICTIONARY)
    parts = [comp.compress(struct.pack(">II", 1, 1) + b"x" + struct.pack(">I", inflated_size))]
    chunk = b"a" * (1 << 20)
    for _ in range(inflated_size >> 20):
        parts.append(comp.compress(chunk))
    parts.append(comp.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(parts)


async def start_session_with_raw_peer(
    nursery: trio.Nursery, **options: object
) -> tuple[Session, RawPeer]:
    """A SERVER session over real TCP, started in ``nursery``, and its raw peer."""
    ours, theirs = await open_tcp_transport_pair()
    return start_session(nursery, ours, role=SERVER, **{**NO_KEEPALIVE, **options}), RawPeer(theirs)


class PeakMemory:
    """tracemalloc figures relative to the level when the block started, in bytes:
    ``peak`` (the most allocated at once) and ``retained`` (still held at the end)."""

    peak: int = 0
    retained: int = 0


@contextmanager
def traced_peak() -> Iterator[PeakMemory]:
    result = PeakMemory()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    try:
        yield result
    finally:
        current, peak = tracemalloc.get_traced_memory()
        result.peak = peak - base
        result.retained = current - base
        if not was_tracing:
            tracemalloc.stop()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int:
    """Tasks alive in this trio run (the whole tree under the root task)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count = 0
    stack = [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


__all__ = [
    "NO_KEEPALIVE",
    "RawPeer",
    "bomb_block",
    "data_frame",
    "env_int",
    "muxstream",
    "open_fds",
    "ping_frame",
    "start_session_with_raw_peer",
    "syn_stream",
    "task_count",
    "traced_peak",
    "window_update",
]
