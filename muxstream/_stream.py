"""Stream: one multiplexed stream, a ``trio.abc.HalfCloseableStream``.

Three pieces, so that neither side reaches into the other:

* :class:`StreamCore` is the one place that holds a stream's state in the trio
  layer: received data, FIN each way, the reply, why it broke, and the lot its
  waiting tasks park in. The session feeds it through event methods
  (``on_data``, ``on_fin``, ``on_reply``, ``on_headers``, ``on_broken``), as h2
  feeds its streams; the :class:`Stream` that owns it reads it.
* :class:`StreamHost` is everything a stream asks of its session (the
  session's core implements it): room to send, queueing data and FIN, credit
  for what was read, close and reset.
* :class:`Stream` is the user's object: trio's stream API on top of the two.

A Stream never touches the transport itself. Sending queues DATA on the session's
sans-IO connection and asks the session to move it (written at once if the writer
task is idle, else by the writer); receiving takes bytes the reader task already
put in this stream's buffer. Every async method is a checkpoint.

The protocol layer keeps its own record of each stream (states, windows) to
police the peer, and forgets it once the stream is closed; a StreamCore
outlives that, as long as the user holds the Stream.
"""

from __future__ import annotations

import operator
from collections import deque
from typing import Protocol

import trio
from trio.lowlevel import (
    ParkingLot,
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
)

from ._errors import LocalClose, StreamOpenTimeout, StreamResetError
from .protocol import Headers, RstStatus

_EMPTY_HEADERS = Headers()
#: Received pieces smaller than this are joined to the previous small piece.
_COALESCE = 512
#: The buffer of every stream that has not received data yet (never appended
#: to): a deque costs ~0.7 KiB, most of an idle stream (docs/performance.md).
_NO_DATA: deque[bytes] = deque()


