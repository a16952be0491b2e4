"""SessionCore: the state a session's parts share, and what its streams call.

The public :class:`~muxstream.Session` is the API; this is what sits behind it.
It holds the sans-IO connection, the table of open streams, the accept backlog,
the pings, the writer and the session's fate (its :class:`Phase` on the close
path, its error, the peer's GOAWAY and EOF), and implements
:class:`~muxstream._stream.StreamHost`: every stream operation is a synchronous
change to the connection followed by a wake-up of the task that has to act on it
(or an inline write). The reader task (``_reader``) and the event handlers
(``_dispatch``) change the same state; the close path (``_session``) decides
when it ends, and anything that wants it ended calls :attr:`begin_close`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Any

import trio
from trio.lowlevel import ParkingLot

from ._accept import AcceptQueue
from ._errors import (
    MuxstreamError,
    PingTimeout,
    SessionClosed,
    SessionGoneAway,
    StreamResetError,
)
from ._options import SessionOptions
from ._pings import PingTracker
from ._stream import StreamCore
from ._writer import Writer
from .protocol import (
    Connection,
    LocalProtocolError,
    Role,
    RstStatus,
    StreamState,
)

logger = logging.getLogger("muxstream")

#: Write-buffer room a sender waits for rather than queue part of its data.
MIN_PIECE = 128 * 1024

_STREAM_CLOSED = StreamState.CLOSED
_NOT_SENDABLE = (StreamState.HALF_CLOSED_LOCAL, StreamState.CLOSED, StreamState.RESET)


class Trigger(enum.Enum):
    """What started a session's close (see docs/close-path.md)."""

    #: ``Session.aclose()``, or leaving ``open_session``'s block normally
    USER = "closed by the user"
    #: the peer finished: GOAWAY with no stream left, or the transport's EOF
    PEER = "closed by the peer"
    #: ``idle_timeout`` passed with no stream and no data
    IDLE = "idle timeout"
    #: a failure: the peer broke the protocol, the transport failed, keepalive
    ERROR = "failure"
    #: ``open_session``'s block raised or was cancelled
    ABANDONED = "abandoned"


class Phase(enum.Enum):
    """Where a session is on the close path (docs/close-path.md)."""

    #: streams open, work and close freely
    OPEN = "open"
    #: steps 1-4: no new streams, every stream FINed, GOAWAY, flush, half-close,
    #: drain until the peer's EOF; bounded by ``close_timeout``
    DRAINING = "draining"
    #: step 5 began: streams broken, tasks cancelled, the transport closing
    #: (``SessionCore.closed`` is set once it is closed)
    CLOSED = "closed"


OPEN = Phase.OPEN
DRAINING = Phase.DRAINING
CLOSED = Phase.CLOSED


