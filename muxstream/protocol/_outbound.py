"""The outbound queues: what a Connection has queued for the wire, in what order.

*Urgent* frames (PING and its echo, WINDOW_UPDATE, RST_STREAM, SETTINGS,
SYN_STREAM, SYN_REPLY) are handed out before *ordered* ones (DATA, FIN, HEADERS,
graceful GOAWAY), so a ping's round trip does not wait behind bulk data. GOAWAY
is ordered on purpose: spdystream stops reading the connection at GOAWAY, so
anything written after it would be lost. Frames with header blocks are
compressed when handed out, which keeps the single zlib stream in wire order
whatever the queues do.
"""

from __future__ import annotations

from collections import deque

from ._constants import Flag
from ._frames import Frame, encode_data_header, encode_frame
from ._header_block import HeaderCompressor
from ._state import StreamRecord

Outbound = bytes | memoryview | Frame
#: An ordered item: the stream it belongs to (None: the session), its size as
#: counted in ``ordered_bytes``, and the bytes or frame itself (a DATA frame is
#: its header and payload, one entry, so nothing can come between them).
Ordered = tuple[StreamRecord | None, int, Outbound | tuple[bytes, memoryview]]


class OutboundQueues:
    """The urgent and the ordered queue, and what handing them out counts."""

    __slots__ = ("answers", "bytes_sent", "compressor", "ordered", "ordered_bytes", "urgent")

    def __init__(self) -> None:
        self.compressor = HeaderCompressor()
        self.urgent: deque[Outbound] = deque()
        self.ordered: deque[Ordered] = deque()
        #: bytes of the ordered items not handed out yet
        self.ordered_bytes = 0
        #: urgent frames that answer the peer (PING echoes, RST_STREAMs) not handed out
        self.answers = 0
        self.bytes_sent = 0

    def _encode(self, item: Outbound) -> bytes | memoryview:
        if isinstance(item, bytes | memoryview):
            return item
        return encode_frame(item, self.compressor)

    def buffers_to_send(self, max_bytes: int | None = None) -> list[bytes | memoryview]:
        """Hand out queued bytes: every urgent frame, then ordered ones up to ``max_bytes``.

        The buffers must be written in order, all of them. At least one ordered
        buffer is handed out when any is queued, whatever ``max_bytes``.
        """
        out: list[bytes | memoryview] = []
        size = 0
        urgent = self.urgent
        while urgent:
            b = self._encode(urgent.popleft())
            out.append(b)
            size += len(b)
        self.answers = 0
        ordered = self.ordered
        limit = max_bytes if max_bytes is not None else 1 << 62
        first = True
        while ordered and (size < limit or first):
            first = False
            owner, counted, item = ordered.popleft()
            if owner is not None:
                owner.queued -= 1
            self.ordered_bytes -= counted
            if isinstance(item, tuple):
                out += item
                size += counted
                continue
            b = self._encode(item)
            out.append(b)
            size += len(b)
        if not ordered:
            self.ordered_bytes = 0
        self.bytes_sent += size
        self.compressor.release()  # rebuilt for the next batch with a header block
        return out

    def queue_ordered(
        self, item: Outbound | tuple[bytes, memoryview], size: int,
        owner: StreamRecord | None = None,
    ) -> None:
        self.ordered.append((owner, size, item))
        self.ordered_bytes += size
        if owner is not None:
            owner.queued += 1

    def discard(self, st: StreamRecord) -> int:
        """Drop a reset stream's queued frames: nothing may follow RST_STREAM on the
        wire (the peer would answer DATA on a closed stream with a stream error).
        Returns the DATA payload bytes dropped (the peer will never credit them)."""
        if not st.queued:
            return 0
        dropped = 0
        kept: deque[Ordered] = deque()
        for entry in self.ordered:
            if entry[0] is st:
                self.ordered_bytes -= entry[1]
                if isinstance(entry[2], tuple):
                    dropped += len(entry[2][1])
            else:
                kept.append(entry)
        self.ordered = kept
        st.queued = 0
        return dropped

    def fin_on_queued_data(self, st: StreamRecord) -> bool:
        """Set FIN on this stream's DATA frame if it is the last one queued.

        ``send_all(data)`` then ``send_eof()`` costs one frame instead of two
        whenever the data has not been handed out yet (h2 peers do the same
        with ``end_stream``); nothing else may sit between them in the queue.
        """
        ordered = self.ordered
        if not st.queued or not ordered:
            return False
        owner, counted, item = ordered[-1]
        if owner is not st or not isinstance(item, tuple):
            return False
        payload = item[1]
        ordered[-1] = (owner, counted,
                       (encode_data_header(st.stream_id, len(payload), Flag.FIN), payload))
        return True

    def drop_ordered(self) -> None:
        """A session error: nothing ordered goes out any more."""
        self.ordered.clear()
        self.ordered_bytes = 0
