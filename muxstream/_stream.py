"""Stream: one multiplexed stream, a ``trio.abc.HalfCloseableStream``.

A Stream never touches the transport itself. Sending queues DATA on the session's
sans-IO connection and asks the session to move it (``Session._kick``: written at
once if the writer task is idle, else by the writer); receiving takes bytes the
reader task already put in this stream's buffer. Every async method is a checkpoint.
"""

from __future__ import annotations

import operator
from collections import deque
from typing import TYPE_CHECKING

import trio
from trio.lowlevel import (
    ParkingLot,
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
)

from ._errors import StreamResetError
from .protocol import Headers, RstStatus

if TYPE_CHECKING:
    from ._session import Session

_EMPTY_HEADERS = Headers()
#: Received pieces smaller than this are joined to the previous small piece.
_COALESCE = 512


class Stream(trio.abc.HalfCloseableStream):
    """One bidirectional byte stream of a :class:`~muxstream.Session`.

    Attributes:
        stream_id: the SPDY stream id (odd if the client opened it).
        headers: the SYN_STREAM headers (ours if we opened it, the peer's if accepted).
        reply_headers: the SYN_REPLY headers (the peer's if we opened it).
        extra_headers: headers from later HEADERS frames, merged.
    """

    __slots__ = (
        "_awaiting_reply",
        "_broken",
        "_buffer",
        "_buffered",
        "_busy_receive",
        "_busy_send",
        "_eof",
        "_local_closed",
        "_lot",
        "_replied",
        "_sent_eof",
        "_session",
        "extra_headers",
        "headers",
        "local",
        "reply_headers",
        "stream_id",
    )

    def __init__(self, session: Session, stream_id: int, headers: Headers, *, local: bool):
        self._session = session
        self.stream_id = stream_id
        self.headers = headers
        self.reply_headers: Headers = _EMPTY_HEADERS
        self.extra_headers: Headers = _EMPTY_HEADERS
        self.local = local
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False  # the peer sent FIN
        self._sent_eof = False  # we sent FIN
        self._local_closed = False  # aclose() or reset() here
        self._broken: BaseException | None = None  # why it can no longer work
        self._replied = False
        self._awaiting_reply = 0  # tasks in Session._wait_reply
        self._busy_send = False
        self._busy_receive = False
        # One lot for every waiter on this stream (senders, receivers, openers):
        # wake-ups are rare enough that waking them all and letting each re-check
        # is cheaper than three lots per stream (10,000 idle streams).
        self._lot = ParkingLot()

    def __repr__(self) -> str:
        return f"<muxstream.Stream id={self.stream_id} headers={dict(self.headers)!r}>"

    # --- called by the session ------------------------------------------------

    def _wake(self) -> None:
        if self._lot:
            self._lot.unpark_all()

    def _feed(self, data: bytes) -> None:
        buf = self._buffer
        if len(data) < _COALESCE and buf and len(buf[-1]) < _COALESCE:
            # A flood of tiny DATA frames would cost ~40 bytes of chunk overhead
            # per payload byte; joining small pieces bounds memory by the window.
            buf[-1] += data
        else:
            buf.append(data)
        self._buffered += len(data)
        self._wake()

    def _mark_broken(self, exc: BaseException) -> None:
        if self._broken is None:
            self._broken = exc
        self._wake()

    # --- state checks -----------------------------------------------------------

    def _raise_broken(self) -> None:
        exc = self._broken
        assert exc is not None
        if type(exc).__name__ == "_LocalClose":
            raise trio.ClosedResourceError(str(exc))
        if isinstance(exc, StreamResetError):
            raise trio.BrokenResourceError(str(exc)) from exc
        raise trio.BrokenResourceError(f"stream {self.stream_id}: {exc}") from exc

    def _check_send(self) -> None:
        if self._local_closed:
            raise trio.ClosedResourceError("stream was closed")
        if self._sent_eof:
            raise trio.ClosedResourceError("send_eof() was called on this stream")
        if self._broken is not None:
            self._raise_broken()

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
            self._check_send()
            if not isinstance(data, bytes):
                data = bytes(data)  # the caller may reuse its buffer once we return
            view = memoryview(data)
            total = len(data)
            off = 0
            session = self._session
            conn = session._conn
            if not total:
                if eof:
                    session._end_stream(self)
                await cancel_shielded_checkpoint()
                return
            waited = False
            while off < total:
                room = session._send_room(self, total - off)
                if room <= 0:
                    await self._lot.park()  # cancelled here: what was queued is sent
                    waited = True
                    self._check_send()
                    continue
                n = min(room, total - off)
                off += n
                end = eof and off == total
                conn.send_data(self.stream_id, view[off - n : off] if n < total else data,
                               end_stream=end)
                if end:
                    self._sent_eof = True
                session._data_queued()
            if eof:
                session._forget_if_done(self)
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
            self._check_send()
            while self._session._send_room(self) <= 0:
                await self._lot.park()
                self._check_send()
            await checkpoint()
        finally:
            self._busy_send = False

    async def send_eof(self) -> None:
        """Half-close: send FIN. We may still receive. Idempotent."""
        if self._busy_send:
            raise trio.BusyResourceError("another task is already sending on this stream")
        if self._local_closed:
            raise trio.ClosedResourceError("stream was closed")
        await checkpoint()
        if self._sent_eof:
            return
        if self._broken is not None:
            self._raise_broken()
        self._session._end_stream(self)

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
            waited = False
            while True:
                if self._local_closed:
                    raise trio.ClosedResourceError("stream was closed")
                if self._buffer:
                    data = self._take(max_bytes)
                    if not waited:
                        await cancel_shielded_checkpoint()
                    return data
                if self._eof:
                    if not waited:
                        await cancel_shielded_checkpoint()
                    return b""
                if self._broken is not None:
                    self._raise_broken()
                await self._lot.park()
                waited = True
        finally:
            self._busy_receive = False

    def _take(self, max_bytes: int | None) -> bytes:
        buf = self._buffer
        first = buf[0]
        if max_bytes is None or len(first) <= max_bytes:
            buf.popleft()
            data = first
        else:
            data = first[:max_bytes]
            buf[0] = first[max_bytes:]
        n = len(data)
        self._buffered -= n
        self._session._consumed(self, n)
        return data

    # --- closing ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close this stream here; never waits on I/O.

        Queues FIN after any queued data; if the peer is still sending, also
        queues RST_STREAM(CANCEL) behind it so the peer stops. Blocked calls on
        this stream raise ``trio.ClosedResourceError``.
        """
        if not self._local_closed:
            self._session._close_stream(self)
        await checkpoint()

    def reset(self, status: int = RstStatus.CANCEL) -> None:
        """Abort the stream now (RST_STREAM, ahead of queued data). Never blocks.

        Raises:
            ValueError: ``status`` is not a 32-bit unsigned value.
        """
        if not 0 <= int(status) <= 0xFFFFFFFF:
            raise ValueError(f"RST_STREAM status {status} is not a 32-bit unsigned value")
        if self._local_closed:
            return
        self._session._reset_stream(self, status)

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
        if self._replied:
            await checkpoint()
            return self.reply_headers
        if self._local_closed:
            raise trio.ClosedResourceError("stream was closed")
        session = self._session
        await session._wait_reply(
            self, session.options.open_timeout if timeout is None else timeout)
        return self.reply_headers

    # --- convenience ----------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Received bytes waiting to be read."""
        return self._buffered

    @property
    def eof_received(self) -> bool:
        """The peer sent FIN."""
        return self._eof

    async def receive_all(self) -> bytes:
        """Read until the peer's FIN and return everything received."""
        parts: list[bytes] = []
        while chunk := await self.receive_some():
            parts.append(chunk)
        return b"".join(parts)
