"""Session: one transport, one reader task, one writer task, many streams.

Theory of operation
-------------------
Only the reader task reads the transport (``_reader``); only the writer task
writes it, except for inline writes from a task that queued frames while the
writer was idle (``_writer``). Everything else -- stream sends, window credits,
pings, resets -- is a synchronous change to the sans-IO
:class:`~muxstream.protocol.Connection` followed by a wake-up of the task that
has to act on it (``_core``). Background tasks never raise into user code: a
failure becomes the session's ``error`` and every blocked call wakes with
``trio.BrokenResourceError`` chained to it.

This module holds the public API and the session's lifecycle: starting the
tasks, and the close path (``aclose()``; see docs/close-path.md for why):

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

The parts of the trio layer:

* ``_session``: this module -- the API, the tasks, the close path;
* ``_core``: ``SessionCore``, the state the parts share and what streams call;
* ``_dispatch``: protocol events applied to the session, one handler each;
* ``_reader`` / ``_writer``: the one reader task / the one writer task (and
  inline writes), with the socket and stream I/O classes;
* ``_pings``: ping deadlines, keepalive, idle timeout;
* ``_accept``: the accept backlog and its limits;
* ``_stream``: ``Stream``, its state (``StreamCore``), and ``StreamHost``;
* ``_options``: ``SessionOptions``, its keywords, the defaults, statistics;
* ``_errors``: the errors user calls chain to, and how background tasks report failures.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Unpack

import trio
from trio.lowlevel import checkpoint

from . import _reader
from ._accel import ACCELERATOR
from ._core import CLOSED, DRAINING, OPEN, SessionCore, Trigger
from ._errors import (
    ConnectionLost,
    LocalClose,
    SessionClosed,
    SessionGoneAway,
    StreamOpenTimeout,
)
from ._options import DEFAULT_CLOSE_TIMEOUT, SessionKeywords, SessionOptions, SessionStatistics
from ._pings import run_timers
from ._stream import Stream, StreamCore
from .protocol import GoAwayStatus, Headers, HeadersLike, Role, RstStatus, StreamState

logger = logging.getLogger("muxstream")

CLIENT = Role.CLIENT
SERVER = Role.SERVER

#: seconds ``transport.aclose()`` may take at the end of a close (a TLS
#: close_notify, a WebSocket close handshake) before it is closed forcefully.
TRANSPORT_CLOSE_GRACE = 1.0
#: seconds the writer gets after a failure to put the GOAWAY that explains it on
#: the wire (at most ``close_timeout``).
ERROR_FLUSH_GRACE = 1.0

__all__ = [
    "CLIENT",
    "DEFAULT_CLOSE_TIMEOUT",
    "SERVER",
    "Session",
    "SessionKeywords",
    "SessionOptions",
    "SessionStatistics",
    "open_session",
    "start_session",
]

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
        self._core = SessionCore(transport, role, options, self._begin_close)
        self._nursery: trio.Nursery | None = None

    # --- lifecycle ------------------------------------------------------------

    def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._core.last_activity = trio.current_time()
        nursery.start_soon(self._run_tasks)

    async def _run_tasks(self) -> None:
        core = self._core
        options = self.options
        with core.task_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_reader.run, core)
                nursery.start_soon(core.writer.run, core.fail, core.closed)
                nursery.start_soon(run_timers, core, options.keepalive_interval,
                                   options.ping_timeout, options.idle_timeout)

    @property
    def closed(self) -> bool:
        """True once the transport is closed."""
        return self._core.closed.is_set()

    @property
    def error(self) -> BaseException | None:
        """Why the session broke (None while healthy or after a clean close)."""
        return self._core.error

    # --- the close path (docs/close-path.md) -------------------------------------

    def _begin_close(self, trigger: Trigger) -> None:
        """Start the close in the background (the peer, a timer or a failure)."""
        core = self._core
        if self._nursery is None:
            return
        if trigger is Trigger.ERROR:
            if not core.closed.is_set():
                self._nursery.start_soon(self._close, trigger)
        elif core.phase is OPEN:
            self._nursery.start_soon(self._close, trigger)

    async def aclose(self) -> None:
        """Close gracefully: flush, GOAWAY, FIN, drain until the peer's EOF, close.

        Bounded by ``close_timeout``. If that runs out or this call is
        cancelled, remaining streams are reset and the transport closed hard.
        Calling it again waits for the first call to finish.
        """
        await self._close(Trigger.USER)

    async def _close(self, trigger: Trigger, abandoned_by: BaseException | None = None) -> None:
        """The one way into the close path; every trigger comes here.

        USER, PEER and IDLE close gracefully (steps 1-5), once: a later call
        waits for the first. ERROR gives the writer a moment to flush (the
        GOAWAY that explains a protocol error), then closes hard. ABANDONED
        (``open_session``'s block raised ``abandoned_by``) closes hard at once.
        """
        core = self._core
        if trigger is Trigger.USER or core.closed_by is None:
            core.closed_by = trigger  # the user's own close decides what calls raise
        if trigger is Trigger.ABANDONED:
            with trio.CancelScope(shield=True):
                await self._hard_close(
                    LocalClose(f"session abandoned: {type(abandoned_by).__name__}"))
            return
        if trigger is Trigger.ERROR:
            with trio.move_on_after(min(ERROR_FLUSH_GRACE, self.options.close_timeout)):
                await core.writer.flushed.wait()
            with trio.CancelScope(shield=True):
                await self._hard_close(core.error or ConnectionLost("session failed"))
            return
        if core.phase is not OPEN:
            await core.closed.wait()
            return
        core.phase = DRAINING
        try:
            with trio.move_on_after(self.options.close_timeout) as scope:
                await self._drain()
            if scope.cancelled_caught:
                logger.debug("close_timeout (%ss) ran out; closing hard",
                             self.options.close_timeout)
        finally:
            with trio.CancelScope(shield=True):
                await self._hard_close(
                    LocalClose("session closed") if core.closed_by is Trigger.USER
                    else SessionClosed("peer closed the session"))

    async def _drain(self) -> None:
        """Steps 1-4: FIN every stream, refuse the backlog, GOAWAY, then wait for
        the writer to flush and half-close, and for the reader to drain."""
        core = self._core
        conn = core.conn
        if core.error is None and conn.terminated is None:
            # Steps 1-2 (the phase already refuses new streams).
            gone = (None if core.closed_by is Trigger.USER
                    else SessionClosed("peer closed the session"))
            waiting = core.accept.waiting_ids()
            for stream in list(core.streams.values()):
                if stream.stream_id in waiting:
                    continue
                if not stream.we_sent_fin and not stream.closed_here:
                    if gone is None:
                        stream.end_sending()
                    else:
                        stream.on_broken(gone)  # further sends: BrokenResourceError
                    core.attempt(conn.end_stream, stream.stream_id)
            for stream in core.accept.take_all():
                stream.on_broken(LocalClose("session closed before accept()"))
                core.attempt(conn.reset_stream, stream.stream_id, RstStatus.REFUSED_STREAM)
            conn.go_away(GoAwayStatus.OK)
        core.writer.finish()  # step 3, in the writer task
        core.wake_all()
        await core.writer.flushed.wait()
        if not core.peer_finished:  # step 4, in the reader task (or the TLS exit)
            await core.reader_done.wait()

    async def _hard_close(self, reason: BaseException) -> None:
        """Step 5, and the end of every close: break what is left, stop the
        tasks, close the transport (forcefully after ``TRANSPORT_CLOSE_GRACE``)."""
        core = self._core
        core.phase = CLOSED
        if core.closed.is_set():
            return
        if core.error is None and not isinstance(reason, LocalClose | SessionClosed):
            core.error = reason
        for stream in list(core.streams.values()):
            stream.on_broken(reason if core.error is None else core.error)
        core.streams.clear()
        core.wake_all()
        core.task_scope.cancel()
        core.pings.wake_all()  # the timer task is gone: nothing else would wake them
        with trio.move_on_after(TRANSPORT_CLOSE_GRACE) as scope:
            await self.transport.aclose()
        if scope.cancelled_caught:
            await trio.aclose_forcefully(self.transport)
        core.closed.set()

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
        core = self._core
        core.check_usable()
        if core.goaway is not None:
            raise trio.BrokenResourceError("peer sent GOAWAY") from core.goaway
        hdrs = headers if isinstance(headers, Headers) else Headers(headers)
        limit = self.options.open_timeout if timeout is None else timeout
        conn = core.conn
        if not conn.can_open_stream:  # no cancel scope on the fast path
            with trio.move_on_after(limit) as scope:
                while not conn.can_open_stream:
                    await core.open_lot.park()
                    core.check_usable()
            if scope.cancelled_caught:
                raise StreamOpenTimeout("peer's MAX_CONCURRENT_STREAMS stayed reached")
        sid = conn.open_stream(hdrs, end_stream=end_stream)
        state = StreamCore(sid, we_sent_fin=end_stream)
        stream = Stream(core, state, hdrs, local=True)
        core.streams[sid] = state
        core.streams_opened += 1
        core.last_activity = trio.current_time()
        core.writer.kick()
        if not wait_reply:
            await checkpoint()
            return stream
        await stream.wait_reply(limit)
        return stream

    async def accept(self) -> Stream:
        """The next stream the peer opened (SYN_REPLY is sent now).

        Raises:
            trio.ClosedResourceError: this session was closed.
            trio.BrokenResourceError: the peer went away (chained to
                :class:`SessionGoneAway` / :class:`SessionClosed`) or the session broke.
        """
        core = self._core
        while True:
            while (waiting := core.accept.pop()) is not None:
                stream, state = waiting
                sid = state.stream_id
                if state.broken is not None:
                    continue
                if core.conn.stream_state(sid) is StreamState.CLOSED and (
                    sid not in core.streams
                ):
                    continue
                core.attempt(core.conn.send_reply, sid)
                core.streams_accepted += 1
                core.writer.kick()
                await checkpoint()
                return stream
            if core.phase is not OPEN or core.error is not None:
                core.check_usable()
            if core.goaway is not None:
                raise trio.BrokenResourceError("peer sent GOAWAY") from core.goaway
            if core.eof_received:
                raise trio.BrokenResourceError("peer closed the session") from SessionClosed(
                    "peer closed the connection"
                )
            await core.accept.lot.park()

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

    # --- ping and statistics --------------------------------------------------------

    async def ping(self, timeout: float | None = None) -> float:
        """Send a PING and return the round-trip time in seconds.

        Raises:
            PingTimeout: no answer within ``timeout`` (default ``ping_timeout``).
            trio.BrokenResourceError / trio.ClosedResourceError: as for streams.
        """
        return await self._core.ping(timeout)

    @property
    def streams_opened(self) -> int:
        """Streams this side opened."""
        return self._core.streams_opened

    @property
    def streams_accepted(self) -> int:
        """Streams the peer opened that :meth:`accept` returned."""
        return self._core.streams_accepted

    @property
    def pings_sent(self) -> int:
        return self._core.pings.sent

    @property
    def pings_received(self) -> int:
        return self._core.pings.received

    @property
    def last_rtt(self) -> float | None:
        """The round-trip time of the last PING answered (None before the first)."""
        return self._core.pings.last_rtt

    def statistics(self) -> SessionStatistics:
        """Counters, windows and queues, now (see :class:`SessionStatistics`)."""
        core = self._core
        conn = core.conn
        pings = core.pings
        return SessionStatistics(
            streams_open=len(core.streams),
            streams_opened=core.streams_opened,
            streams_accepted=core.streams_accepted,
            bytes_sent=conn.bytes_sent,
            bytes_received=conn.bytes_received,
            write_buffer=conn.ordered_bytes,
            our_session_window=conn.our_session_window,
            their_session_window=conn.their_session_window,
            peer_flow_control=conn.peer_flow_control,
            pings_sent=pings.sent,
            pings_received=pings.received,
            last_rtt=pings.last_rtt,
            pings_outstanding=len(pings),
            streams_waiting=len(core.accept),
            waiting_header_bytes=core.accept.header_bytes,
            queued_answers=conn.queued_answers,
            accelerated=conn.accelerated,
            accelerator=ACCELERATOR,
        )


def _coerce_role(role: Role | str) -> Role:
    if isinstance(role, Role):
        return role
    return Role(role.lower())


def start_session(
    nursery: trio.Nursery,
    transport: trio.abc.Stream,
    *,
    role: Role | str,
    options: SessionOptions | None = None,
    **keywords: Unpack[SessionKeywords],
) -> Session:
    """Start a session over ``transport`` with its tasks in ``nursery``; return it at once.

    For tests and for code that runs its own nursery (as trio-websocket's
    ``connect_websocket`` does): :func:`open_session` is the usual way. The
    caller closes the session, gracefully with :meth:`Session.aclose`;
    cancelling ``nursery`` stops the session's tasks without closing the
    transport.

    Args: as for :func:`open_session`.
    """
    session = Session(transport, _coerce_role(role), SessionOptions.resolve(options, keywords))
    session._start(nursery)  # noqa: SLF001 (the factory of its own module starts it)
    return session


@asynccontextmanager
async def open_session(
    transport: trio.abc.Stream,
    *,
    role: Role | str,
    options: SessionOptions | None = None,
    **keywords: Unpack[SessionKeywords],
) -> AsyncIterator[Session]:
    """Run a session over ``transport`` for the duration of the ``async with``.

    Leaving the block normally closes gracefully (:meth:`Session.aclose`); leaving
    it with an exception (or cancellation) resets everything and closes hard.

    Args:
        transport: any ``trio.abc.Stream`` (TCP, TLS, upgraded HTTP, WebSocket,
            memory streams). The session owns it from now on.
        role: ``CLIENT`` (odd stream ids) or ``SERVER`` (even).
        options: the session's tunables (default: :class:`SessionOptions`'s defaults).
        **keywords: fields of :class:`SessionOptions`, replacing those of
            ``options`` (``close_timeout=5``).

    Raises:
        TypeError: a keyword that is not a session option.
    """
    # A bad role or option raises here, before any task starts.
    kind, resolved = _coerce_role(role), SessionOptions.resolve(options, keywords)
    async with trio.open_nursery() as nursery:
        session = start_session(nursery, transport, role=kind, options=resolved)
        try:
            yield session
        except BaseException as exc:
            # The one close no public call makes: hard, at once, saying why.
            await session._close(Trigger.ABANDONED, exc)  # noqa: SLF001 (its own module)
            raise
        else:
            await session.aclose()
