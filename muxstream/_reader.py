"""The reader: the one task that reads the transport (docs/performance.md, design rules).

It reads, feeds the bytes to the sans-IO connection, applies the events
(``_dispatch``), and pauses when the session must push back on the peer
(:func:`must_pause`). On the peer's EOF it wakes everyone and lets the close path
finish this side. While the session drains on close it keeps reading -- that is
step 4 of the close path -- until the peer's EOF, or, over a transport that
cannot half-close, until the peer has nothing left to say.
"""

from __future__ import annotations

import os

import trio
from trio.lowlevel import RunVar, checkpoint

from ._core import DRAINING, OPEN, SessionCore, Trigger
from ._dispatch import dispatch
from ._errors import ConnectionLost, StreamResetError, failures_reported
from ._writer import tls_stream
from .protocol import Connection, RemoteProtocolError, RstStatus

#: One read's size: large reads cut per-call overhead (docs/performance.md).
_RECV_SIZE = 1 << 20
#: A read shorter than asked for and than this emptied the socket: wait before
#: the next one instead of trying it (saves an EAGAIN system call per PING).
_SMALL_READ = 4096
#: Bytes the reader may read and process between two yields to the scheduler.
_YIELD_BYTES = 256 * 1024
#: ... counting each read as this many bytes, so a stream of tiny reads yields too.
_YIELD_PER_READ = 8 * 1024
#: One read's size on other transports (WebSocket, upgraded HTTP, trio's SSLStream).
_STREAM_RECV_SIZE = 64 * 1024
#: Queued answers (PING echoes, RST_STREAMs) at which the reader stops reading:
#: a peer that floods without reading them meets TCP backpressure.
_ANSWERS_PAUSE = 1024


#: The receive buffer of every TCP session in one trio run (see SocketReceiver).
_SHARED_BUFFER: RunVar[memoryview] = RunVar("muxstream_receive_buffer")


def shared_receive_buffer() -> memoryview:
    """The run's one ``_RECV_SIZE`` receive buffer, made on first use."""
    try:
        return _SHARED_BUFFER.get()
    except LookupError:
        view = memoryview(bytearray(_RECV_SIZE))
        _SHARED_BUFFER.set(view)
        return view


class SocketReceiver:
    """Reads a TCP socket's descriptor directly, guided by the decoder.

    Non-blocking reads straight on the descriptor, yielding to the scheduler
    once per ``_YIELD_BYTES`` (trio's socket methods yield on every call):
    after a large DATA frame, it reads the next frame's header alone, then its
    payload into the very bytes object the stream hands out -- no copy, and no
    extra scheduler pass for it. A short, small read (a PING, a short stream's
    frames) emptied the socket: the next read would fail with EAGAIN, so it
    waits first.

    Everything else is read into one large buffer that every TCP session of
    the trio run shares (:func:`shared_receive_buffer`), so that an idle
    session holds none (a 1 MiB buffer each was most of an idle session's
    memory). Sharing is safe because the bytes are used up before anyone else
    can read: :meth:`receive` never awaits between its read and its return,
    and the reader feeds what it returns to the decoder without awaiting,
    which copies out everything it keeps (``FrameDecoder`` only borrows its
    input). Its yields to the scheduler come before a read, never after.
    """

    __slots__ = ("conn", "drained", "sock", "unyielded", "view")

    def __init__(self, sock: trio.socket.SocketType, conn: Connection) -> None:
        self.sock = sock
        self.conn = conn
        self.view = shared_receive_buffer()
        self.unyielded = 0
        self.drained = False

    async def receive(self) -> bytes | memoryview:
        """The next bytes read; the caller must use them up before it awaits."""
        sock = self.sock
        conn = self.conn
        while True:
            if self.unyielded >= _YIELD_BYTES:
                self.unyielded = 0
                await checkpoint()
            fd = sock.fileno()
            if fd < 0:
                raise trio.ClosedResourceError("the socket was closed")
            if self.drained:
                self.drained = False
                self.unyielded = 0
                await trio.lowlevel.wait_readable(sock)
                continue  # the socket may have been closed meanwhile
            hint = conn.read_hint
            try:
                if hint > 0:  # payload due: into a fresh bytes, no copy
                    want = hint if hint < _RECV_SIZE else _RECV_SIZE
                    data: bytes | memoryview = os.read(fd, want)
                else:
                    want = -hint if hint else _RECV_SIZE
                    view = self.view
                    data = view[: os.readv(fd, (view[:want],))]
            except (BlockingIOError, InterruptedError):
                self.unyielded = 0
                await trio.lowlevel.wait_readable(sock)
                continue
            n = len(data)
            if not n:
                await checkpoint()
                return b""
            if n < _SMALL_READ and n < want:
                self.drained = True
            self.unyielded += n + _YIELD_PER_READ
            return data


