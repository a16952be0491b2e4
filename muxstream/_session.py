"""Session: one transport, one reader task, one writer task, many streams.

Theory of operation
-------------------
Only the reader task reads the transport (docs/performance.md, design rules). Writes keep the
rule's point -- one ordered byte stream, never two writers interleaving -- with one
refinement measured to pay (docs/performance.md): on TCP, when the writer task holds
no bytes of its own, the task that just queued frames writes them itself with one
non-blocking ``writev`` and no await, so nothing can interleave; whatever the kernel
does not take goes to the writer, which sends it before anything else, and nothing
is written inline once the writer is busy or has sent the transport's FIN
(``_kick``). Everything else -- stream sends, window credits, pings, resets -- is a
synchronous change to the sans-IO :class:`~muxstream.protocol.Connection` followed by
a wake-up of the task that has to act on it (or that inline write). Background tasks never
raise into user code: a failure becomes ``Session._error`` and every blocked call
wakes with ``trio.BrokenResourceError`` chained to it.

The close path (``aclose()``; see docs/close-path.md for why):

1. refuse new streams; FIN every stream we have not ended, behind its data;
2. queue GOAWAY behind all of that (spdystream stops reading at GOAWAY);
3. the writer flushes everything, then half-closes the transport (TCP FIN);
4. the reader keeps draining -- answering pings, delivering data to streams still
   being read (within their windows), discarding the rest -- until the
   peer's EOF;
5. close the transport.
Steps 1-4 are bounded by ``close_timeout``; on timeout, error or cancellation,
streams are reset and the transport is closed hard.

A peer's graceful close arrives as GOAWAY then EOF: buffered data stays readable,
streams the peer ended return ``b""``, the rest raise ``BrokenResourceError``,
and this side runs the same close (its FIN is what the peer's reader waits for).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import Any

import trio
from trio.lowlevel import ParkingLot, checkpoint

from ._errors import (
    ConnectionLost,
    KeepaliveTimeout,
    MuxstreamError,
    PingTimeout,
    SessionClosed,
    SessionGoneAway,
    StreamOpenTimeout,
    StreamResetError,
)
from ._stream import Stream
from .protocol import (
    DEFAULT_INITIAL_WINDOW,
    DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_HEADER_BLOCK,
    DEFAULT_SESSION_WINDOW,
    Connection,
    DataReceived,
    Event,
    GoAwayReceived,
    GoAwayStatus,
    Headers,
    HeadersLike,
    HeadersReceived,
    LocalProtocolError,
    PingAcked,
    PingReceived,
    RemoteProtocolError,
    ReplyReceived,
    Role,
    RstStatus,
    SettingsReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamState,
    WindowUpdated,
)

logger = logging.getLogger("muxstream")

CLIENT = Role.CLIENT
SERVER = Role.SERVER

#: seconds; spdystream has no bound by default, Kubernetes waits up to ~10 s.
DEFAULT_CLOSE_TIMEOUT = 10.0
#: seconds between keepalive pings (yamux's default).
DEFAULT_KEEPALIVE_INTERVAL = 30.0
#: seconds a ping may go unanswered before the session is declared dead.
DEFAULT_PING_TIMEOUT = 30.0
#: seconds open_stream waits for SYN_REPLY (Kubernetes' createStreamResponseTimeout).
DEFAULT_OPEN_TIMEOUT = 30.0
#: streams the peer opened that wait for accept() before new ones are refused.
DEFAULT_ACCEPT_BACKLOG = 128
#: header bytes (names + values, inflated) that streams waiting for accept() may
#: hold in all: header blocks compress ~1000:1, so without this a peer could park
#: accept_backlog x max_header_block (32 MiB) for a few hundred bytes on the wire.
DEFAULT_ACCEPT_BACKLOG_BYTES = 1 << 20
#: queued-but-unwritten bytes above which senders wait: bounds memory per session.
DEFAULT_WRITE_BUFFER = 1 << 20

#: One read's size: large reads cut per-call overhead (docs/performance.md, rule 1).
_RECV_SIZE = 1 << 20
#: Write from the task that queued the frames when the writer is idle (see _kick).
_INLINE_WRITES = hasattr(os, "writev")
#: Write-buffer room a sender waits for rather than queue part of its data.
_MIN_PIECE = 128 * 1024
#: A read shorter than asked for and than this emptied the socket: wait before
#: the next one instead of trying it (saves an EAGAIN system call per PING).
_SMALL_READ = 4096
#: Bytes the reader may read and process between two yields to the scheduler.
_YIELD_BYTES = 256 * 1024
#: ... counting each read as this many bytes, so a stream of tiny reads yields too.
_YIELD_PER_READ = 8 * 1024
#: One read's size on other transports (TLS, WebSocket, upgraded HTTP).
_STREAM_RECV_SIZE = 64 * 1024
#: One write's size: at least ~256 KiB per send call (docs/performance.md, rule 1).
_WRITE_BATCH = 512 * 1024
#: Unsent bytes the kernel may hold per socket (see _limit_unsent).
_NOTSENT_LOWAT = 256 * 1024
#: sendmsg() accepts at most IOV_MAX (1024 on Linux) buffers.
_IOV_MAX = 512
#: Queued answers (PING echoes, RST_STREAMs) at which the reader stops reading:
#: a peer that floods without reading them meets TCP backpressure.
_ANSWERS_PAUSE = 1024


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """Tunables of a session; each has a safe default (see the constants above)."""

    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    keepalive_interval: float | None = DEFAULT_KEEPALIVE_INTERVAL
    ping_timeout: float = DEFAULT_PING_TIMEOUT
    #: close gracefully after this long with no streams and no data (None: never).
    idle_timeout: float | None = None
    open_timeout: float = DEFAULT_OPEN_TIMEOUT
    initial_window: int = DEFAULT_INITIAL_WINDOW
    session_window: int = DEFAULT_SESSION_WINDOW
    #: largest DATA frame written; None: 512 KiB (DEFAULT_MAX_SEND_FRAME) to a peer
    #: that announced flow control (muxstream), 128 KiB to one that did not (spdystream).
    max_frame_size: int | None = None
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    max_header_block: int = DEFAULT_MAX_HEADER_BLOCK
    accept_backlog: int = DEFAULT_ACCEPT_BACKLOG
    #: header bytes the accept backlog may hold; beyond it, REFUSED_STREAM
    #: (one stream is always let in, whatever its headers' size).
    accept_backlog_bytes: int = DEFAULT_ACCEPT_BACKLOG_BYTES
    write_buffer_size: int = DEFAULT_WRITE_BUFFER

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> SessionOptions:
        names = {f.name for f in fields(cls)}
        unknown = set(options) - names
        if unknown:
            raise TypeError(f"unknown session option(s): {', '.join(sorted(unknown))}")
        return cls(**options)


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    """A snapshot of :meth:`Session.statistics`."""

    streams_open: int
    streams_opened: int
    streams_accepted: int
    bytes_sent: int
    bytes_received: int
    write_buffer: int
    our_session_window: int
    their_session_window: int
    peer_flow_control: bool
    pings_sent: int
    pings_received: int
    last_rtt: float | None
    #: our PINGs not answered (nor timed out) yet
    pings_outstanding: int = 0
    #: streams the peer opened that wait for :meth:`Session.accept`
    streams_waiting: int = 0
    #: header bytes those streams hold (bounded by ``accept_backlog_bytes``)
    waiting_header_bytes: int = 0
    #: answers to the peer's frames (PING echoes, RST_STREAMs) not written yet;
    #: the reader stops reading while many wait (a peer that floods without reading)
    queued_answers: int = 0


class _LocalClose(MuxstreamError):
    """Marker: the session was closed by this side (streams raise ClosedResourceError)."""


class Session(trio.abc.Listener[Stream]):
    """A multiplexed connection. Create with :func:`open_session` (or a helper).

    A Session is a ``trio.abc.Listener[Stream]``: :meth:`accept` returns the
    streams the peer opens; ``async for stream in session`` does the same and
    ends when the peer goes away.
    """

    def __init__(self, transport: trio.abc.Stream, role: Role, options: SessionOptions) -> None:
        self.transport = transport
        self.role = role
        self.options = options
        # an empty write buffer must always have room for a piece (_send_room)
        self._min_piece = max(1, min(_MIN_PIECE, options.write_buffer_size // 2))
        self._conn = Connection(
            role,
            initial_window=options.initial_window,
            session_window=options.session_window,
            max_concurrent_streams=options.max_concurrent_streams,
            max_send_frame=options.max_frame_size,
            max_header_block=options.max_header_block,
        )
        self._streams: dict[int, Stream] = {}
        self._accept_queue: deque[Stream] = deque()
        self._backlog_bytes = 0  # header bytes of the streams in _accept_queue
        self._accept_lot = ParkingLot()
        self._open_lot = ParkingLot()
        self._writer_lot = ParkingLot()
        self._reader_lot = ParkingLot()
        self._space_waiters: set[Stream] = set()
        self._pings: dict[int, tuple[float, trio.Event]] = {}
        # Ping deadlines, in send order, enforced by one task (_ping_watch) rather
        # than a cancel scope per ping (~20 us each here: a tenth of a round trip).
        self._ping_deadlines: deque[tuple[float, int]] = deque()
        self._ping_watch_until = math.inf
        self._ping_watch_lot = ParkingLot()
        self._ping_rtts: dict[int, float] = {}
        self._error: BaseException | None = None
        self._closing = False
        self._user_closed = False
        self._draining = False
        self._want_eof = False
        self._eof_received = False
        self._goaway: SessionGoneAway | None = None
        self._overfull: Stream | None = None
        self._buffered_total = 0
        self._task_scope = trio.CancelScope()
        self._writer_done = trio.Event()
        # Inline writes (see _kick): the socket's descriptor, the writer's state,
        # and the bytes an inline write could not place, which the writer sends first.
        self._sock: trio.socket.SocketType | None = None
        if _INLINE_WRITES and isinstance(transport, trio.SocketStream):
            self._sock = transport.socket
            _limit_unsent(self._sock)
        self._writer_busy = False
        self._unsent: list[bytes | memoryview] = []
        #: everything queued is written (and FIN sent, where the transport can)
        self._flushed = trio.Event()
        self._reader_done = trio.Event()
        self._closed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._last_activity = 0.0
        self.streams_opened = 0
        self.streams_accepted = 0
        self.pings_sent = 0
        self.pings_received = 0
        self.last_rtt: float | None = None

    # --- lifecycle ------------------------------------------------------------

    def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._last_activity = trio.current_time()
        nursery.start_soon(self._run_tasks)

    async def _run_tasks(self) -> None:
        with self._task_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader)
                nursery.start_soon(self._writer)
                nursery.start_soon(self._ping_watch)
                if self.options.keepalive_interval:
                    nursery.start_soon(self._keepalive)
                if self.options.idle_timeout:
                    nursery.start_soon(self._idle_watch)

    @property
    def closed(self) -> bool:
        """True once the transport is closed."""
        return self._closed.is_set()

    @property
    def error(self) -> BaseException | None:
        """Why the session broke (None while healthy or after a clean close)."""
        return self._error

    def _spawn_close(self) -> None:
        if not self._closing and self._nursery is not None:
            self._nursery.start_soon(self._close)

    async def aclose(self) -> None:
        """Close gracefully: flush, GOAWAY, FIN, drain until the peer's EOF, close.

        Bounded by ``close_timeout``. If that runs out or this call is
        cancelled, remaining streams are reset and the transport closed hard.
        Calling it again waits for the first call to finish.
        """
        self._user_closed = True
        await self._close()

    async def _close(self) -> None:
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            with trio.move_on_after(self.options.close_timeout) as scope:
                await self._graceful_close()
            if scope.cancelled_caught:
                logger.debug("close_timeout (%ss) ran out; closing hard",
                             self.options.close_timeout)
        finally:
            with trio.CancelScope(shield=True):
                await self._hard_close(
                    _LocalClose("session closed") if self._user_closed
                    else SessionClosed("peer closed the session"))

    async def _graceful_close(self) -> None:
        conn = self._conn
        if self._error is None and conn.terminated is None:
            gone = None if self._user_closed else SessionClosed("peer closed the session")
            for stream in list(self._streams.values()):
                if stream in self._accept_queue:
                    continue
                if not stream._sent_eof and not stream._local_closed:
                    if gone is None:
                        stream._sent_eof = True
                    else:
                        stream._mark_broken(gone)  # further sends: BrokenResourceError
                    self._try(conn.end_stream, stream.stream_id)
            for stream in self._accept_queue:
                stream._mark_broken(_LocalClose("session closed before accept()"))
                self._try(conn.reset_stream, stream.stream_id, RstStatus.REFUSED_STREAM)
            self._accept_queue.clear()
            self._backlog_bytes = 0
            conn.go_away(GoAwayStatus.OK)
        self._draining = True
        self._want_eof = True
        self._wake_all()
        await self._flushed.wait()
        if not self._peer_finished():
            await self._reader_done.wait()

    def _peer_finished(self) -> bool:
        """Over a transport that cannot half-close (TLS), the peer's EOF only comes
        when it closes too, and it waits for ours: stop draining once the peer sent
        GOAWAY (behind all its data) and no stream is left, or both ends would sit
        out ``close_timeout``."""
        return not self._half_closeable and self._goaway is not None and not self._streams

    async def _hard_close(self, reason: BaseException) -> None:
        self._closing = True
        if self._closed.is_set():
            return
        if self._error is None and not isinstance(reason, _LocalClose | SessionClosed):
            self._error = reason
        for stream in list(self._streams.values()):
            stream._mark_broken(reason if self._error is None else self._error)
        self._streams.clear()
        self._wake_all()
        self._task_scope.cancel()
        for _start, ev in self._pings.values():
            ev.set()  # _ping_watch is gone: nothing else would wake them
        with trio.move_on_after(1.0) as scope:
            await self.transport.aclose()
        if scope.cancelled_caught:
            await trio.aclose_forcefully(self.transport)
        self._closed.set()

    def _fail(self, exc: BaseException) -> None:
        """Background failure: record it, wake everyone, tear down (never raises)."""
        if self._error is None:
            self._error = exc
            if isinstance(exc, MuxstreamError | RemoteProtocolError | ConnectionLost):
                logger.info("session failed: %s", exc)
            else:
                logger.error("session failed", exc_info=exc)
        for stream in list(self._streams.values()):
            stream._mark_broken(exc)
        for _start, ev in self._pings.values():
            ev.set()
        self._want_eof = True
        self._wake_all()
        if self._nursery is not None and not self._closed.is_set():
            self._nursery.start_soon(self._teardown_after_error)

    async def _teardown_after_error(self) -> None:
        # Give the writer a moment to put the GOAWAY that explains the error on the wire.
        with trio.move_on_after(min(1.0, self.options.close_timeout)):
            await self._flushed.wait()
        with trio.CancelScope(shield=True):
            await self._hard_close(self._error or ConnectionLost("session failed"))

    def _wake_all(self) -> None:
        for stream in self._streams.values():
            stream._wake()
        for stream in self._accept_queue:
            stream._wake()
        self._accept_lot.unpark_all()
        self._open_lot.unpark_all()
        self._writer_lot.unpark_all()
        self._reader_lot.unpark_all()

    @staticmethod
    def _try(verb: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        try:
            verb(*args, **kwargs)
        except LocalProtocolError:
            pass  # the stream is already gone: nothing to send

    # --- checks used by user calls ------------------------------------------------

    def _check_usable(self) -> None:
        if self._error is not None:
            raise trio.BrokenResourceError(f"session broken: {self._error}") from self._error
        if self._closing:
            if not self._user_closed:
                cause = self._goaway or SessionClosed("peer closed the session")
                raise trio.BrokenResourceError(f"peer closed the session: {cause}") from cause
            raise trio.ClosedResourceError("session is closed")

    # --- streams ------------------------------------------------------------------

    async def open_stream(
        self,
        headers: HeadersLike | Headers | None = None,
        *,
        end_stream: bool = False,
        timeout: float | None = None,
        wait_reply: bool = True,
    ) -> Stream:
        """Open a stream with ``headers`` and wait for the peer's SYN_REPLY.

        Args:
            headers: the SYN_STREAM headers (names are lower-cased on the wire).
            end_stream: send FIN with SYN_STREAM (we will send no data).
            timeout: seconds to wait for the reply (default ``open_timeout``).
            wait_reply: False returns as soon as SYN_STREAM is queued, without
                waiting a round trip for SYN_REPLY: SPDY lets data follow
                SYN_STREAM at once. A muxstream peer keeps such data for the
                stream; spdystream drops DATA that arrives before its stream
                handler replied, which is safe only with handlers that reply at
                once (spdystream's own and Kubernetes' do; the handler runs
                before spdystream reads the next frame). A refusal surfaces on
                the stream's next call as ``trio.BrokenResourceError``;
                :meth:`Stream.wait_reply` waits for the reply later, and
                ``reply_headers`` is empty until then.

        Raises:
            StreamOpenTimeout: no reply in time (the stream is reset).
            trio.BrokenResourceError: refused or reset by the peer, GOAWAY
                received, or the session broke.
            trio.ClosedResourceError: this session is closing.
        """
        self._check_usable()
        if self._goaway is not None:
            raise trio.BrokenResourceError("peer sent GOAWAY") from self._goaway
        hdrs = headers if isinstance(headers, Headers) else Headers(headers)
        limit = self.options.open_timeout if timeout is None else timeout
        if not self._conn.can_open_stream:  # no cancel scope on the fast path
            with trio.move_on_after(limit) as scope:
                while not self._conn.can_open_stream:
                    await self._open_lot.park()
                    self._check_usable()
            if scope.cancelled_caught:
                raise StreamOpenTimeout("peer's MAX_CONCURRENT_STREAMS stayed reached")
        sid = self._conn.open_stream(hdrs, end_stream=end_stream)
        stream = Stream(self, sid, hdrs, local=True)
        stream._sent_eof = end_stream
        self._streams[sid] = stream
        self.streams_opened += 1
        self._last_activity = trio.current_time()
        self._kick()
        if not wait_reply:
            await checkpoint()
            return stream
        await self._wait_reply(stream, limit)
        return stream

    async def _wait_reply(self, stream: Stream, limit: float) -> None:
        """Wait up to ``limit`` s for ``stream``'s SYN_REPLY; reset it on failure."""
        stream._awaiting_reply += 1
        try:
            with trio.move_on_after(limit) as scope:
                while not stream._replied and stream._broken is None:
                    await stream._lot.park()
        except BaseException:
            self._reset_stream(stream, RstStatus.CANCEL)
            raise
        finally:
            stream._awaiting_reply -= 1
        if scope.cancelled_caught:
            self._reset_stream(stream, RstStatus.CANCEL)
            raise StreamOpenTimeout(
                f"no SYN_REPLY for stream {stream.stream_id} within {limit} s")
        if not stream._replied:
            stream._raise_broken()

    async def accept(self) -> Stream:
        """The next stream the peer opened (SYN_REPLY is sent now).

        Raises:
            trio.ClosedResourceError: this session was closed.
            trio.BrokenResourceError: the peer went away (chained to
                :class:`SessionGoneAway` / :class:`SessionClosed`) or the session broke.
        """
        while True:
            while self._accept_queue:
                stream = self._accept_queue.popleft()
                self._backlog_bytes -= _headers_size(stream.headers)
                if stream._broken is not None:
                    continue
                if self._conn.stream_state(stream.stream_id) is StreamState.CLOSED and (
                    stream.stream_id not in self._streams
                ):
                    continue
                self._try(self._conn.send_reply, stream.stream_id)
                stream._replied = True
                self.streams_accepted += 1
                self._kick()
                await checkpoint()
                return stream
            if self._closing or self._error is not None:
                self._check_usable()
            if self._goaway is not None:
                raise trio.BrokenResourceError("peer sent GOAWAY") from self._goaway
            if self._eof_received:
                raise trio.BrokenResourceError("peer closed the session") from SessionClosed(
                    "peer closed the connection"
                )
            await self._accept_lot.park()

    def __aiter__(self) -> AsyncIterator[Stream]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Stream]:
        while True:
            try:
                stream = await self.accept()
            except trio.BrokenResourceError as exc:
                if isinstance(exc.__cause__, SessionGoneAway | SessionClosed):
                    return
                raise
            except trio.ClosedResourceError:
                return
            yield stream

    # called by Stream -----------------------------------------------------------

    def _send_room(self, stream: Stream, want: int = 1) -> int:
        """How much of ``want`` bytes ``stream`` may queue now (0: it must wait).

        A sender waits until the write buffer has room for ``want`` bytes or
        ``_MIN_PIECE`` (at most half the write buffer), whichever is less,
        rather than queue the sliver other senders left (16 busy streams sent
        1 in 5 DATA frames under 64 KiB, some of 8 bytes): each frame costs on
        both sides, and a small one breaks the receiver's header-then-payload
        reads.
        """
        conn = self._conn
        room = self.options.write_buffer_size - conn.ordered_bytes
        piece = self._min_piece
        if room < (want if want < piece else piece):
            self._space_waiters.add(stream)
            return 0
        window = conn.sendable(stream.stream_id)
        if window <= 0 and conn.stream_state(stream.stream_id) in (
            StreamState.HALF_CLOSED_LOCAL,
            StreamState.CLOSED,
            StreamState.RESET,
        ):
            if stream._broken is None:
                stream._mark_broken(StreamResetError(RstStatus.STREAM_ALREADY_CLOSED, remote=True,
                                                     message="stream is closed for sending"))
            stream._raise_broken()
        return min(room, window)

    def _data_queued(self) -> None:
        self._last_activity = trio.current_time()
        self._kick()

    def _kick(self) -> None:
        """Get queued frames moving: write them now from the calling task if the
        writer is idle, else wake the writer.

        An inline write is one non-blocking ``writev`` on the socket: no await,
        so nothing else can interleave, and whatever the kernel does not take
        goes to ``_unsent``, which the writer sends before anything else. It
        saves the hand-off to the writer task (two task switches) per batch,
        which is most of a PING's round trip and of a short stream's cost.
        Order is kept: inline writes happen only while the writer holds no
        bytes of its own (it is parked, ``_unsent`` is empty).
        """
        sock = self._sock
        conn = self._conn
        if (
            sock is None
            or self._writer_busy
            or self._unsent
            or self._writer_done.is_set()
            or not conn.has_data_to_send
        ):
            self._writer_lot.unpark_all()
            return
        fd = sock.fileno()
        if fd < 0:  # closed: the descriptor number may belong to another socket now
            self._writer_lot.unpark_all()
            return
        bufs = self._take_batch()
        try:
            sent = os.writev(fd, bufs if len(bufs) <= _IOV_MAX else bufs[:_IOV_MAX])
        except OSError:
            # EAGAIN, or a broken connection the writer will meet and report.
            sent = 0
        rest = _unwritten(bufs, sent)
        if rest or conn.has_data_to_send or self._want_eof:
            self._unsent = rest
            self._writer_lot.unpark_all()

    def _take_batch(self) -> list[bytes | memoryview]:
        """The next batch to write; wakes whoever waited for it to leave the queue."""
        conn = self._conn
        bufs = conn.buffers_to_send(_WRITE_BATCH)
        if self._reader_lot:
            self._reader_lot.unpark_all()  # the answers are out of the queue
        if self._space_waiters and conn.ordered_bytes < self.options.write_buffer_size:
            self._wake_space_waiters()
        return bufs

    def _consumed(self, stream: Stream, n: int) -> None:
        conn = self._conn
        self._buffered_total -= n
        conn.acknowledge_received_data(stream.stream_id, n)
        if conn.has_data_to_send:
            self._kick()
        if self._overfull is stream and stream._buffered <= self._buffer_limit:
            self._overfull = None
            self._reader_lot.unpark_all()

    def _end_stream(self, stream: Stream) -> None:
        stream._sent_eof = True
        self._try(self._conn.end_stream, stream.stream_id)
        self._kick()
        self._forget_if_done(stream)

    def _drop_buffer(self, stream: Stream) -> None:
        if stream._buffered:
            self._buffered_total -= stream._buffered
            self._conn.acknowledge_received_data(stream.stream_id, stream._buffered)
            stream._buffer.clear()
            stream._buffered = 0
        if self._overfull is stream:
            self._overfull = None
            self._reader_lot.unpark_all()

    def _close_stream(self, stream: Stream) -> None:
        stream._local_closed = True
        conn = self._conn
        sid = stream.stream_id
        if not stream._sent_eof and not self._closed.is_set():
            stream._sent_eof = True
            self._try(conn.end_stream, sid)
        if not stream._eof and conn.stream_state(sid) is not StreamState.CLOSED:
            # The peer may still be sending: tell it to stop, after our data.
            self._try(conn.reset_stream, sid, RstStatus.CANCEL, ordered=True)
        self._release_closed_stream(stream)

    def _reset_stream(self, stream: Stream, status: int) -> None:
        stream._local_closed = True
        if not self._closed.is_set():
            self._try(self._conn.reset_stream, stream.stream_id, status)
        self._release_closed_stream(stream)

    def _release_closed_stream(self, stream: Stream) -> None:
        """After a local close or reset: free its buffer and table slot, wake waiters."""
        self._drop_buffer(stream)
        self._streams.pop(stream.stream_id, None)
        stream._wake()
        self._kick()
        self._open_lot.unpark_all()

    def _forget_if_done(self, stream: Stream) -> None:
        """Drop a stream from the routing table once the protocol is done with it."""
        if (
            self._conn.stream_state(stream.stream_id) is StreamState.CLOSED
            and stream.stream_id in self._streams
        ):
            del self._streams[stream.stream_id]
            self._open_lot.unpark_all()
            if self._goaway is not None and not self._streams:
                self._spawn_close()

    @property
    def _buffer_limit(self) -> int:
        return 2 * self.options.initial_window

    # --- ping -------------------------------------------------------------------

    async def ping(self, timeout: float | None = None) -> float:
        """Send a PING and return the round-trip time in seconds.

        Raises:
            PingTimeout: no answer within ``timeout`` (default ``ping_timeout``).
            trio.BrokenResourceError / trio.ClosedResourceError: as for streams.
        """
        self._check_usable()
        self._check_peer_open()
        pid = self._conn.ping()
        event = trio.Event()
        self._pings[pid] = (trio.current_time(), event)
        self.pings_sent += 1
        self._kick()
        self._reader_lot.unpark_all()
        limit = self.options.ping_timeout if timeout is None else timeout
        deadline = trio.current_time() + limit
        pending = self._ping_deadlines
        while pending and pending[0][1] not in self._pings:
            pending.popleft()  # answered long ago
        pending.append((deadline, pid))
        if deadline < self._ping_watch_until:
            self._ping_watch_lot.unpark_all()
        try:
            await event.wait()  # set by the answer, _ping_watch, or a failure
        finally:
            self._pings.pop(pid, None)
        rtt = self._ping_rtts.pop(pid, None)
        if rtt is None:
            self._check_usable()
            self._check_peer_open()
            raise PingTimeout(f"no answer to PING {pid} within {limit} s")
        return rtt

    async def _ping_watch(self) -> None:
        """Wake each ping whose deadline passed (it then raises PingTimeout).

        Sleeps until the earliest deadline of a ping still unanswered; a new ping
        wakes it only if its deadline is earlier still, so back-to-back pings
        cost no wake-up here at all.
        """
        pending = self._ping_deadlines
        pings = self._pings
        while True:
            now = trio.current_time()
            earliest = math.inf
            for deadline, pid in list(pending):
                if pid not in pings:
                    continue
                if deadline <= now:
                    pings[pid][1].set()
                elif deadline < earliest:
                    earliest = deadline
            while pending and (pending[0][1] not in pings or pending[0][0] <= now):
                pending.popleft()
            self._ping_watch_until = earliest
            with trio.move_on_at(earliest):
                await self._ping_watch_lot.park()

    def _check_peer_open(self) -> None:
        if self._eof_received:
            # After its FIN the peer can write nothing, not even a PING echo.
            raise trio.BrokenResourceError("peer closed the session") from SessionClosed(
                "peer closed the connection (EOF)")

    async def _keepalive(self) -> None:
        interval = self.options.keepalive_interval
        assert interval
        while not self._closing:
            await trio.sleep(interval)
            if self._closing:
                return
            try:
                await self.ping()
            except PingTimeout:
                self._fail(KeepaliveTimeout(
                    f"keepalive PING unanswered for {self.options.ping_timeout} s"))
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async def _idle_watch(self) -> None:
        idle = self.options.idle_timeout
        assert idle
        while not self._closing:
            deadline = self._last_activity + idle
            if trio.current_time() >= deadline:
                if not self._streams and not self._accept_queue:
                    logger.debug("idle for %s s; closing", idle)
                    self._spawn_close()
                    return
                self._last_activity = trio.current_time()
                continue
            await trio.sleep_until(deadline)

    # --- statistics -----------------------------------------------------------------

    def statistics(self) -> SessionStatistics:
        conn = self._conn
        return SessionStatistics(
            streams_open=len(self._streams),
            streams_opened=self.streams_opened,
            streams_accepted=self.streams_accepted,
            bytes_sent=conn.bytes_sent,
            bytes_received=conn.bytes_received,
            write_buffer=conn.ordered_bytes,
            our_session_window=conn.our_session_window,
            their_session_window=conn.their_session_window,
            peer_flow_control=conn.peer_flow_control,
            pings_sent=self.pings_sent,
            pings_received=self.pings_received,
            last_rtt=self.last_rtt,
            pings_outstanding=len(self._pings),
            streams_waiting=len(self._accept_queue),
            waiting_header_bytes=self._backlog_bytes,
            queued_answers=conn.queued_answers,
        )

    # --- the reader task --------------------------------------------------------------

    def _make_receiver(self) -> Callable[[], Awaitable[bytes | bytearray | memoryview]]:
        transport = self.transport
        if isinstance(transport, trio.SocketStream):
            sock = transport.socket
            buf = bytearray(_RECV_SIZE)
            view = memoryview(buf)
            conn = self._conn

            unyielded = 0
            drained = False

            async def recv_into() -> bytes | memoryview:
                # Non-blocking reads straight on the descriptor, yielding to the
                # scheduler once per _YIELD_BYTES (trio's socket methods yield on
                # every call): after a large DATA frame, read the next frame's header
                # alone, then its payload into the very bytes object the stream
                # hands out -- no copy, and no extra scheduler pass for it.
                # A short, small read (a PING, a short stream's frames) emptied the
                # socket: the next read would fail with EAGAIN, so wait first.
                nonlocal unyielded, drained
                while True:
                    fd = sock.fileno()
                    if fd < 0:
                        raise trio.ClosedResourceError("the socket was closed")
                    if drained:
                        drained = False
                        unyielded = 0
                        await trio.lowlevel.wait_readable(sock)
                        continue  # the socket may have been closed meanwhile
                    hint = conn.read_hint
                    try:
                        if hint > 0:  # payload due: into a fresh bytes, no copy
                            want = hint if hint < _RECV_SIZE else _RECV_SIZE
                            data: bytes | memoryview = os.read(fd, want)
                        else:
                            want = -hint if hint else _RECV_SIZE
                            data = view[: os.readv(fd, (view[:want],))]
                    except (BlockingIOError, InterruptedError):
                        unyielded = 0
                        await trio.lowlevel.wait_readable(sock)
                        continue
                    n = len(data)
                    if n < _SMALL_READ and n < want:
                        drained = True
                    unyielded += n + _YIELD_PER_READ
                    if unyielded >= _YIELD_BYTES or not n:
                        unyielded = 0
                        await checkpoint()
                    return data

            return recv_into

        async def receive_some() -> bytes | bytearray:
            # Not 1 MiB: SSLStream allocates max_bytes on every call yet returns
            # one 16 KiB record (measured: 194 vs 340 MiB/s).
            return await transport.receive_some(_STREAM_RECV_SIZE)

        return receive_some

    async def _reader(self) -> None:
        try:
            recv = self._make_receiver()
            while True:
                while self._reader_must_pause():
                    await self._reader_lot.park()
                data = await recv()
                if not data:
                    self._on_transport_eof()
                    return
                if not self._process(data):
                    return
                if self._draining and self._peer_finished():
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if not self._closed.is_set():
                self._fail(ConnectionLost(f"transport failed while reading: {exc!r}"))
        except Exception as exc:  # a bug: still never raise into user code
            self._fail(exc)
        finally:
            self._reader_done.set()

    def _reader_must_pause(self) -> bool:
        """TCP backpressure towards a peer that ignores flow control (spdystream).

        The reader pauses while a stream holds more than twice its window --
        except while a PING is outstanding: its echo sits behind that data, and
        the caller waiting for it may be the one who would drain the stream.
        Even then, the total stays below ``session_window``.

        It also pauses while ``_ANSWERS_PAUSE`` answers to the peer's frames
        wait for the writer: a peer that floods PINGs or doomed SYN_STREAMs
        without reading our answers is slowed to the pace it reads them.
        """
        if self._conn.queued_answers >= _ANSWERS_PAUSE:
            return True
        if self._overfull is None or self._draining:
            return False
        return not self._pings or self._buffered_total >= self.options.session_window

    def _process(self, data: bytes | bytearray | memoryview) -> bool:
        """Feed bytes to the protocol; False once the session is dead."""
        conn = self._conn
        chunk: bytes | bytearray | memoryview = data
        while True:
            try:
                events = conn.receive_data(chunk)
            except RemoteProtocolError as exc:
                self._handle_events(exc.events)
                if exc.fatal:
                    self._writer_lot.unpark_all()
                    self._fail(exc)
                    return False
                assert exc.stream_id is not None
                stream = self._streams.pop(exc.stream_id, None)
                if stream is not None:
                    stream._mark_broken(StreamResetError(
                        exc.rst_status or RstStatus.PROTOCOL_ERROR, remote=False,
                        message=f"stream reset: peer protocol error: {exc}"))
                chunk = b""
                continue
            self._handle_events(events)
            if conn.has_data_to_send:
                self._kick()
            return True

    def _handle_events(self, events: list[Event]) -> None:
        if not events:
            return
        streams = self._streams
        conn = self._conn
        track = not conn.peer_flow_control and not self._draining
        # Everything but PING (and its echo) is activity for idle_timeout.
        active = False
        for ev in events:
            if isinstance(ev, DataReceived):
                active = True
                stream = streams.get(ev.stream_id)
                if stream is None or stream._local_closed or (
                    self._draining and not conn.peer_flow_control
                    and stream._buffered > self._buffer_limit
                ):
                    # Nobody will read it (or, while draining on close, a peer that
                    # ignores windows sent more than we hold): discard, credit back.
                    conn.acknowledge_received_data(ev.stream_id, len(ev.data))
                    continue
                stream._feed(ev.data)
                self._buffered_total += len(ev.data)
                if track and stream._buffered > self._buffer_limit:
                    self._overfull = stream
            elif isinstance(ev, StreamEnded):
                active = True
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream._eof = True
                    stream._wake()
                    self._forget_if_done(stream)
            elif isinstance(ev, StreamOpened):
                active = True
                self._on_stream_opened(ev)
            elif isinstance(ev, ReplyReceived):
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream.reply_headers = ev.headers
                    stream._replied = True
                    if ev.ended:
                        stream._eof = True
                        stream._wake()
                    elif stream._awaiting_reply:
                        # Only reply waiters care: a receiver woken now would find
                        # nothing and park again (one wasted pass per short stream).
                        stream._wake()
            elif isinstance(ev, WindowUpdated):
                if ev.stream_id == 0:
                    for s in streams.values():
                        s._wake()
                else:
                    stream = streams.get(ev.stream_id)
                    if stream is not None:
                        stream._wake()
            elif isinstance(ev, StreamReset):
                stream = streams.pop(ev.stream_id, None)
                if stream is not None:
                    stream._mark_broken(StreamResetError(ev.status, remote=ev.remote))
                    self._open_lot.unpark_all()
            elif isinstance(ev, PingAcked):
                waiter = self._pings.get(ev.ping_id)
                if waiter is not None:
                    rtt = trio.current_time() - waiter[0]
                    self._ping_rtts[ev.ping_id] = rtt
                    self.last_rtt = rtt
                    waiter[1].set()
            elif isinstance(ev, PingReceived):
                self.pings_received += 1
            elif isinstance(ev, HeadersReceived):
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    merged = Headers()
                    size = 0
                    for name, values in (*stream.extra_headers.items_all(),
                                         *ev.headers.items_all()):
                        merged._items.setdefault(name, []).extend(values)
                        size += len(name) + sum(len(v) for v in values)
                    if size > self.options.max_header_block:
                        # HEADERS compress ~1000:1; unbounded merging would let a peer
                        # pile up memory a few bytes at a time. A stream error.
                        self._try(conn.reset_stream, ev.stream_id, RstStatus.PROTOCOL_ERROR)
                        streams.pop(ev.stream_id, None)
                        stream._mark_broken(StreamResetError(
                            RstStatus.PROTOCOL_ERROR, remote=False,
                            message="stream reset: the peer's HEADERS exceed max_header_block"))
                        self._drop_buffer(stream)
                        continue
                    stream.extra_headers = merged
                    if ev.ended:
                        stream._eof = True
                    stream._wake()
            elif isinstance(ev, GoAwayReceived):
                self._goaway = SessionGoneAway(ev.last_good_stream_id, ev.status)
                self._accept_lot.unpark_all()
                self._open_lot.unpark_all()
                if not self._streams and not self._accept_queue:
                    self._spawn_close()
            elif isinstance(ev, SettingsReceived):
                self._open_lot.unpark_all()
                for s in streams.values():
                    s._wake()
        if active:
            self._last_activity = trio.current_time()
        if self._space_waiters and self._conn.ordered_bytes < self.options.write_buffer_size:
            self._wake_space_waiters()

    def _on_stream_opened(self, ev: StreamOpened) -> None:
        conn = self._conn
        queue = self._accept_queue
        size = _headers_size(ev.headers)
        if self._closing or len(queue) >= self.options.accept_backlog or (
            queue and self._backlog_bytes + size > self.options.accept_backlog_bytes
        ):
            self._try(conn.reset_stream, ev.stream_id, RstStatus.REFUSED_STREAM)
            return
        self._backlog_bytes += size
        stream = Stream(self, ev.stream_id, ev.headers, local=False)
        if ev.ended:
            stream._eof = True
        if ev.unidirectional:
            stream._sent_eof = True
        if conn.stream_state(ev.stream_id) is not StreamState.CLOSED:
            self._streams[ev.stream_id] = stream
        self._accept_queue.append(stream)
        self._accept_lot.unpark_all()

    def _on_transport_eof(self) -> None:
        self._eof_received = True
        lost = ConnectionLost("peer closed the connection before ending the stream")
        for stream in list(self._streams.values()):
            if not stream._eof:
                stream._mark_broken(lost)
            stream._wake()
        self._accept_lot.unpark_all()
        for _start, ev in self._pings.values():
            ev.set()
        if not self._closing:
            # The peer is done (GOAWAY + FIN): finish our side so its reader sees our FIN.
            self._spawn_close()

    # --- the writer task ----------------------------------------------------------------

    def _make_sender(self) -> Callable[[list[bytes | memoryview]], Awaitable[None]]:
        transport = self.transport
        if isinstance(transport, trio.SocketStream):
            sock = transport.socket
            _limit_unsent(sock)

            async def sendmsg(bufs: list[bytes | memoryview]) -> None:
                i = 0
                count = len(bufs)
                while i < count:
                    sent = await sock.sendmsg(bufs[i : i + _IOV_MAX])
                    while sent:
                        size = len(bufs[i])
                        if sent >= size:
                            sent -= size
                            i += 1
                        else:
                            bufs[i] = memoryview(bufs[i])[sent:]
                            sent = 0

            return sendmsg

        async def send_all(bufs: list[bytes | memoryview]) -> None:
            # One write per batch: a DATA header sent alone would become its own
            # TLS record or WebSocket message; joining costs one payload copy.
            await transport.send_all(bufs[0] if len(bufs) == 1 else b"".join(bufs))

        return send_all

    async def _writer(self) -> None:
        conn = self._conn
        try:
            send = self._make_sender()
            while True:
                if self._unsent or conn.has_data_to_send:
                    if self._unsent:  # left over by an inline write: it goes first
                        bufs, self._unsent = self._unsent, []
                    else:
                        bufs = self._take_batch()
                    self._writer_busy = True
                    await send(bufs)
                    self._writer_busy = False
                    continue
                if self._want_eof and not self._flushed.is_set():
                    self._writer_busy = True  # no inline write may follow our FIN
                    if await self._send_transport_eof():
                        return  # after our FIN nothing more can be written
                    self._writer_busy = False
                    # No half-close (TLS): everything is written, but keep answering
                    # the peer's PINGs while the reader drains, until the hard close.
                    self._flushed.set()
                await self._writer_lot.park()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if not self._closed.is_set():
                self._fail(ConnectionLost(f"transport failed while writing: {exc!r}"))
        except Exception as exc:  # a bug: still never raise into user code
            self._fail(exc)
        finally:
            self._flushed.set()
            self._writer_done.set()

    @property
    def _half_closeable(self) -> bool:
        transport = self.transport
        return isinstance(transport, trio.abc.HalfCloseableStream) or hasattr(
            transport, "send_eof")

    async def _send_transport_eof(self) -> bool:
        """Half-close the transport if it can; False if it cannot (TLS)."""
        if self._half_closeable:
            await self.transport.send_eof()  # type: ignore[attr-defined]
            return True
        return False

    def _wake_space_waiters(self) -> None:
        waiters = self._space_waiters
        self._space_waiters = set()
        for stream in waiters:
            stream._wake()


