"""The accept backlog: streams the peer opened that wait for ``Session.accept()``."""

from __future__ import annotations

from collections import deque

from trio.lowlevel import ParkingLot

from ._stream import Stream, StreamCore


class AcceptQueue:
    """Streams waiting for ``accept()``, bounded in number and in header bytes.

    Header blocks compress ~1000:1, so counting streams alone would let a peer
    park ``accept_backlog`` x ``max_header_block`` of headers for a few hundred
    bytes on the wire: the backlog also counts the header bytes it holds, and
    refuses a stream that would pass ``byte_limit`` -- except when the queue is
    empty, so one stream always gets in whatever its headers' size.
    """

    __slots__ = ("byte_limit", "entries", "header_bytes", "limit", "lot")

    def __init__(self, limit: int, byte_limit: int) -> None:
        self.limit = limit
        self.byte_limit = byte_limit
        #: (stream, its core, its header bytes)
        self.entries: deque[tuple[Stream, StreamCore, int]] = deque()
        self.header_bytes = 0
        #: accept() parks here
        self.lot = ParkingLot()

    def __len__(self) -> int:
        return len(self.entries)

    def admits(self, header_bytes: int) -> bool:
        """Whether a stream with this many header bytes may wait (else REFUSED_STREAM)."""
        entries = self.entries
        return len(entries) < self.limit and not (
            entries and self.header_bytes + header_bytes > self.byte_limit)

    def push(self, stream: Stream, core: StreamCore, header_bytes: int) -> None:
        self.header_bytes += header_bytes
        self.entries.append((stream, core, header_bytes))
        self.lot.unpark_all()

    def pop(self) -> tuple[Stream, StreamCore] | None:
        """The longest-waiting stream, or None."""
        if not self.entries:
            return None
        stream, core, header_bytes = self.entries.popleft()
        self.header_bytes -= header_bytes
        return stream, core

    def waiting_ids(self) -> set[int]:
        return {core.stream_id for _stream, core, _n in self.entries}

    def take_all(self) -> list[StreamCore]:
        """Empty the queue (the session is closing); return what waited."""
        cores = [core for _stream, core, _n in self.entries]
        self.entries.clear()
        self.header_bytes = 0
        return cores

    def wake_all(self) -> None:
        for _stream, core, _n in self.entries:
            core.wake()
        self.lot.unpark_all()