class StreamReceiver:
    """Reads any other transport (TLS, WebSocket, upgraded HTTP, memory)."""

    __slots__ = ("size", "transport")

    def __init__(self, transport: trio.abc.Stream) -> None:
        self.transport = transport
        # TLSStream returns every complete record it has read (up to 256 KiB
        # per transport read) in one call; others get 64 KiB: SSLStream
        # allocates max_bytes on every call yet returns one 16 KiB record
        # (measured: 194 vs 340 MiB/s with 1 MiB).
        self.size = _RECV_SIZE if tls_stream(transport) is not None else _STREAM_RECV_SIZE

    async def receive(self) -> bytes | bytearray:
        return await self.transport.receive_some(self.size)


async def run(core: SessionCore) -> None:
    """The reader task: never raises; a failure becomes the session's error."""
    try:
        with failures_reported("reading", core.fail, core.closed):
            await _read_until_done(core)
    finally:
        core.reader_done.set()


async def _read_until_done(core: SessionCore) -> None:
    transport = core.transport
    recv = (SocketReceiver(transport.socket, core.conn)
            if isinstance(transport, trio.SocketStream)
            else StreamReceiver(transport)).receive
    lot = core.reader_lot
    while True:
        while must_pause(core):
            await lot.park()
        data = await recv()
        if not data:
            _on_transport_eof(core)
            return
        if not _process(core, data):
            return
        if core.phase is DRAINING and core.peer_finished:
            return


def must_pause(core: SessionCore) -> bool:
    """TCP backpressure towards a peer that ignores flow control (spdystream).

    The reader pauses while a stream holds more than twice its window --
    except while a PING is outstanding: its echo sits behind that data, and
    the caller waiting for it may be the one who would drain the stream.
    Even then, the total stays below ``session_window``.

    It also pauses while ``_ANSWERS_PAUSE`` answers to the peer's frames
    wait for the writer: a peer that floods PINGs or doomed SYN_STREAMs
    without reading our answers is slowed to the pace it reads them.
    """
    if core.conn.queued_answers >= _ANSWERS_PAUSE:
        return True
    if core.overfull is None or core.phase is DRAINING:
        return False
    return not core.pings.waiters or core.buffered_total >= core.options.session_window


def _process(core: SessionCore, data: bytes | bytearray | memoryview) -> bool:
    """Feed bytes to the protocol; False once the session is dead."""
    conn = core.conn
    chunk: bytes | bytearray | memoryview = data
    while True:
        try:
            events = conn.receive_data(chunk)
        except RemoteProtocolError as exc:
            dispatch(core, exc.events)
            if exc.fatal:
                core.writer.lot.unpark_all()
                core.fail(exc)
                return False
            assert exc.stream_id is not None
            stream = core.streams.pop(exc.stream_id, None)
            if stream is not None:
                stream.on_broken(StreamResetError(
                    exc.rst_status or RstStatus.PROTOCOL_ERROR, remote=False,
                    message=f"stream reset: peer protocol error: {exc}"))
            chunk = b""
            continue
        dispatch(core, events)
        if conn.has_data_to_send:
            core.writer.kick()
        return True


def _on_transport_eof(core: SessionCore) -> None:
    core.eof_received = True
    lost = ConnectionLost("peer closed the connection before ending the stream")
    for stream in list(core.streams.values()):
        if not stream.they_sent_fin:
            stream.on_broken(lost)
        stream.wake()
    core.accept.lot.unpark_all()
    core.pings.wake_all()
    if core.phase is OPEN:
        # The peer is done (GOAWAY + FIN): finish our side so its reader sees our FIN.
        core.begin_close(Trigger.PEER)