def _headers_size(headers: Headers) -> int:
    """Bytes of names and values in ``headers`` (what they hold in memory, roughly)."""
    return sum(len(name) + sum(map(len, values)) for name, values in headers.items_all())


def _unwritten(bufs: list[bytes | memoryview], sent: int) -> list[bytes | memoryview]:
    """What is left of ``bufs`` after a write that took ``sent`` bytes."""
    for i, b in enumerate(bufs):
        size = len(b)
        if sent < size:
            rest = bufs[i:]
            if sent:
                rest[0] = memoryview(b)[sent:]
            return rest
        sent -= size
    return []


def _limit_unsent(sock: trio.socket.SocketType) -> None:
    """Keep at most ``_NOTSENT_LOWAT`` unsent bytes in the kernel (Linux, macOS).

    Bytes the kernel already holds cannot be overtaken: without this, a PING
    echo queued "urgently" still waits behind megabytes of DATA in the socket
    buffer. With it, the socket only turns writable when little is left, so the
    urgent queue really goes first (the HTTP/2 prioritisation trick).
    """
    option = getattr(socket, "TCP_NOTSENT_LOWAT", 25 if sys.platform == "linux" else None)
    if option is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, _NOTSENT_LOWAT)
    except OSError:
        pass


def _coerce_role(role: Role | str) -> Role:
    if isinstance(role, Role):
        return role
    return Role(role.lower())