class SessionCore:
    """A session's shared state; see the module docstring."""

    def __init__(self, transport: trio.abc.Stream, role: Role, options: SessionOptions,
                 begin_close: Callable[[Trigger], None]) -> None:
        self.transport = transport
        self.options = options
        self.conn = Connection(
            role,
            initial_window=options.initial_window,
            session_window=options.session_window,
            max_concurrent_streams=options.max_concurrent_streams,
            max_send_frame=options.max_frame_size,
            max_header_block=options.max_header_block,
        )
        #: starts the close path in the session's nursery, in the background
        self.begin_close = begin_close
        #: the streams the protocol still routes frames to, by id
        self.streams: dict[int, StreamCore] = {}
        self.accept = AcceptQueue(options.accept_backlog, options.accept_backlog_bytes)
        self.pings = PingTracker()
        #: open_stream() parks here while the peer's MAX_CONCURRENT_STREAMS is reached
        self.open_lot = ParkingLot()
        #: the reader parks here (backpressure, see _reader.must_pause)
        self.reader_lot = ParkingLot()
        self.writer = Writer(transport, self.conn, buffer_size=options.write_buffer_size,
                             reader_lot=self.reader_lot)
        # an empty write buffer must always have room for a piece (send_room)
        self.min_piece = max(1, min(MIN_PIECE, options.write_buffer_size // 2))
        #: a stream may buffer this much before the reader pauses (a peer that
        #: ignores flow control) or, while draining, before its data is dropped
        self.buffer_limit = 2 * options.initial_window
        self.buffered_total = 0  # received bytes in every stream's buffer
        self.overfull: StreamCore | None = None  # the stream that paused the reader
        self.error: BaseException | None = None
        self.phase = OPEN
        #: what started the close; USER once aclose() was called, whatever came first
        self.closed_by: Trigger | None = None
        self.eof_received = False
        self.goaway: SessionGoneAway | None = None
        self.task_scope = trio.CancelScope()
        self.reader_done = trio.Event()
        #: the transport is closed: the session is over
        self.closed = trio.Event()
        self.last_activity = 0.0
        self.streams_opened = 0
        self.streams_accepted = 0

    # --- state checks ------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """The close path has begun."""
        return self.phase is not OPEN

    @property
    def open_timeout(self) -> float:
        return self.options.open_timeout

    @property
    def idle(self) -> bool:
        return not self.streams and not self.accept

    @property
    def peer_finished(self) -> bool:
        """Over a transport that cannot half-close (TLS), the peer's EOF only comes
        when it closes too, and it waits for ours: stop draining once the peer sent
        GOAWAY (behind all its data) and no stream is left, or both ends would sit
        out ``close_timeout`` (the close path's TLS exit)."""
        return not self.writer.half_closeable and self.goaway is not None and not self.streams

    def check_usable(self) -> None:
        """Raise what a user call on a broken or closing session raises."""
        if self.error is not None:
            raise trio.BrokenResourceError(f"session broken: {self.error}") from self.error
        if self.phase is not OPEN:
            if self.closed_by is not Trigger.USER:
                cause = self.goaway or SessionClosed("peer closed the session")
                raise trio.BrokenResourceError(f"peer closed the session: {cause}") from cause
            raise trio.ClosedResourceError("session is closed")

    def check_peer_open(self) -> None:
        if self.eof_received:
            # After its FIN the peer can write nothing, not even a PING echo.
            raise trio.BrokenResourceError("peer closed the session") from SessionClosed(
                "peer closed the connection (EOF)")

    @staticmethod
    def attempt(verb: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """Call a connection verb on a stream that may be gone already."""
        try:
            verb(*args, **kwargs)
        except LocalProtocolError:
            pass  # the stream is already gone: nothing to send

    # --- what streams call (StreamHost) --------------------------------------------

    def send_room(self, stream: StreamCore, want: int = 1) -> int:
        """How much of ``want`` bytes ``stream`` may queue now (0: it must wait).

        A sender waits until the write buffer has room for ``want`` bytes or
        ``MIN_PIECE`` (at most half the write buffer), whichever is less,
        rather than queue the sliver other senders left (16 busy streams sent
        1 in 5 DATA frames under 64 KiB, some of 8 bytes): each frame costs on
        both sides, and a small one breaks the receiver's header-then-payload
        reads.
        """
        conn = self.conn
        room = self.options.write_buffer_size - conn.ordered_bytes
        piece = self.min_piece
        if room < (want if want < piece else piece):
            self.writer.space_waiters.add(stream)
            return 0
        window = conn.sendable(stream.stream_id)
        if window <= 0 and conn.stream_state(stream.stream_id) in _NOT_SENDABLE:
            if stream.broken is None:
                stream.on_broken(StreamResetError(
                    RstStatus.STREAM_ALREADY_CLOSED, remote=True,
                    message="stream is closed for sending"))
            stream.raise_broken()
        return min(room, window)

    def queue_data(self, stream: StreamCore, data: bytes | memoryview, end_stream: bool) -> None:
        self.conn.send_data(stream.stream_id, data, end_stream=end_stream)
        self.last_activity = trio.current_time()
        self.writer.kick()

    def end_stream(self, stream: StreamCore) -> None:
        self.attempt(self.conn.end_stream, stream.stream_id)
        self.writer.kick()
        self.forget_if_done(stream)

    def forget_if_done(self, stream: StreamCore) -> None:
        """Drop a stream from the routing table once the protocol is done with it."""
        sid = stream.stream_id
        if self.conn.stream_state(sid) is _STREAM_CLOSED and sid in self.streams:
            del self.streams[sid]
            self.open_lot.unpark_all()
            if self.goaway is not None and not self.streams:
                self.begin_close(Trigger.PEER)  # the peer went away; our last stream is done

    def consumed(self, stream: StreamCore, n: int) -> None:
        conn = self.conn
        self.buffered_total -= n
        conn.acknowledge_received_data(stream.stream_id, n)
        if conn.has_data_to_send:
            self.writer.kick()
        if self.overfull is stream and stream.buffered <= self.buffer_limit:
            self.overfull = None
            self.reader_lot.unpark_all()

    def close_stream(self, stream: StreamCore) -> bool:
        conn = self.conn
        sid = stream.stream_id
        fin = not stream.we_sent_fin and not self.closed.is_set()
        if fin:
            self.attempt(conn.end_stream, sid)
        if not stream.they_sent_fin and conn.stream_state(sid) is not _STREAM_CLOSED:
            # The peer may still be sending: tell it to stop, after our data.
            self.attempt(conn.reset_stream, sid, RstStatus.CANCEL, ordered=True)
        self.release(stream)
        return fin

    def reset_stream(self, stream: StreamCore, status: int) -> None:
        if not self.closed.is_set():
            self.attempt(self.conn.reset_stream, stream.stream_id, status)
        self.release(stream)

    def release(self, stream: StreamCore) -> None:
        """After a local close or reset: free its buffer and table slot, wake waiters."""
        self.drop_buffer(stream)
        self.streams.pop(stream.stream_id, None)
        stream.wake()
        self.writer.kick()
        self.open_lot.unpark_all()

    def drop_buffer(self, stream: StreamCore) -> None:
        """Discard what ``stream`` buffered, crediting the peer for it."""
        n = stream.drop_buffer()
        if n:
            self.buffered_total -= n
            self.conn.acknowledge_received_data(stream.stream_id, n)
        if self.overfull is stream:
            self.overfull = None
            self.reader_lot.unpark_all()

    # --- pings ----------------------------------------------------------------------

    def start_ping(self, timeout: float) -> tuple[int, trio.Event]:
        """Queue a PING with a deadline ``timeout`` s away; its id, and the event
        set when it is answered, timed out or the session ended."""
        self.check_usable()
        self.check_peer_open()
        pid = self.conn.ping()
        event = self.pings.start(pid, timeout)
        self.writer.kick()
        self.reader_lot.unpark_all()  # its echo may sit behind data a paused reader left
        return pid, event

    async def ping(self, timeout: float | None = None) -> float:
        """Send a PING and return the round-trip time (see ``Session.ping``)."""
        limit = self.options.ping_timeout if timeout is None else timeout
        pings = self.pings
        pid, event = self.start_ping(limit)
        try:
            await event.wait()  # set by the answer, the timer task, or a failure
        finally:
            rtt = pings.finish(pid)
        if rtt is None:
            self.check_usable()
            self.check_peer_open()
            raise PingTimeout(f"no answer to PING {pid} within {limit} s")
        return rtt

    # --- failure and wake-ups -------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        """Background failure: record it, wake everyone, tear down (never raises)."""
        if self.error is None:
            self.error = exc
            # expected failures in one line; a LocalProtocolError here is our bug
            if isinstance(exc, MuxstreamError) and not isinstance(exc, LocalProtocolError):
                logger.info("session failed: %s", exc)
            else:
                logger.error("session failed", exc_info=exc)
        for stream in list(self.streams.values()):
            stream.on_broken(exc)
        self.pings.wake_all()
        self.writer.finish()  # the GOAWAY explaining a protocol error, then our FIN
        self.wake_all()
        self.begin_close(Trigger.ERROR)

    def close_when_idle(self) -> None:
        self.begin_close(Trigger.IDLE)

    def wake_all(self) -> None:
        for stream in self.streams.values():
            stream.wake()
        self.accept.wake_all()
        self.open_lot.unpark_all()
        self.writer.lot.unpark_all()
        self.reader_lot.unpark_all()
