"""The writer: the one task that writes the transport, and the inline writes.

Writes keep the one-writer rule's point (docs/performance.md, design rules) -- one
ordered byte stream, never two writers interleaving -- with one refinement
measured to pay (docs/performance.md):
on TCP, when the writer task holds no bytes of its own, the task that just queued
frames writes them itself with one non-blocking ``writev`` and no await, so
nothing can interleave; whatever the kernel does not take goes to the writer,
which sends it before anything else, and nothing is written inline once the
writer is busy or has sent the transport's FIN (:meth:`Writer.kick`).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import trio
from trio.lowlevel import ParkingLot

from ._errors import failures_reported
from ._stream import StreamCore
from .protocol import Connection

if TYPE_CHECKING:
    from .transport import TLSStream

#: Write from the task that queued the frames when the writer is idle (see kick).
_INLINE_WRITES = hasattr(os, "writev")
#: One write's size: at least ~256 KiB per send call (docs/performance.md).
_WRITE_BATCH = 512 * 1024
#: Unsent bytes the kernel may hold per socket (see _limit_unsent).
_NOTSENT_LOWAT = 256 * 1024
#: sendmsg() accepts at most IOV_MAX (1024 on Linux) buffers.
_IOV_MAX = 512

Buffers = list[bytes | memoryview]


class SocketSender:
    """Scatter-gather writes on a TCP socket: a DATA header and its payload in one call."""

    __slots__ = ("sock",)

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock

    async def send(self, bufs: Buffers) -> None:
        sock = self.sock
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


def tls_stream(transport: trio.abc.Stream) -> TLSStream | None:
    """``transport`` if it is muxstream's own TLS stream, else None (without
    importing ``muxstream.transport``, which ``import muxstream`` does not need:
    if it is not loaded, no TLSStream exists)."""
    module = sys.modules.get("muxstream.transport._tls_stream")
    if module is not None and isinstance(transport, module.TLSStream):
        return cast("TLSStream", transport)
    return None


class StreamSender:
    """Writes on any other transport (TLS, WebSocket, upgraded HTTP, memory)."""

    __slots__ = ("send", "transport")

    def __init__(self, transport: trio.abc.Stream) -> None:
        tls = tls_stream(transport)
        self.send = self._join_and_send if tls is None else tls.send_all_parts
        self.transport = transport

    async def _join_and_send(self, bufs: Buffers) -> None:
        # One write per batch: a DATA header sent alone would become its own
        # TLS record or WebSocket message; joining costs one payload copy.
        # (TLSStream takes the buffers as they are: send_all_parts.)
        await self.transport.send_all(bufs[0] if len(bufs) == 1 else b"".join(bufs))


class Writer:
    """Moves the connection's queued frames to the transport, in order.

    The writer task (:meth:`run`) sends batches of at least ~256 KiB; while it
    is parked, :meth:`kick` lets the task that queued frames write them inline.
    It also owns the write buffer's waiters: senders that found no room
    (``space_waiters``) are woken as batches leave the queue.
    """

    __slots__ = (
        "buffer_size",
        "busy",
        "conn",
        "done",
        "flushed",
        "lot",
        "reader_lot",
        "sock",
        "space_waiters",
        "transport",
        "unsent",
        "want_eof",
    )

    def __init__(self, transport: trio.abc.Stream, conn: Connection, *, buffer_size: int,
                 reader_lot: ParkingLot) -> None:
        self.transport = transport
        self.conn = conn
        self.buffer_size = buffer_size
        #: the reader parks here while answers wait; a batch taken frees them
        self.reader_lot = reader_lot
        self.lot = ParkingLot()
        #: streams waiting for room in the write buffer
        self.space_waiters: set[StreamCore] = set()
        # Inline writes: the socket, whether the writer task holds bytes (is
        # sending), and the bytes an inline write could not place, which the
        # writer sends first.
        self.sock: trio.socket.SocketType | None = None
        if isinstance(transport, trio.SocketStream):
            _limit_unsent(transport.socket)
            if _INLINE_WRITES:
                self.sock = transport.socket
        self.busy = False
        self.unsent: Buffers = []
        #: after everything queued, half-close the transport (the close path's step 3)
        self.want_eof = False
        #: everything queued is written (and FIN sent, where the transport can)
        self.flushed = trio.Event()
        self.done = trio.Event()

    @property
    def half_closeable(self) -> bool:
        """Whether the transport can send EOF and keep reading (TLS cannot)."""
        transport = self.transport
        return isinstance(transport, trio.abc.HalfCloseableStream) or hasattr(
            transport, "send_eof")

    def finish(self) -> None:
        """Write what is queued, then half-close the transport."""
        self.want_eof = True
        self.lot.unpark_all()

    def kick(self) -> None:
        """Get queued frames moving: write them now from the calling task if the
        writer is idle, else wake the writer.

        An inline write is one non-blocking ``writev`` on the socket: no await,
        so nothing else can interleave, and whatever the kernel does not take
        goes to ``unsent``, which the writer sends before anything else. It
        saves the hand-off to the writer task (two task switches) per batch,
        which is most of a PING's round trip and of a short stream's cost.
        Order is kept: inline writes happen only while the writer holds no
        bytes of its own (it is parked, ``unsent`` is empty).
        """
        conn = self.conn
        if not conn.has_data_to_send and not self.unsent and not self.want_eof:
            # Nothing for the writer: woken, it would only park again -- a
            # scheduler pass per call for nothing (a stream's close kicks).
            return
        sock = self.sock
        if (
            sock is None
            or self.busy
            or self.unsent
            or self.done.is_set()
            or not conn.has_data_to_send
        ):
            self.lot.unpark_all()
            return
        fd = sock.fileno()
        if fd < 0:  # closed: the descriptor number may belong to another socket now
            self.lot.unpark_all()
            return
        bufs = self.take_batch()
        try:
            sent = os.writev(fd, bufs if len(bufs) <= _IOV_MAX else bufs[:_IOV_MAX])
        except OSError:
            # EAGAIN, or a broken connection the writer will meet and report.
            sent = 0
        rest = _unwritten(bufs, sent)
        if rest or conn.has_data_to_send or self.want_eof:
            self.unsent = rest
            self.lot.unpark_all()

    def take_batch(self) -> Buffers:
        """The next batch to write; wakes whoever waited for it to leave the queue."""
        conn = self.conn
        bufs = conn.buffers_to_send(_WRITE_BATCH)
        if self.reader_lot:
            self.reader_lot.unpark_all()  # the answers are out of the queue
        if self.space_waiters and conn.ordered_bytes < self.buffer_size:
            self.wake_space_waiters()
        return bufs

    def wake_space_waiters(self) -> None:
        waiters = self.space_waiters
        self.space_waiters = set()
        for stream in waiters:
            stream.wake()

    async def run(self, fail: Callable[[BaseException], None], closed: trio.Event) -> None:
        """The writer task. A transport failure is reported to ``fail`` (unless
        the transport is ``closed`` already); it never raises."""
        try:
            with failures_reported("writing", fail, closed):
                await self._write_until_eof()
        finally:
            self.flushed.set()
            self.done.set()

    async def _write_until_eof(self) -> None:
        conn = self.conn
        transport = self.transport
        send = (SocketSender(transport.socket) if isinstance(transport, trio.SocketStream)
                else StreamSender(transport)).send
        while True:
            if self.unsent or conn.has_data_to_send:
                if self.unsent:  # left over by an inline write: it goes first
                    bufs, self.unsent = self.unsent, []
                else:
                    bufs = self.take_batch()
                self.busy = True
                await send(bufs)
                self.busy = False
                continue
            if self.want_eof and not self.flushed.is_set():
                self.busy = True  # no inline write may follow our FIN
                if self.half_closeable:
                    await transport.send_eof()  # type: ignore[attr-defined]
                    return  # after our FIN nothing more can be written
                self.busy = False
                # No half-close (TLS): everything is written, but keep answering
                # the peer's PINGs while the reader drains, until the hard close.
                self.flushed.set()
            await self.lot.park()


def _unwritten(bufs: Buffers, sent: int) -> Buffers:
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
