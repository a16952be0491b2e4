"""The sans-IO SPDY/3.1 connection: stream states, ids, pings, GOAWAY, flow control.

Theory of operation
-------------------
A :class:`Connection` is a pure state machine. The caller feeds it the bytes it
read (:meth:`Connection.receive_data` returns :mod:`events <._events>`), calls
verbs for what the application wants (:meth:`open_stream`, :meth:`send_data`,
...), and writes whatever :meth:`data_to_send` / :meth:`buffers_to_send` hand
out. It never blocks, never reads a clock, never touches a socket.

The pieces: the frames the peer sends are handled by the receive half,
``_receiving.PeerFrames``, which Connection inherits; outbound frames sit in two
queues, urgent and ordered (``_outbound``); stream states follow one table
(``_state``), which the code runs as data.

Flow control (SPDY/3.1, ``_windows``): a window per stream and one for the
session, enforced only when both ends announced it (spdystream never does).
See docs/protocol.md.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._constants import (
    MAX_FRAME_LENGTH,
    MAX_STREAM_ID,
    Flag,
    GoAwayStatus,
    RstStatus,
)
from ._errors import FlowControlError, LocalProtocolError, RemoteProtocolError
from ._events import (
    Event,
)
from ._frames import (
    Frame,
    FrameDecoder,
    GoAwayFrame,
    HeadersFrame,
    PyFrameDecoder,
    RstStreamFrame,
    SynReplyFrame,
    SynStreamFrame,
    encode_data_header,
    encode_ping,
)
from ._header_block import (
    DEFAULT_MAX_HEADER_BLOCK,
    DEFAULT_MAX_HEADER_COUNT,
    HeaderDecompressor,
    encode_header_block,
)
from ._headers import Headers, HeadersLike
from ._outbound import OutboundQueues
from ._receiving import PeerFrames
from ._state import OPENING, Fin, Role, StreamRecord, StreamState, StreamTable
from ._windows import DEFAULT_INITIAL_WINDOW, DEFAULT_SESSION_WINDOW, Windows

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
#: Answers (PING echoes, RST_STREAMs) a peer may have queued but not yet read
#: before its flood is a session error. A muxstream session stops reading long
#: before (TCP backpressure); this bounds what one 1 MiB read can add (~87,000
#: PINGs fit in it), so a reading peer is refused, not cut off. ~100 B each.
DEFAULT_MAX_QUEUED_ANSWERS = 100_000


class Connection(PeerFrames):
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
        self._windows = Windows(initial_window, session_window, announce=announce)
        if max_send_frame is not None and not 1 <= max_send_frame <= MAX_FRAME_LENGTH:
            raise ValueError("max_send_frame must be 1..2**24-1")
        self.role = role
        self.max_concurrent_streams = max_concurrent_streams
        #: None: DEFAULT_MAX_SEND_FRAME once the peer announced flow control,
        #: UNCONTROLLED_MAX_SEND_FRAME until then (and for peers that never do).
        self.max_send_frame = max_send_frame
        #: bounds each header block, and all HEADERS of a stream together
        self.max_header_block = max_header_block
        self._out = OutboundQueues()
        self._decompressor = HeaderDecompressor(max_size=max_header_block,
                                                max_count=max_header_count)
        self._decoder = FrameDecoder(
            self._decompressor,
            max_control_frame=max_control_frame or max_header_block + 1024,
            max_data_frame=max_data_frame,
        )
        self._streams = StreamTable()
        #: the last _RESET_MEMORY streams we reset, oldest first (a dict: ordered
        #: and O(1) to test, and small while empty)
        self._reset_by_us: dict[int, None] = {}
        self._next_stream_id = 1 if role is Role.CLIENT else 2
        self._next_ping_id = 1 if role is Role.CLIENT else 2
        self._highest_peer_stream = 0
        self._highest_local_stream = 0
        self._outstanding_pings: set[int] = set()
        #: Peer's SETTINGS, as received (id -> value).
        self.peer_settings: dict[int, int] = {}
        self._peer_max_streams: int | None = None
        self.goaway_sent = False
        self.goaway_received = False
        self.peer_last_good_stream_id: int | None = None
        #: Set when a session error ended the connection.
        self.terminated: RemoteProtocolError | LocalProtocolError | None = None
        self.bytes_received = 0
        self.max_queued_answers = max_queued_answers
        self._out.urgent.extend(self._windows.announcement(max_concurrent_streams))

    # --- flow control (see _windows) -----------------------------------------

    @property
    def announce(self) -> bool:
        """Whether we announce flow control (and so police our receive windows)."""
        return self._windows.announce

    @property
    def initial_window(self) -> int:
        return self._windows.initial_window

    @property
    def session_window(self) -> int:
        return self._windows.session_window

    @property
    def peer_flow_control(self) -> bool:
        """True once the peer announced flow control (SETTINGS window or WINDOW_UPDATE)."""
        return self._windows.peer_flow_control

    @peer_flow_control.setter
    def peer_flow_control(self, value: bool) -> None:
        self._windows.peer_flow_control = value

    @property
    def our_session_window(self) -> int:
        """What the peer may still send us on the session (stream 0)."""
        return self._windows.our_session_window

    @property
    def their_session_window(self) -> int:
        """What we may still send the peer on the session (stream 0)."""
        return self._windows.their_session_window

    # --- inspection ---------------------------------------------------------

    def stream_state(self, stream_id: int) -> StreamState:
        """The state of ``stream_id``; CLOSED for streams no longer tracked."""
        st = self._streams.get(stream_id)
        return st.state if st else StreamState.CLOSED

    @property
    def accelerated(self) -> bool:
        """Whether this connection decodes with the compiled accelerator's
        decoder (``muxstream.protocol.ACCELERATED`` when it was made)."""
        return not isinstance(self._decoder, PyFrameDecoder)

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
        return self._windows.sendable(st)

    def our_window(self, stream_id: int) -> int:
        """How much the peer may still send on ``stream_id`` (0 for closed streams)."""
        st = self._streams.get(stream_id)
        return st.our_window if st else 0

    def their_window(self, stream_id: int) -> int:
        """``stream_id``'s own window for our sending (0 for closed streams);
        :meth:`sendable` also applies the session's, where windows apply."""
        st = self._streams.get(stream_id)
        return st.their_window if st else 0

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

    # --- outbound queues (see _outbound) ---------------------------------------

    @property
    def has_data_to_send(self) -> bool:
        out = self._out
        return bool(out.urgent or out.ordered)

    @property
    def queued_answers(self) -> int:
        """PING echoes and RST_STREAMs answering the peer, queued and not handed out.

        A session stops reading while this is high: a peer that floods us
        without reading our answers then meets TCP backpressure.
        """
        return self._out.answers

    @property
    def ordered_bytes(self) -> int:
        """Bytes of DATA (and other ordered frames) queued but not handed out."""
        return self._out.ordered_bytes

    @property
    def bytes_sent(self) -> int:
        """Bytes handed out by :meth:`buffers_to_send` so far."""
        return self._out.bytes_sent

    def buffers_to_send(self, max_bytes: int | None = None) -> list[bytes | memoryview]:
        """Hand out queued bytes: every urgent frame, then ordered ones up to ``max_bytes``.

        The buffers must be written in order, all of them. At least one ordered
        buffer is handed out when any is queued, whatever ``max_bytes``.
        """
        return self._out.buffers_to_send(max_bytes)

    def data_to_send(self, max_bytes: int | None = None) -> bytes:
        """Like :meth:`buffers_to_send`, joined into one ``bytes``."""
        return b"".join(self._out.buffers_to_send(max_bytes))

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
        st = self._windows.new_stream(sid, local=True,
                                      state=OPENING[True, end_stream, unidirectional])
        self._streams[sid] = st
        self._out.urgent.append(frame)
        if st.state is StreamState.CLOSED:
            del self._streams[sid]
        return sid

    def _local_stream(self, stream_id: int, verb: str) -> StreamRecord:
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
        self._out.urgent.append(SynReplyFrame(stream_id, hdrs, flags))

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
        self._out.queue_ordered(
            HeadersFrame(stream_id, hdrs, Flag.FIN if end_stream else Flag.NONE), 0, st)
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
                DEFAULT_MAX_SEND_FRAME if self._windows.peer_flow_control
                else UNCONTROLLED_MAX_SEND_FRAME)
            queue = self._out.queue_ordered
            for off in range(0, n, step):
                piece = view[off : off + step]
                last = off + step >= n
                flags = Flag.FIN if (last and end_stream) else 0
                queue((encode_data_header(stream_id, len(piece), flags), piece), 8 + len(piece), st)
            self._windows.sent(st, n)
        elif end_stream and not self._out.fin_on_queued_data(st):
            self._out.queue_ordered(encode_data_header(stream_id, 0, Flag.FIN), 8, st)
        if end_stream:
            self._local_fin(st)

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
        st = self._streams.reset(stream_id)
        if st is None:
            return
        self._remember_reset(stream_id)
        frame = RstStreamFrame(stream_id, int(status))
        if ordered:
            self._out.queue_ordered(frame, 16)
        else:
            self._discard_queued(st)
            self._out.urgent.append(frame)
            if status == RstStatus.REFUSED_STREAM:
                self._out.answers += 1  # answers a peer's SYN_STREAM

    def ping(self) -> int:
        """Queue a PING and return its id (odd for clients, even for servers)."""
        self._check_usable()
        pid = self._next_ping_id
        self._next_ping_id += 2
        if self._next_ping_id > 0xFFFFFFFF:
            self._next_ping_id = 1 if self.role is Role.CLIENT else 2
        self._outstanding_pings.add(pid)
        self._out.urgent.append(encode_ping(pid))
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
            self._out.urgent.append(frame)
        else:
            self._out.queue_ordered(frame, 16)

    def acknowledge_received_data(self, stream_id: int, n: int) -> None:
        """The application consumed ``n`` bytes of ``stream_id``: credit the windows.

        WINDOW_UPDATE frames are queued once a quarter of a window is owed, so
        the sender never runs dry while we are still reading. Without ``announce``
        nothing is queued: a WINDOW_UPDATE would announce flow control to the peer.
        """
        if self.terminated is None:
            self._credit(stream_id, n)

    # --- state helpers ------------------------------------------------------

    def _local_fin(self, st: StreamRecord) -> None:
        self._streams.fin(st, Fin.OURS)


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
                    # An idle connection holds no zlib state; the next chunk
                    # with a header block rebuilds it (see HeaderDecompressor).
                    self._decompressor.release()
                    return events
                self._handle(frame, events)
                if self._out.answers > self.max_queued_answers:
                    raise RemoteProtocolError.session(
                        f"peer flooded {self._out.answers} frames that need an answer "
                        "without reading the answers")
        except RemoteProtocolError as exc:
            decoder.release()
            exc.events = events
            if exc.fatal:
                self._terminate(exc)
                raise
            if exc.stream_id is not None and exc.stream_id not in self._reset_by_us:
                # decoder-level stream errors (oversized DATA) still need their RST
                self._stream_error_quiet(exc.stream_id, exc.rst_status or RstStatus.PROTOCOL_ERROR)
            if self._out.answers > self.max_queued_answers:
                # Each stream error queues an RST: a flood of them is a flood too.
                flood = RemoteProtocolError.session(
                    f"peer flooded {self._out.answers} frames that need an answer "
                    "without reading the answers")
                flood.events = events
                self._terminate(flood)
                raise flood from exc
            raise

    def _terminate(self, exc: RemoteProtocolError) -> None:
        self.terminated = exc
        if not self.goaway_sent:
            self.goaway_sent = True
            self._out.drop_ordered()
            self._out.urgent.append(GoAwayFrame(self._highest_peer_stream,
                                            int(exc.goaway_status or GoAwayStatus.PROTOCOL_ERROR)))
        self._streams.reset_all()


def _check_status(status: int) -> None:
    # Checked when queued: a bad value found while encoding would raise in the
    # writer, far from the caller.
    if not 0 <= status <= 0xFFFFFFFF:
        raise LocalProtocolError(f"status {status} is not a 32-bit unsigned value")



def iter_frames(data: bytes, decoder: FrameDecoder | None = None) -> Iterable[Frame]:
    """Decode every complete frame in ``data`` (a convenience for tests and tools)."""
    dec = decoder or FrameDecoder()
    dec.receive(data)
    while (frame := dec.next_frame()) is not None:
        yield frame
