"""The sans-IO SPDY/3.1 connection: stream states, ids, pings, GOAWAY, flow control.

Theory of operation
-------------------
A :class:`Connection` is a pure state machine. The caller feeds it the bytes it
read (:meth:`Connection.receive_data` returns :mod:`events <._events>`), calls
verbs for what the application wants (:meth:`open_stream`, :meth:`send_data`,
...), and writes whatever :meth:`data_to_send` / :meth:`buffers_to_send` hand
out. It never blocks, never reads a clock, never touches a socket.

Outbound frames sit in two queues. *Urgent* frames (PING and its echo,
WINDOW_UPDATE, RST_STREAM, SETTINGS, SYN_STREAM, SYN_REPLY) are handed out before
*ordered* ones (DATA, FIN, HEADERS, graceful GOAWAY), so a ping's round trip does
not wait behind bulk data. GOAWAY is ordered on purpose: spdystream stops reading
the connection at GOAWAY, so anything written after it would be lost. Frames with
header blocks are compressed when handed out, which keeps the single zlib stream
in wire order whatever the queues do.

Stream states (one table; "local" = this side, "remote" = the peer)::

    state                 we may send   peer may send   on our FIN            on their FIN
    OPEN                  yes           yes             HALF_CLOSED_LOCAL     HALF_CLOSED_REMOTE
    HALF_CLOSED_LOCAL     no            yes             -                     CLOSED
    HALF_CLOSED_REMOTE    yes           no              CLOSED                -
    CLOSED / RESET        no            no              (removed from the table)

RST_STREAM in either direction moves any state to RESET. A stream opened with
FIN (or UNIDIRECTIONAL, for the side that may not send) starts half-closed.

Flow control (SPDY/3.1): a window per stream and one for the session (stream id
0), opened by WINDOW_UPDATE. muxstream announces its windows at start (SETTINGS
INITIAL_WINDOW_SIZE, then WINDOW_UPDATE on stream 0) and credits them back as
the application consumes data. Windows are enforced *only with a peer that
announced flow control* (sent SETTINGS INITIAL_WINDOW_SIZE or any WINDOW_UPDATE):
moby/spdystream never does, and ignores ours, so against it we neither stall
waiting for credit nor reject its data; the session then falls back to TCP
backpressure. So windows apply, both ways, only when *both* ends announced:
``announce=False`` behaves like spdystream (announces nothing, sends no
WINDOW_UPDATE, which would announce, and honours no window either way). A
muxstream peer's announcement is its very first frame, so it is known before
any of its streams or replies arrive. See docs/protocol.md.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._constants import (
    MAX_FRAME_LENGTH,
    MAX_STREAM_ID,
    MAX_WINDOW,
    SPDY_DEFAULT_WINDOW,
    Flag,
    GoAwayStatus,
    RstStatus,
    SettingsId,
)
from ._errors import FlowControlError, LocalProtocolError, RemoteProtocolError
from ._events import (
    DataReceived,
    Event,
    GoAwayReceived,
    HeadersReceived,
    PingAcked,
    PingReceived,
    ReplyReceived,
    SettingsReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
    WindowUpdated,
)
from ._frames import (
    DataFrame,
    Frame,
    FrameDecoder,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsEntry,
    SettingsFrame,
    SynReplyFrame,
    SynStreamFrame,
    WindowUpdateFrame,
    encode_data_header,
    encode_frame,
    encode_ping,
)
from ._headers import (
    DEFAULT_MAX_HEADER_BLOCK,
    DEFAULT_MAX_HEADER_COUNT,
    HeaderCompressor,
    HeaderDecompressor,
    Headers,
    HeadersLike,
    encode_header_block,
)


class Role(enum.Enum):
    """Which end of the connection we are: clients use odd ids, servers even."""

    CLIENT = "client"
    SERVER = "server"


class StreamState(enum.Enum):
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed (local)"
    HALF_CLOSED_REMOTE = "half-closed (remote)"
    CLOSED = "closed"
    RESET = "reset"


# Checked on every frame: an enum attribute lookup costs ~5x a tuple constant's.
_WE_SENT_FIN = (StreamState.HALF_CLOSED_LOCAL, StreamState.CLOSED)
_THEY_SENT_FIN = (StreamState.HALF_CLOSED_REMOTE, StreamState.CLOSED)


#: Per-stream receive window. Measured on loopback (benchmarks/, 2 cores): 1 MiB
#: runs one stream at 0.42x raw trio, 4 MiB at 0.69x, 16 MiB at 0.82x -- the
#: sender waits for WINDOW_UPDATE round trips. 4 MiB keeps 16 stalled streams
#: within the 64 MiB session window before the session itself stalls.
DEFAULT_INITIAL_WINDOW = 4 << 20
#: Session receive window: 64 stalled streams' worth before the session stalls.
DEFAULT_SESSION_WINDOW = 64 << 20
#: Concurrent streams the peer may open (Kubernetes uses a handful per request).
DEFAULT_MAX_CONCURRENT_STREAMS = 1000
#: Largest DATA frame we write to a peer that announced flow control (a muxstream
#: peer): its windows bound what is in flight, and large frames keep the per-frame
#: cost low on both ends (512 KiB frames: +30 % bulk over 128 KiB, measured).
DEFAULT_MAX_SEND_FRAME = 512 * 1024
#: ... and to a peer that did not (spdystream, Kubernetes): spdystream queues up to
#: 50 frames per worker before TCP backpressure starts, so its memory grows with
#: our frame size.
UNCONTROLLED_MAX_SEND_FRAME = 128 * 1024
#: Flag bits as plain ints: ``frame.flags & Flag.FIN`` builds an enum per test.
_FIN = int(Flag.FIN)
_UNIDIRECTIONAL = int(Flag.UNIDIRECTIONAL)
#: Streams closed by our RST whose late frames are silently dropped.
_RESET_MEMORY = 4096
#: Answers (PING echoes, RST_STREAMs) a peer may have queued but not yet read
#: before its flood is a session error. A muxstream session stops reading long
#: before (TCP backpressure); this bounds what one 1 MiB read can add (~87,000
#: PINGs fit in it), so a reading peer is refused, not cut off. ~100 B each.
DEFAULT_MAX_QUEUED_ANSWERS = 100_000


@dataclass(slots=True)
class _Stream:
    stream_id: int
    local: bool  # we opened it
    state: StreamState = StreamState.OPEN
    replied: bool = False  # SYN_REPLY exchanged
    our_window: int = 0  # what the peer may still send us
    their_window: int = 0  # what we may still send the peer
    unacked: int = 0  # consumed, not yet credited back
    queued: int = 0  # ordered items (DATA, FIN, HEADERS) queued, not yet handed out
    extra_headers: Headers | None = None  # the peer's HEADERS frames so far, merged

    @property
    def we_sent_fin(self) -> bool:
        return self.state in _WE_SENT_FIN

    @property
    def they_sent_fin(self) -> bool:
        return self.state in _THEY_SENT_FIN


_Outbound = bytes | memoryview | Frame
#: An ordered item: the stream it belongs to (None: the session), its size as
#: counted in ``ordered_bytes``, and the bytes or frame itself.
_Ordered = tuple[_Stream | None, int, _Outbound | tuple[bytes, memoryview]]


class _StreamTable(dict[int, _Stream]):
    """The stream table, counting our and the peer's streams as it changes, so the
    concurrency limits cost O(1) per SYN_STREAM (counting on demand made opening
    10,000 streams quadratic)."""

    __slots__ = ("local", "remote")

    def __init__(self) -> None:
        super().__init__()
        self.local = 0
        self.remote = 0

    def _count(self, st: _Stream, delta: int) -> None:
        if st.local:
            self.local += delta
        else:
            self.remote += delta

    def __setitem__(self, key: int, st: _Stream) -> None:
        old = self.get(key)
        if old is not None:
            self._count(old, -1)
        super().__setitem__(key, st)
        self._count(st, 1)

    def __delitem__(self, key: int) -> None:
        self._count(self[key], -1)
        super().__delitem__(key)

    def pop(self, key: int, *default: Any) -> Any:
        st = super().pop(key, *default)
        if isinstance(st, _Stream):
            self._count(st, -1)
        return st

    def clear(self) -> None:
        super().clear()
        self.local = self.remote = 0


class Connection:
    """One end of a SPDY/3.1 connection. See the module docstring."""

    def __init__(
        self,
        role: Role,
        *,
        initial_window: int = DEFAULT_INITIAL_WINDOW,
        session_window: int = DEFAULT_SESSION_WINDOW,
        max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS,
        max_send_frame: int | None = None,
        max_header_block: int = DEFAULT_MAX_HEADER_BLOCK,
        max_header_count: int = DEFAULT_MAX_HEADER_COUNT,
        max_control_frame: int | None = None,
        max_data_frame: int = MAX_FRAME_LENGTH,
        announce: bool = True,
        max_queued_answers: int = DEFAULT_MAX_QUEUED_ANSWERS,
    ) -> None:
        if not 1 <= initial_window <= MAX_WINDOW or not 1 <= session_window <= MAX_WINDOW:
            raise ValueError("windows must be 1..2**31-1")
        if max_send_frame is not None and not 1 <= max_send_frame <= MAX_FRAME_LENGTH:
            raise ValueError("max_send_frame must be 1..2**24-1")
        self.role = role
        self.initial_window = initial_window
        self.session_window = session_window
        self.max_concurrent_streams = max_concurrent_streams
        #: None: DEFAULT_MAX_SEND_FRAME once the peer announced flow control,
        #: UNCONTROLLED_MAX_SEND_FRAME until then (and for peers that never do).
        self.max_send_frame = max_send_frame
        #: bounds each header block, and all HEADERS of a stream together
        self.max_header_block = max_header_block
        self._compressor = HeaderCompressor()
        self._decoder = FrameDecoder(
            HeaderDecompressor(max_size=max_header_block, max_count=max_header_count),
            max_control_frame=max_control_frame or max_header_block + 1024,
            max_data_frame=max_data_frame,
        )
        self._streams = _StreamTable()
        self._reset_by_us: deque[int] = deque(maxlen=_RESET_MEMORY)
        self._reset_by_us_set: set[int] = set()
        self._next_stream_id = 1 if role is Role.CLIENT else 2
        self._next_ping_id = 1 if role is Role.CLIENT else 2
        self._highest_peer_stream = 0
        self._highest_local_stream = 0
        self._outstanding_pings: set[int] = set()
        self._urgent: deque[_Outbound] = deque()
        self._ordered: deque[_Ordered] = deque()
        self._ordered_bytes = 0
        #: Peer's SETTINGS, as received (id -> value).
        self.peer_settings: dict[int, int] = {}
        #: Whether we announce flow control (and so police our receive windows).
        self.announce = announce
        #: True once the peer announced flow control (SETTINGS window or WINDOW_UPDATE).
        self.peer_flow_control = False
        self._peer_initial_window = SPDY_DEFAULT_WINDOW
        self._peer_max_streams: int | None = None
        #: Session-level windows (stream 0).
        self.our_session_window = SPDY_DEFAULT_WINDOW
        self.their_session_window = SPDY_DEFAULT_WINDOW
        self._session_unacked = 0
        self.goaway_sent = False
        self.goaway_received = False
        self.peer_last_good_stream_id: int | None = None
        #: Set when a session error ended the connection.
        self.terminated: RemoteProtocolError | LocalProtocolError | None = None
        self.bytes_received = 0
        self.bytes_sent = 0
        self.max_queued_answers = max_queued_answers
        self._queued_answers = 0
        if announce:
            self._urgent.append(
                SettingsFrame(
                    (
                        SettingsEntry(SettingsId.INITIAL_WINDOW_SIZE, initial_window),
                        SettingsEntry(SettingsId.MAX_CONCURRENT_STREAMS, max_concurrent_streams),
                    )
                )
            )
            if session_window > SPDY_DEFAULT_WINDOW:
                self._urgent.append(WindowUpdateFrame(0, session_window - SPDY_DEFAULT_WINDOW))
                self.our_session_window = session_window

    # --- inspection ---------------------------------------------------------

    def stream_state(self, stream_id: int) -> StreamState:
        """The state of ``stream_id``; CLOSED for streams no longer tracked."""
        st = self._streams.get(stream_id)
        return st.state if st else StreamState.CLOSED

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def is_local_stream(self, stream_id: int) -> bool:
        return (stream_id % 2 == 1) == (self.role is Role.CLIENT)

    def sendable(self, stream_id: int) -> int:
        """How many DATA bytes :meth:`send_data` would accept on ``stream_id`` now."""
        st = self._streams.get(stream_id)
        if st is None or st.we_sent_fin or st.state is StreamState.RESET:
            return 0
        if not (self.announce and self.peer_flow_control):
            return MAX_WINDOW
        return max(0, min(st.their_window, self.their_session_window))

    def our_window(self, stream_id: int) -> int:
        """How much the peer may still send on ``stream_id`` (0 for closed streams)."""
        st = self._streams.get(stream_id)
        return st.our_window if st else 0

    @property
    def can_open_stream(self) -> bool:
        """False while the peer's MAX_CONCURRENT_STREAMS is reached."""
        if self._peer_max_streams is None:
            return True
        mine = self._streams.local
        return mine < self._peer_max_streams

    @property
    def last_good_peer_stream_id(self) -> int:
        return self._highest_peer_stream

    # --- outbound queues ----------------------------------------------------

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._urgent or self._ordered)

    @property
    def queued_answers(self) -> int:
        """PING echoes and RST_STREAMs answering the peer, queued and not handed out.

        A session stops reading while this is high: a peer that floods us
        without reading our answers then meets TCP backpressure.
        """
        return self._queued_answers

    @property
    def ordered_bytes(self) -> int:
        """Bytes of DATA (and other ordered frames) queued but not handed out."""
        return self._ordered_bytes

    def _encode(self, item: _Outbound) -> bytes | memoryview:
        if isinstance(item, bytes | memoryview):
            return item
        return encode_frame(item, self._compressor)

    def buffers_to_send(self, max_bytes: int | None = None) -> list[bytes | memoryview]:
        """Hand out queued bytes: every urgent frame, then ordered ones up to ``max_bytes``.

        The buffers must be written in order, all of them. At least one ordered
        buffer is handed out when any is queued, whatever ``max_bytes``.
        """
        out: list[bytes | memoryview] = []
        size = 0
        urgent = self._urgent
        while urgent:
            b = self._encode(urgent.popleft())
            out.append(b)
            size += len(b)
        self._queued_answers = 0
        ordered = self._ordered
        limit = max_bytes if max_bytes is not None else 1 << 62
        first = True
        while ordered and (size < limit or first):
            first = False
            owner, counted, item = ordered.popleft()
            if owner is not None:
                owner.queued -= 1
            self._ordered_bytes -= counted
            if isinstance(item, tuple):
                # A DATA frame's header and payload travel as one entry, so no
                # urgent frame can ever be handed out between them.
                out += item
                size += counted
                continue
            b = self._encode(item)
            out.append(b)
            size += len(b)
        if not ordered:
            self._ordered_bytes = 0
        self.bytes_sent += size
        return out

    def data_to_send(self, max_bytes: int | None = None) -> bytes:
        """Like :meth:`buffers_to_send`, joined into one ``bytes``."""
        return b"".join(self.buffers_to_send(max_bytes))

    def _queue_ordered(
        self, item: _Outbound | tuple[bytes, memoryview], size: int,
        owner: _Stream | None = None,
    ) -> None:
        self._ordered.append((owner, size, item))
        self._ordered_bytes += size
        if owner is not None:
            owner.queued += 1

    def _discard_queued(self, st: _Stream) -> None:
        """Drop a reset stream's queued frames: nothing may follow RST_STREAM on the
        wire (the peer would answer DATA on a closed stream with a stream error)."""
        if not st.queued:
            return
        kept: deque[_Ordered] = deque()
        for entry in self._ordered:
            if entry[0] is st:
                self._ordered_bytes -= entry[1]
                if isinstance(entry[2], tuple):
                    # a DATA payload that will never be sent: the peer never sees
                    # it, so it never credits it back; give the session window back
                    self.their_session_window += len(entry[2][1])
            else:
                kept.append(entry)
        self._ordered = kept
        st.queued = 0

    # --- local verbs --------------------------------------------------------

    def _check_usable(self) -> None:
        if self.terminated is not None:
            raise LocalProtocolError("the connection was terminated") from self.terminated

    def open_stream(
        self,
        headers: HeadersLike | Headers | None = None,
        *,
        end_stream: bool = False,
        unidirectional: bool = False,
        priority: int = 0,
        associated_stream_id: int = 0,
    ) -> int:
        """Queue SYN_STREAM for a new stream and return its id.

        Raises:
            LocalProtocolError: after GOAWAY (either way), when ids are exhausted,
                or with invalid headers.
        """
        self._check_usable()
        if self.goaway_sent or self.goaway_received:
            raise LocalProtocolError("no new streams after GOAWAY")
        sid = self._next_stream_id
        if sid > MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted")
        hdrs = headers if isinstance(headers, Headers) else Headers(headers)
        flags = Flag.NONE
        if end_stream:
            flags |= Flag.FIN
        if unidirectional:
            flags |= Flag.UNIDIRECTIONAL
        if not 0 <= priority <= 7:
            raise LocalProtocolError("priority must be 0..7")
        if not 0 <= associated_stream_id <= MAX_STREAM_ID:
            raise LocalProtocolError("associated stream id must be 0..2**31-1")
        encode_header_block(hdrs)  # validate now, before any state changes
        frame = SynStreamFrame(sid, hdrs, flags, associated_stream_id, priority)
        self._next_stream_id += 2
        self._highest_local_stream = sid
        st = _Stream(sid, local=True, our_window=self.initial_window,
                     their_window=self._peer_initial_window)
        if end_stream:
            st.state = StreamState.HALF_CLOSED_LOCAL
        if unidirectional:
            st.state = (StreamState.CLOSED if end_stream else StreamState.HALF_CLOSED_REMOTE)
        self._streams[sid] = st
        self._urgent.append(frame)
        if st.state is StreamState.CLOSED:
            del self._streams[sid]
        return sid

    def _local_stream(self, stream_id: int, verb: str) -> _Stream:
        self._check_usable()
        st = self._streams.get(stream_id)
        if st is None or st.state is StreamState.RESET:
            raise LocalProtocolError(f"cannot {verb}: stream {stream_id} is not open")
        return st

    def send_reply(
        self, stream_id: int, headers: HeadersLike | Headers | None = None,
        *, end_stream: bool = False,
    ) -> None:
        """Accept a peer's stream (SYN_REPLY). Required before sending DATA on it."""
        st = self._local_stream(stream_id, "reply")
        if st.local or st.replied:
            raise LocalProtocolError(f"stream {stream_id} needs no (further) SYN_REPLY")
        hdrs = headers if isinstance(headers, Headers) else Headers(headers)
        encode_header_block(hdrs)  # validate
        st.replied = True
        flags = Flag.NONE
        if end_stream and not st.we_sent_fin:
            flags = Flag.FIN
            self._local_fin(st)
        self._urgent.append(SynReplyFrame(stream_id, hdrs, flags))

    def send_headers(
        self, stream_id: int, headers: HeadersLike | Headers, *, end_stream: bool = False
    ) -> None:
        """Queue HEADERS on an open stream (in order with its DATA)."""
        st = self._local_stream(stream_id, "send headers")
        if st.we_sent_fin:
            raise LocalProtocolError(f"stream {stream_id}: we already sent FIN")
        if not st.local and not st.replied:
            # HEADERS (ordered) could reach the wire before the SYN_REPLY; spdystream
            # drops HEADERS on a stream that has not been replied.
            raise LocalProtocolError(f"stream {stream_id}: send_reply before headers")
        hdrs = headers if isinstance(headers, Headers) else Headers(headers)
        encode_header_block(hdrs)  # validate
        self._queue_ordered(HeadersFrame(stream_id, hdrs, Flag.FIN if end_stream else Flag.NONE),
                            0, st)
        if end_stream:
            self._local_fin(st)

    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview, *, end_stream: bool = False
    ) -> None:
        """Queue ``data`` as DATA frames (split at ``max_send_frame``), FIN on the last.

        ``bytes`` (and memoryviews of ``bytes``) are queued without copying;
        other buffers are copied.

        Raises:
            LocalProtocolError: the stream is not open for sending, or is a peer's
                stream not replied to yet.
            FlowControlError: ``len(data)`` exceeds :meth:`sendable`.
        """
        st = self._local_stream(stream_id, "send data")
        if st.we_sent_fin:
            raise LocalProtocolError(f"stream {stream_id}: we already sent FIN")
        if not st.local and not st.replied:
            raise LocalProtocolError(f"stream {stream_id}: send_reply before data")
        n = len(data)
        if n:
            if n > self.sendable(stream_id):
                raise FlowControlError(
                    f"{n} bytes exceed the window ({self.sendable(stream_id)}) on {stream_id}"
                )
            if isinstance(data, bytes) or (
                isinstance(data, memoryview) and isinstance(data.obj, bytes)
            ):
                view = memoryview(data).cast("B")  # immutable: queue without copying
            else:
                view = memoryview(bytes(data))
            step = self.max_send_frame or (
                DEFAULT_MAX_SEND_FRAME if self.peer_flow_control
                else UNCONTROLLED_MAX_SEND_FRAME)
            for off in range(0, n, step):
                piece = view[off : off + step]
                last = off + step >= n
                flags = Flag.FIN if (last and end_stream) else 0
                self._queue_ordered(
                    (encode_data_header(stream_id, len(piece), flags), piece), 8 + len(piece), st
                )
            st.their_window -= n
            self.their_session_window -= n
        elif end_stream and not self._fin_on_queued_data(st):
            self._queue_ordered(encode_data_header(stream_id, 0, Flag.FIN), 8, st)
        if end_stream:
            self._local_fin(st)

    def _fin_on_queued_data(self, st: _Stream) -> bool:
        """Set FIN on this stream's DATA frame if it is the last one queued.

        ``send_all(data)`` then ``send_eof()`` costs one frame instead of two
        whenever the data has not been handed out yet (h2 peers do the same
        with ``end_stream``); nothing else may sit between them in the queue.
        """
        ordered = self._ordered
        if not st.queued or not ordered:
            return False
        owner, counted, item = ordered[-1]
        if owner is not st or not isinstance(item, tuple):
            return False
        payload = item[1]
        ordered[-1] = (owner, counted,
                       (encode_data_header(st.stream_id, len(payload), Flag.FIN), payload))
        return True

    def end_stream(self, stream_id: int) -> None:
        """Half-close our side: an empty DATA frame with FIN."""
        self.send_data(stream_id, b"", end_stream=True)

    def reset_stream(
        self, stream_id: int, status: int = RstStatus.CANCEL, *, ordered: bool = False
    ) -> None:
        """Abort a stream (RST_STREAM). Resetting a closed or unknown stream is a no-op.

        The RST goes ahead of queued DATA, and the stream's own queued DATA, FIN
        and HEADERS are discarded (no frame may follow RST_STREAM on the wire).
        With ``ordered`` it follows the stream's queued data and FIN instead (a
        close that still delivers what was sent).
        """
        self._check_usable()
        _check_status(status)
        st = self._streams.pop(stream_id, None)
        if st is None:
            return
        st.state = StreamState.RESET
        self._remember_reset(stream_id)
        frame = RstStreamFrame(stream_id, int(status))
        if ordered:
            self._queue_ordered(frame, 16)
        else:
            self._discard_queued(st)
            self._urgent.append(frame)
            if status == RstStatus.REFUSED_STREAM:
                self._queued_answers += 1  # answers a peer's SYN_STREAM

    def ping(self) -> int:
        """Queue a PING and return its id (odd for clients, even for servers)."""
        self._check_usable()
        pid = self._next_ping_id
        self._next_ping_id += 2
        if self._next_ping_id > 0xFFFFFFFF:
            self._next_ping_id = 1 if self.role is Role.CLIENT else 2
        self._outstanding_pings.add(pid)
        self._urgent.append(encode_ping(pid))
        return pid

    def go_away(self, status: int = GoAwayStatus.OK, *, urgent: bool = False) -> None:
        """Queue GOAWAY: no new streams either way. Idempotent.

        Ordered behind queued DATA unless ``urgent`` (spdystream stops reading at GOAWAY).
        """
        _check_status(status)
        if self.goaway_sent:
            return
        self.goaway_sent = True
        frame = GoAwayFrame(self._highest_peer_stream, int(status))
        if urgent:
            self._urgent.append(frame)
        else:
            self._queue_ordered(frame, 16)

    def acknowledge_received_data(self, stream_id: int, n: int) -> None:
        """The application consumed ``n`` bytes of ``stream_id``: credit the windows.

        WINDOW_UPDATE frames are queued once a quarter of a window is owed, so
        the sender never runs dry while we are still reading. Without ``announce``
        nothing is queued: a WINDOW_UPDATE would announce flow control to the peer.
        """
        if n <= 0 or self.terminated is not None:
            return
        if not self.announce:
            self.our_session_window += n
            st = self._streams.get(stream_id)
            if st is not None:
                st.our_window += n
            return
        self._session_unacked += n
        if self._session_unacked >= self.session_window // 4:
            self._urgent.append(WindowUpdateFrame(0, self._session_unacked))
            self.our_session_window += self._session_unacked
            self._session_unacked = 0
        st = self._streams.get(stream_id)
        if st is None or st.they_sent_fin:
            return
        st.unacked += n
        if st.unacked >= self.initial_window // 4:
            self._urgent.append(WindowUpdateFrame(stream_id, st.unacked))
            st.our_window += st.unacked
            st.unacked = 0

    # --- state helpers ------------------------------------------------------

    def _local_fin(self, st: _Stream) -> None:
        if st.state is StreamState.OPEN:
            st.state = StreamState.HALF_CLOSED_LOCAL
        elif st.state is StreamState.HALF_CLOSED_REMOTE:
            st.state = StreamState.CLOSED
            del self._streams[st.stream_id]

    def _remote_fin(self, st: _Stream) -> None:
        if st.state is StreamState.OPEN:
            st.state = StreamState.HALF_CLOSED_REMOTE
        elif st.state is StreamState.HALF_CLOSED_LOCAL:
            st.state = StreamState.CLOSED
            del self._streams[st.stream_id]

    def _remember_reset(self, stream_id: int) -> None:
        if len(self._reset_by_us) == self._reset_by_us.maxlen:
            self._reset_by_us_set.discard(self._reset_by_us[0])
        self._reset_by_us.append(stream_id)
        self._reset_by_us_set.add(stream_id)

    def _stream_error(self, message: str, stream_id: int, status: RstStatus) -> None:
        self._stream_error_quiet(stream_id, status)
        raise RemoteProtocolError.stream(message, stream_id, status)

    def _was_opened(self, stream_id: int) -> bool:
        """Whether ``stream_id`` was ever opened (by either side)."""
        if self.is_local_stream(stream_id):
            return stream_id <= self._highest_local_stream
        return stream_id <= self._highest_peer_stream

    def _frame_for_missing_stream(self, stream_id: int, what: str) -> None:
        """A frame for a stream not in the table: ignore races, reject the rest."""
        if stream_id == 0:
            # No RST_STREAM can name stream 0 (its id field is 1..2**31-1).
            raise RemoteProtocolError.session(f"{what} on stream 0")
        if stream_id in self._reset_by_us_set:
            return  # we reset it; the peer had not heard yet
        if self._was_opened(stream_id):
            self._stream_error(f"{what} on closed stream {stream_id}", stream_id,
                               RstStatus.STREAM_ALREADY_CLOSED)
        self._stream_error(f"{what} on unknown stream {stream_id}", stream_id,
                           RstStatus.INVALID_STREAM)

    # --- receiving ----------------------------------------------------------

    @property
    def read_hint(self) -> int:
        """The decoder's advice for the next read (see ``FrameDecoder.read_hint``).

        ``n > 0``: bytes still due in the DATA frame being received; a reader
        that receives at most that many into a fresh ``bytes`` object and passes
        it to :meth:`receive_data` has them delivered in a :class:`DataReceived`
        event without being copied. ``< 0``: read only a frame header. ``0``:
        read all that is available.
        """
        return self._decoder.read_hint

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes read from the transport; return what the peer did.

        ``data`` is only borrowed: it may be reused once this returns. Empty
        ``data`` resumes parsing after a stream error.

        Raises:
            RemoteProtocolError: see its docstring; the answer is already queued.
        """
        if self.terminated is not None:
            raise RemoteProtocolError.session("the connection was terminated")
        self.bytes_received += len(data)
        decoder = self._decoder
        decoder.receive(data)
        events: list[Event] = []
        try:
            while True:
                frame = decoder.next_frame()
                if frame is None:
                    return events
                self._handle(frame, events)
                if self._queued_answers > self.max_queued_answers:
                    raise RemoteProtocolError.session(
                        f"peer flooded {self._queued_answers} frames that need an answer "
                        "without reading the answers")
        except RemoteProtocolError as exc:
            decoder.release()
            exc.events = events
            if exc.fatal:
                self._terminate(exc)
                raise
            if exc.stream_id is not None and exc.stream_id not in self._reset_by_us_set:
                # decoder-level stream errors (oversized DATA) still need their RST
                self._stream_error_quiet(exc.stream_id, exc.rst_status or RstStatus.PROTOCOL_ERROR)
            if self._queued_answers > self.max_queued_answers:
                # Each stream error queues an RST: a flood of them is a flood too.
                flood = RemoteProtocolError.session(
                    f"peer flooded {self._queued_answers} frames that need an answer "
                    "without reading the answers")
                flood.events = events
                self._terminate(flood)
                raise flood from exc
            raise

    def _stream_error_quiet(self, stream_id: int, status: RstStatus) -> None:
        st = self._streams.pop(stream_id, None)
        if st is not None:
            st.state = StreamState.RESET
            self._discard_queued(st)
        self._remember_reset(stream_id)
        self._urgent.append(RstStreamFrame(stream_id, status))
        self._queued_answers += 1

    def _terminate(self, exc: RemoteProtocolError) -> None:
        self.terminated = exc
        if not self.goaway_sent:
            self.goaway_sent = True
            self._ordered.clear()
            self._ordered_bytes = 0
            self._urgent.append(GoAwayFrame(self._highest_peer_stream,
                                            int(exc.goaway_status or GoAwayStatus.PROTOCOL_ERROR)))
        for st in self._streams.values():
            st.state = StreamState.RESET
        self._streams.clear()

    def _handle(self, frame: Frame, events: list[Event]) -> None:
        if isinstance(frame, DataFrame):
            self._on_data(frame, events)
        elif isinstance(frame, SynStreamFrame):
            self._on_syn_stream(frame, events)
        elif isinstance(frame, SynReplyFrame):
            self._on_syn_reply(frame, events)
        elif isinstance(frame, HeadersFrame):
            self._on_headers(frame, events)
        elif isinstance(frame, RstStreamFrame):
            st = self._streams.pop(frame.stream_id, None)
            if st is not None:
                st.state = StreamState.RESET
                self._discard_queued(st)  # the peer must not get more frames for it
                events.append(StreamReset(frame.stream_id, _status(frame.status), remote=True))
        elif isinstance(frame, PingFrame):
            if (frame.ping_id % 2 == 1) == (self.role is Role.CLIENT):
                if frame.ping_id in self._outstanding_pings:
                    self._outstanding_pings.discard(frame.ping_id)
                    events.append(PingAcked(frame.ping_id))
            else:
                self._urgent.append(encode_ping(frame.ping_id))
                self._queued_answers += 1
                events.append(PingReceived(frame.ping_id))
        elif isinstance(frame, SettingsFrame):
            self._on_settings(frame, events)
        elif isinstance(frame, WindowUpdateFrame):
            self._on_window_update(frame, events)
        elif isinstance(frame, GoAwayFrame):
            self._on_goaway(frame, events)
        # UnknownControlFrame: ignored, as SPDY/3 2.2.1 requires.

    def _on_data(self, frame: DataFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        n = len(frame.data)
        # Every DATA byte counts against the session window, even on dead streams.
        self.our_session_window -= n
        if self.announce and self.peer_flow_control and self.our_session_window < 0:
            raise RemoteProtocolError.session("peer overran the session window")
        st = self._streams.get(sid)
        if st is None:
            self.acknowledge_received_data(sid, n)  # nobody will consume it
            self._frame_for_missing_stream(sid, "DATA")
            return
        if st.they_sent_fin:
            self.acknowledge_received_data(sid, n)
            self._stream_error(f"DATA after FIN on stream {sid}", sid,
                               RstStatus.STREAM_ALREADY_CLOSED)
        st.our_window -= n
        if self.announce and self.peer_flow_control and st.our_window < 0:
            self.acknowledge_received_data(sid, n)
            self._stream_error(f"peer overran the window of stream {sid}", sid,
                               RstStatus.FLOW_CONTROL_ERROR)
        if n:
            events.append(DataReceived(sid, frame.data))
        if int(frame.flags) & _FIN:
            self._remote_fin(st)
            events.append(StreamEnded(sid))

    def _on_syn_stream(self, frame: SynStreamFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        if sid == 0 or self.is_local_stream(sid):
            raise RemoteProtocolError.session(f"SYN_STREAM with our parity of id ({sid})")
        if sid <= self._highest_peer_stream:
            if sid in self._streams:
                self._stream_error(f"SYN_STREAM for stream {sid} in use", sid,
                                   RstStatus.STREAM_IN_USE)
            raise RemoteProtocolError.session(f"SYN_STREAM id {sid} is not increasing")
        if self.goaway_sent:
            # Streams after our GOAWAY are refused, without counting them as processed.
            self._stream_error_quiet(sid, RstStatus.REFUSED_STREAM)
            return
        self._highest_peer_stream = sid
        peer_open = self._streams.remote
        if peer_open >= self.max_concurrent_streams:
            self._stream_error_quiet(sid, RstStatus.REFUSED_STREAM)
            return
        st = _Stream(sid, local=False, our_window=self.initial_window,
                     their_window=self._peer_initial_window)
        fin = bool(int(frame.flags) & _FIN)
        uni = bool(int(frame.flags) & _UNIDIRECTIONAL)
        if fin and uni:
            st.state = StreamState.CLOSED
        elif fin:
            st.state = StreamState.HALF_CLOSED_REMOTE
        elif uni:
            st.state = StreamState.HALF_CLOSED_LOCAL
        if st.state is not StreamState.CLOSED:
            self._streams[sid] = st
        events.append(StreamOpened(sid, frame.headers, fin, uni, frame.associated_stream_id,
                                   frame.priority))
        if fin:
            events.append(StreamEnded(sid))

    def _on_syn_reply(self, frame: SynReplyFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        st = self._streams.get(sid)
        if st is None:
            self._frame_for_missing_stream(sid, "SYN_REPLY")
            return
        if not st.local or st.replied:
            self._stream_error(f"unexpected SYN_REPLY on stream {sid}", sid,
                               RstStatus.STREAM_IN_USE)
        st.replied = True
        fin = bool(int(frame.flags) & _FIN)
        events.append(ReplyReceived(sid, frame.headers, fin))
        if fin:
            self._remote_fin(st)
            events.append(StreamEnded(sid))

    def _on_headers(self, frame: HeadersFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        st = self._streams.get(sid)
        if st is None:
            self._frame_for_missing_stream(sid, "HEADERS")
            return
        if st.they_sent_fin:
            self._stream_error(f"HEADERS after FIN on stream {sid}", sid,
                               RstStatus.STREAM_ALREADY_CLOSED)
        fin = bool(int(frame.flags) & _FIN)
        merged = frame.headers
        extra = st.extra_headers
        if extra is not None:
            # HEADERS compress ~1000:1: merging without a bound would let a peer
            # pile up memory a few bytes at a time on the wire.
            if extra.nbytes + merged.nbytes > self.max_header_block:
                self._stream_error(f"HEADERS on stream {sid} exceed max_header_block "
                                   f"({self.max_header_block} bytes)", sid,
                                   RstStatus.PROTOCOL_ERROR)
            merged = extra.merged(merged)
        st.extra_headers = merged
        events.append(HeadersReceived(sid, merged, fin))
        if fin:
            self._remote_fin(st)
            events.append(StreamEnded(sid))

    def _on_settings(self, frame: SettingsFrame, events: list[Event]) -> None:
        settings = frame.as_dict()
        self.peer_settings.update(settings)
        window = settings.get(SettingsId.INITIAL_WINDOW_SIZE)
        if window is not None:
            if window > MAX_WINDOW:
                raise RemoteProtocolError.session(f"INITIAL_WINDOW_SIZE {window} too large")
            delta = window - self._peer_initial_window
            self._peer_initial_window = window
            self.peer_flow_control = True
            for st in self._streams.values():
                st.their_window += delta
        limit = settings.get(SettingsId.MAX_CONCURRENT_STREAMS)
        if limit is not None:
            self._peer_max_streams = limit
        events.append(SettingsReceived(settings))

    def _on_window_update(self, frame: WindowUpdateFrame, events: list[Event]) -> None:
        sid, delta = frame.stream_id, frame.delta
        self.peer_flow_control = True
        if sid == 0:
            if delta == 0:
                raise RemoteProtocolError.session("WINDOW_UPDATE of 0 on the session")
            self.their_session_window += delta
            if self.their_session_window > MAX_WINDOW:
                raise RemoteProtocolError.session("session window overflow")
            events.append(WindowUpdated(0, delta))
            return
        st = self._streams.get(sid)
        if st is None:
            return  # closed or reset: credit is moot
        if delta == 0:
            self._stream_error(f"WINDOW_UPDATE of 0 on stream {sid}", sid,
                               RstStatus.PROTOCOL_ERROR)
        st.their_window += delta
        if st.their_window > MAX_WINDOW:
            self._stream_error(f"window overflow on stream {sid}", sid,
                               RstStatus.FLOW_CONTROL_ERROR)
        events.append(WindowUpdated(sid, delta))

    def _on_goaway(self, frame: GoAwayFrame, events: list[Event]) -> None:
        self.goaway_received = True
        self.peer_last_good_stream_id = frame.last_good_stream_id
        events.append(GoAwayReceived(frame.last_good_stream_id, frame.status))
        # Our streams the peer never processed will never be answered.
        for sid in [s for s, st in self._streams.items()
                    if st.local and s > frame.last_good_stream_id and not st.replied]:
            st = self._streams.pop(sid)
            st.state = StreamState.RESET
            self._discard_queued(st)
            events.append(StreamReset(sid, RstStatus.REFUSED_STREAM, remote=True))


def _check_status(status: int) -> None:
    # Checked when queued: a bad value found while encoding would raise in the
    # writer, far from the caller.
    if not 0 <= status <= 0xFFFFFFFF:
        raise LocalProtocolError(f"status {status} is not a 32-bit unsigned value")


def _status(value: int) -> int:
    try:
        return RstStatus(value)
    except ValueError:
        return value


def iter_frames(data: bytes, decoder: FrameDecoder | None = None) -> Iterable[Frame]:
    """Decode every complete frame in ``data`` (a convenience for tests and tools)."""
    dec = decoder or FrameDecoder()
    dec.receive(data)
    while (frame := dec.next_frame()) is not None:
        yield frame