def start_session(
    nursery: trio.Nursery, transport: trio.abc.Stream, *, role: Role | str, **options: Any
) -> Session:
    """Start a session over ``transport`` with its tasks in ``nursery``; return it at once.

    For tests and for code that runs its own nursery (as trio-websocket's
    ``connect_websocket`` does): :func:`open_session` is the usual way. The
    caller closes the session, gracefully with :meth:`Session.aclose`;
    cancelling ``nursery`` stops the session's tasks without closing the
    transport.

    Args: as for :func:`open_session`.
    """
    session = Session(transport, _coerce_role(role), SessionOptions.from_kwargs(options))
    session._start(nursery)
    return session


@asynccontextmanager
async def open_session(
    transport: trio.abc.Stream, *, role: Role | str, **options: Any
) -> AsyncIterator[Session]:
    """Run a session over ``transport`` for the duration of the ``async with``.

    Leaving the block normally closes gracefully (:meth:`Session.aclose`); leaving
    it with an exception (or cancellation) resets everything and closes hard.

    Args:
        transport: any ``trio.abc.Stream`` (TCP, TLS, upgraded HTTP, WebSocket,
            memory streams). The session owns it from now on.
        role: ``CLIENT`` (odd stream ids) or ``SERVER`` (even).
        **options: fields of :class:`SessionOptions`.
    """
    opts = SessionOptions.from_kwargs(options)
    session = Session(transport, _coerce_role(role), opts)
    async with trio.open_nursery() as nursery:
        session._start(nursery)
        try:
            yield session
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await session._hard_close(
                    _LocalClose(f"session abandoned: {type(exc).__name__}"))
            raise
        else:
            await session.aclose()

