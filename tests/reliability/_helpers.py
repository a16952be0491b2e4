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
from dataclasses import dataclass, field

import trio

import muxstream
from muxstream import SERVER, Session, SessionOptions
from muxstream.protocol import (
    SPDY3_DICTIONARY,
    Event,
    Frame,
    FrameDecoder,
    HeaderCompressor,
    Headers,
    PingFrame,
    encode_frame,
)
from muxstream.testing import open_tcp_transport_pair

NO_KEEPALIVE = {"keepalive_interval": None}


def env_int(name: str, ci_default: int) -> int:
    """A count for a long run: ``ci_default`` unless the environment says otherwise."""
    return int(os.environ.get(name, str(ci_default)))


@dataclass
class RawPeer:
    """The client end of a session, driven by hand over a real socket.

    ``decoder`` parses what the session sends without any state checks, so a
    peer that breaks the protocol can still see every answer (RST, GOAWAY, PING).
    """

    transport: trio.abc.Stream
    compressor: HeaderCompressor = field(default_factory=HeaderCompressor)
    decoder: FrameDecoder = field(default_factory=FrameDecoder)
    frames: list[Frame] = field(default_factory=list)

    async def send(self, data: bytes) -> None:
        await self.transport.send_all(data)

    def syn_stream(self, stream_id: int, headers: Headers | None = None, flags: int = 0) -> bytes:
        """A SYN_STREAM whose header block continues this peer's zlib stream."""
        block = self.compressor.compress(headers or Headers())
        payload = struct.pack(">IIBB", stream_id, 0, 0, 0) + block
        return struct.pack(">II", 0x80030001, (flags << 24) | len(payload)) + payload

    async def read_frames(self, max_bytes: int = 1 << 20) -> list[Frame] | None:
        """Decode the next chunk of what the session wrote; None at EOF."""
        try:
            data = await self.transport.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        if not data:
            return None
        self.decoder.receive(data)
        out: list[Frame] = []
        while (frame := self.decoder.next_frame()) is not None:
            out.append(frame)
        self.frames += out
        return out


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
    session = Session(ours, SERVER, SessionOptions.from_kwargs({**NO_KEEPALIVE, **options}))
    session._start(nursery)
    return session, RawPeer(theirs)


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
    "Event",
    "RawPeer",
    "bomb_block",
    "data_frame",
    "env_int",
    "muxstream",
    "open_fds",
    "ping_frame",
    "start_session_with_raw_peer",
    "task_count",
    "traced_peak",
    "window_update",
]