class StreamCore:
    """The trio layer's state of one stream; changed by the session's events."""

    __slots__ = (
        "awaiting_reply",
        "broken",
        "buffer",
        "buffered",
        "closed_here",
        "extra_headers",
        "lot",
        "reply_headers",
        "stream_id",
        "they_sent_fin",
        "we_sent_fin",
    )

    def __init__(self, stream_id: int, *, we_sent_fin: bool = False,
                 they_sent_fin: bool = False) -> None:
        self.stream_id = stream_id
        self.buffer = _NO_DATA  # a deque of its own from the first DATA on
        self.buffered = 0
        self.they_sent_fin = they_sent_fin  # and the reader has its FIN
        self.we_sent_fin = we_sent_fin  # or may send no more (the session is closing)
        self.closed_here = False  # aclose() or reset() on this side
        self.broken: BaseException | None = None  # why it can no longer work
        #: the peer's SYN_REPLY headers; _EMPTY_HEADERS until it came
        self.reply_headers: Headers = _EMPTY_HEADERS
        self.extra_headers: Headers = _EMPTY_HEADERS
        self.awaiting_reply = 0  # tasks waiting for the reply
        # One lot for every waiter on this stream (senders, receivers, openers):
        # wake-ups are rare enough that waking them all and letting each re-check
        # is cheaper than three lots per stream (10,000 idle streams).
        self.lot = ParkingLot()

    @property
    def replied(self) -> bool:
        """The peer's SYN_REPLY arrived (meaningful for streams we opened)."""
        return self.reply_headers is not _EMPTY_HEADERS

    # --- events, fed by the session ---------------------------------------------

    def wake(self) -> None:
        """Something a blocked call waits for may have changed: let it re-check."""
        if self.lot:
            self.lot.unpark_all()

    def on_data(self, data: bytes, discard_above: int) -> int:
        """DATA arrived. Returns the bytes now buffered, or -1 if nobody will
        read it (closed here, or more than ``discard_above`` already waits):
        the caller then credits it back at once."""
        buf = self.buffer
        if self.closed_here or self.buffered > discard_above:
            return -1
        if buf is _NO_DATA:
            buf = self.buffer = deque()
        if len(data) < _COALESCE and buf and len(buf[-1]) < _COALESCE:
            # A flood of tiny DATA frames would cost ~40 bytes of chunk overhead
            # per payload byte; joining small pieces bounds memory by the window.
            buf[-1] += data
        else:
            buf.append(data)
        self.buffered += len(data)
        if self.lot:
            self.lot.unpark_all()
        return self.buffered

    def on_fin(self) -> None:
        """The peer ended the stream: readers get ``b""`` after the buffered data."""
        self.they_sent_fin = True
        self.wake()

    def on_reply(self, headers: Headers, ended: bool) -> None:
        """The peer's SYN_REPLY (with FIN if ``ended``)."""
        self.reply_headers = headers
        if ended:
            self.on_fin()
        elif self.awaiting_reply:
            # Only reply waiters care: a receiver woken now would find
            # nothing and park again (one wasted pass per short stream).
            self.wake()

    def on_headers(self, headers: Headers, ended: bool) -> None:
        """HEADERS arrived: ``headers`` is all of them so far, merged."""
        self.extra_headers = headers
        if ended:
            self.they_sent_fin = True
        self.wake()

    def on_broken(self, exc: BaseException) -> None:
        """The stream can no longer work (reset, refused, the session ended);
        the first reason given is the one calls raise."""
        if self.broken is None:
            self.broken = exc
        self.wake()

    def end_sending(self) -> None:
        """The session is closing: further sends raise ``ClosedResourceError``."""
        self.we_sent_fin = True

    def drop_buffer(self) -> int:
        """Discard the data nobody will read; return how many bytes that was."""
        n = self.buffered
        if n:
            self.buffer.clear()
            self.buffered = 0
        return n

    # --- checks for the Stream --------------------------------------------------

    def raise_broken(self) -> None:
        exc = self.broken
        assert exc is not None
        if isinstance(exc, LocalClose):
            raise trio.ClosedResourceError(str(exc))
        if isinstance(exc, StreamResetError):
            raise trio.BrokenResourceError(str(exc)) from exc
        raise trio.BrokenResourceError(f"stream {self.stream_id}: {exc}") from exc

    def check_send(self) -> None:
        if self.closed_here:
            raise trio.ClosedResourceError("stream was closed")
        if self.we_sent_fin:
            raise trio.ClosedResourceError("send_eof() was called on this stream")
        if self.broken is not None:
            self.raise_broken()


class StreamHost(Protocol):
    """What a stream asks of its session (the session's core implements it)."""

    @property
    def open_timeout(self) -> float:
        """Default seconds :meth:`Stream.wait_reply` waits."""
        ...

    def send_room(self, stream: StreamCore, want: int = 1) -> int:
        """How much of ``want`` bytes ``stream`` may queue now (0: park on its lot)."""
        ...

    def queue_data(self, stream: StreamCore, data: bytes | memoryview, end_stream: bool) -> None:
        """Queue DATA (at most :meth:`send_room`) and get it moving."""
        ...

    def end_stream(self, stream: StreamCore) -> None:
        """Queue FIN (behind the stream's data) and get it moving."""
        ...

    def forget_if_done(self, stream: StreamCore) -> None:
        """Drop the stream from the session's table once both sides ended it."""
        ...

    def consumed(self, stream: StreamCore, n: int) -> None:
        """The user read ``n`` bytes: credit the peer's windows."""
        ...

    def close_stream(self, stream: StreamCore) -> bool:
        """Closed here: FIN behind our data (True if queued now), RST if the peer
        still sends, then release the stream's buffer and slot."""
        ...

    def reset_stream(self, stream: StreamCore, status: int) -> None:
        """Reset here: RST_STREAM ahead of queued data, then release the stream."""
        ...


class Stream(trio.abc.HalfCloseableStream):
    """One bidirectional byte stream of a :class:`~muxstream.Session`.

    Attributes:
        stream_id: the SPDY stream id (odd if the client opened it).
        headers: the SYN_STREAM headers (ours if we opened it, the peer's if accepted).
        local: we opened it.
    """

    __slots__ = ("_busy_receive", "_busy_send", "_core", "_host", "headers", "local",
                 "stream_id")

    def __init__(self, host: StreamHost, core: StreamCore, headers: Headers, *, local: bool):
        self._host = host
        self._core = core
        self.stream_id = core.stream_id
        self.headers = headers
        self.local = local
        # One task at a time sends and one receives (BusyResourceError). Flags,
        # not a conflict-detector object per direction as trio's streams have:
        # two objects would add ~0.1 KiB to every idle stream (~1.1 KiB now).
        self._busy_send = False
        self._busy_receive = False

    def __repr__(self) -> str:
        return f"<muxstream.Stream id={self.stream_id} headers={dict(self.headers)!r}>"

    @property
    def reply_headers(self) -> Headers:
        """The SYN_REPLY headers (the peer's, if we opened the stream; empty until then)."""
        return self._core.reply_headers

    @property
    def extra_headers(self) -> Headers:
        """Headers from the peer's later HEADERS frames, merged."""
        return self._core.extra_headers

    # --- sending ------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview, *, eof: bool = False) -> None:
        """Send ``data``; returns once all of it is queued for the writer task.

        Waits for the peer's flow-control window (muxstream peers) and for room
        in the session's write buffer, so memory stays bounded.

        Args:
            data: the bytes to send (the caller may reuse its buffer on return).
            eof: also half-close, as :meth:`send_eof` would: FIN rides on the
                last DATA frame (as h2's ``end_stream``), one frame fewer than
                ``send_all(data)`` then ``send_eof()`` once that data is on the wire.

        Raises:
            trio.BusyResourceError: another task is sending on this stream.
            trio.ClosedResourceError: this stream was closed or half-closed here.
            trio.BrokenResourceError: the stream was reset or the session broke.
        """
        if self._busy_send:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._busy_send = True
        try:
            await checkpoint_if_cancelled()  # cancelled: nothing is queued
            core = self._core
            core.check_send()
            if not isinstance(data, bytes):
                data = bytes(data)  # the caller may reuse its buffer once we return
            view = memoryview(data)
            total = len(data)
            off = 0
            host = self._host
            if not total:
                if eof:
                    core.we_sent_fin = True
                    host.end_stream(core)
                await cancel_shielded_checkpoint()
                return
            waited = False
            while off < total:
                room = host.send_room(core, total - off)
                if room <= 0:
                    await core.lot.park()  # cancelled here: what was queued is sent
                    waited = True
                    core.check_send()
                    continue
                n = min(room, total - off)
                off += n
                end = eof and off == total
                host.queue_data(core, view[off - n : off] if n < total else data, end)
                if end:
                    core.we_sent_fin = True
            if eof:
                host.forget_if_done(core)
            if not waited:
                await cancel_shielded_checkpoint()
        finally:
            self._busy_send = False

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the window and the session's write buffer have room."""
        if self._busy_send:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._busy_send = True
        try:
            core = self._core
            core.check_send()
            while self._host.send_room(core) <= 0:
                await core.lot.park()
                core.check_send()
            await checkpoint()
        finally:
            self._busy_send = False

    async def send_eof(self) -> None:
        """Half-close: send FIN. We may still receive. Idempotent."""
        if self._busy_send:
            raise trio.BusyResourceError("another task is already sending on this stream")
        core = self._core
        if core.closed_here:
            raise trio.ClosedResourceError("stream was closed")
        await checkpoint()
        if core.we_sent_fin:
            return
        if core.broken is not None:
            core.raise_broken()
        core.we_sent_fin = True
        self._host.end_stream(core)

    # --- receiving ----------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive up to ``max_bytes``; ``b""`` once the peer sent FIN and all was read.

        Raises:
            trio.BusyResourceError: another task is receiving on this stream.
            trio.ClosedResourceError: this stream was closed here.
            trio.BrokenResourceError: the stream was reset or the connection was
                lost before the peer ended the stream (data before that is still
                delivered first).
        """
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._busy_receive:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._busy_receive = True
        try:
            # As trio's sockets do: a cancellation is taken before anything is
            # (taking the bytes, then raising Cancelled, would drop them), and a
            # call that had to wait has had its checkpoint (no second yield).
            await checkpoint_if_cancelled()
            core = self._core
            waited = False
            while True:
                if core.closed_here:
                    raise trio.ClosedResourceError("stream was closed")
                if core.buffer:
                    data = self._take(core, max_bytes)
                    if not waited:
                        await cancel_shielded_checkpoint()
                    return data
                if core.they_sent_fin:
                    if not waited:
                        await cancel_shielded_checkpoint()
                    return b""
                if core.broken is not None:
                    core.raise_broken()
                await core.lot.park()
                waited = True
        finally:
            self._busy_receive = False

    def _take(self, core: StreamCore, max_bytes: int | None) -> bytes:
        buf = core.buffer
        first = buf[0]
        if max_bytes is None or len(first) <= max_bytes:
            buf.popleft()
            data = first
        else:
            data = first[:max_bytes]
            buf[0] = first[max_bytes:]
        n = len(data)
        core.buffered -= n
        self._host.consumed(core, n)
        return data

    # --- closing ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close this stream here; never waits on I/O.

        Queues FIN after any queued data; if the peer is still sending, also
        queues RST_STREAM(CANCEL) behind it so the peer stops. Blocked calls on
        this stream raise ``trio.ClosedResourceError``.
        """
        core = self._core
        if not core.closed_here:
            core.closed_here = True
            if self._host.close_stream(core):
                core.we_sent_fin = True
        await checkpoint()

    def reset(self, status: int = RstStatus.CANCEL) -> None:
        """Abort the stream now (RST_STREAM, ahead of queued data). Never blocks.

        Raises:
            ValueError: ``status`` is not a 32-bit unsigned value.
        """
        if not 0 <= int(status) <= 0xFFFFFFFF:
            raise ValueError(f"RST_STREAM status {status} is not a 32-bit unsigned value")
        core = self._core
        if core.closed_here:
            return
        core.closed_here = True
        self._host.reset_stream(core, status)

    async def wait_reply(self, timeout: float | None = None) -> Headers:
        """Wait for the peer's SYN_REPLY to a stream we opened; return its headers.

        Only needed after ``open_stream(wait_reply=False)``: otherwise the reply
        has already arrived and this returns at once.

        Raises:
            ValueError: the peer opened this stream (it has no reply to wait for).
            StreamOpenTimeout: no reply within ``timeout`` (default the session's
                ``open_timeout``); the stream is reset here, as by :meth:`reset`,
                so later calls raise ``trio.ClosedResourceError``.
            trio.BrokenResourceError: the peer refused or reset the stream, or
                the session broke.
            trio.ClosedResourceError: this stream was closed here.
        """
        if not self.local:
            raise ValueError("the peer opened this stream: there is no reply to wait for")
        core = self._core
        if core.replied:
            await checkpoint()
            return core.reply_headers
        if core.closed_here:
            raise trio.ClosedResourceError("stream was closed")
        limit = self._host.open_timeout if timeout is None else timeout
        core.awaiting_reply += 1
        try:
            with trio.move_on_after(limit) as scope:
                while not core.replied and core.broken is None:
                    await core.lot.park()
        except BaseException:
            self.reset(RstStatus.CANCEL)
            raise
        finally:
            core.awaiting_reply -= 1
        if scope.cancelled_caught:
            self.reset(RstStatus.CANCEL)
            raise StreamOpenTimeout(
                f"no SYN_REPLY for stream {self.stream_id} within {limit} s")
        if not core.replied:
            core.raise_broken()
        return core.reply_headers

    # --- convenience ----------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Received bytes waiting to be read."""
        return self._core.buffered

    @property
    def eof_received(self) -> bool:
        """The peer sent FIN."""
        return self._core.they_sent_fin

    async def receive_all(self) -> bytes:
        """Read until the peer's FIN and return everything received."""
        parts: list[bytes] = []
        while chunk := await self.receive_some():
            parts.append(chunk)
        return b"".join(parts)
