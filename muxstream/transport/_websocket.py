"""WebSocket (RFC 6455) as a ``trio.abc.Stream`` of bytes, over wsproto.

Theory of operation
-------------------
wsproto turns bytes into events; this adapter moves the bytes. There are no
background tasks: whoever calls ``receive_some``/``receive_message`` reads the
transport (one large read, then every frame in it is parsed), and whoever calls
``send_all``/``send_message`` writes it. Binary message payloads are queued as
``(data, ends_message)`` chunks; ``receive_some`` hands them out ignoring
message boundaries (a byte stream: a SPDY frame may span messages, messages may
be empty), ``receive_message`` reassembles whole messages (Kubernetes'
``v5.channel.k8s.io``: one channel byte, then the payload).

Control frames never wait for the user: a pong is queued while parsing and
written at once, or right after the send in progress (a reader must not block
on a writer that may be blocked on the peer, who may be blocked on us).

Data frames are parsed and built by :mod:`._wsframe` (masking compiled when
the accelerator is active); wsproto sees only control frames and the close.

Close: the close frame is our FIN
---------------------------------
``send_eof()`` sends our close frame (1000) and we keep receiving; the peer's
close frame makes ``receive_some`` return ``b""`` after every earlier byte.
``aclose()`` sends ours if not yet sent, reads until the peer's close frame or
EOF, then TCP FIN and reads until the peer's FIN, then closes, all bounded by
``close_timeout``: the last bytes the peer sent are read before our socket
closes, so the kernel never answers them with a RST that destroys data in
flight (wsproto refuses to send data after a close frame arrives, hence our own
framing). Details and the TLS case: docs/transports.md, "Close: the close frame is the FIN".

Peer violations (text message, bad framing, unmasked client frame, oversized
message) send the matching close code and raise ``trio.BrokenResourceError``
from :class:`WebSocketProtocolError` after the earlier bytes; ``aclose()`` then
closes without waiting for the violator's reply (RFC 6455 section 7.1.7).
"""

from __future__ import annotations

import operator
import os
from collections import deque

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Ping, Pong
from wsproto.frame_protocol import CloseReason, FrameProtocol

from .._errors import KeepaliveTimeout, MuxstreamError
from ._errors import WebSocketClosedError, WebSocketProtocolError
from ._wsframe import FIN, OP_BINARY, FrameReader, ws_frame

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_RECEIVE_SIZE",
    "DEFAULT_SEND_MESSAGE_SIZE",
    "DEFAULT_WEBSOCKET_CLOSE_TIMEOUT",
    "WebSocketStream",
]

DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024  # bytes; bounds receive_message's buffer
DEFAULT_SEND_MESSAGE_SIZE = 256 * 1024  # bytes per message: under common limits (1 MiB)
DEFAULT_RECEIVE_SIZE = 256 * 1024  # bytes per transport read (docs/performance.md, rule 6)
DEFAULT_WEBSOCKET_CLOSE_TIMEOUT = 10.0  # seconds for the closing handshake (as a session's close)

_NORMAL_CLOSE_CODES = frozenset({CloseReason.NORMAL_CLOSURE, CloseReason.GOING_AWAY,
                                 CloseReason.NO_STATUS_RCVD})


class WebSocketStream(trio.abc.HalfCloseableStream):
    """A byte stream carried in binary WebSocket messages (plus a message API).

    Usually obtained from :func:`open_websocket_stream`,
    :func:`wrap_websocket_client` or ``HTTPRequest.accept_websocket``; construct
    it directly only after doing the opening handshake yourself.

    Args:
        transport_stream: the connection, positioned just after the handshake.
        client: True on the side that sent the opening handshake (it masks its
            frames, RFC 6455 section 5.3).
        trailing_data: bytes read past the handshake; parsed before anything
            else.
        subprotocol: the negotiated subprotocol, kept as :attr:`subprotocol`.
        max_message_size: a longer incoming message closes with 1009.
        send_message_size: ``send_all`` splits its data into binary messages of
            at most this many bytes.
        receive_size: bytes per transport read.
        close_timeout: bound on the close handshake in :meth:`aclose`.

    Use either the byte API (``send_all``/``receive_some``) or the message API
    (``send_message``/``receive_message``) in each direction; mixing them in one
    direction makes message boundaries meaningless. Half-closeable: ``send_eof``
    sends our close frame (see the module docs for what peers make of it).
    """

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        *,
        client: bool,
        trailing_data: bytes = b"",
        subprotocol: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        send_message_size: int = DEFAULT_SEND_MESSAGE_SIZE,
        receive_size: int = DEFAULT_RECEIVE_SIZE,
        close_timeout: float = DEFAULT_WEBSOCKET_CLOSE_TIMEOUT,
    ) -> None:
        if send_message_size < 1 or receive_size < 1 or max_message_size < 0:
            raise ValueError("sizes must be positive")
        self.transport_stream = transport_stream
        self.subprotocol = subprotocol
        self.is_client = client
        # Data frames are parsed by our FrameReader and built by ws_frame (one
        # pass each, see _wsframe); control frames go to wsproto's Connection,
        # which parses them and tracks the close handshake. Pings and pongs are
        # built by a FrameProtocol of our own, because Connection refuses to
        # send them once the peer's close frame has arrived -- and a half-close
        # must go on sending until our own close frame (send_eof).
        self._reader = FrameReader(client=client)
        self._conn = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        self._out = FrameProtocol(client, [])
        self._max_message_size = max_message_size
        self._send_message_size = send_message_size
        self._receive_size = receive_size
        self._close_timeout = close_timeout

        # Incoming: (payload, ends_message) chunks and how far the head is consumed.
        self._incoming: deque[tuple[bytes, bool]] = deque()
        self._head_offset = 0
        self._message_size = 0  # bytes of the incoming message so far
        self._eof = False  # the peer's normal close frame arrived
        self._error: MuxstreamError | None = None  # raised once the queue is empty
        self._transport_eof = False
        self._peer_close: CloseConnection | None = None  # its normal close, to answer
        self._close_sent = False  # our close frame is queued or sent: no more sending

        # Outgoing control frames (pongs, close) waiting for the send lock.
        self._pending_out = bytearray()
        self._send_lock = trio.Lock()
        self._send_broken = False  # a transport send failed or was cancelled midway

        self._closed = False  # aclose() was called
        self._finished = trio.Event()  # set on close/EOF/error: stops run_keepalive
        self._receiving = False
        self._sending = False
        self._aborted: KeepaliveTimeout | None = None
        self._ping_count = 0
        self._awaited_pong: bytes | None = None
        self._pong_event = trio.Event()

        if trailing_data:
            self._receive(trailing_data)

    # -- receiving ---------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return the next bytes of the stream, at most *max_bytes*.

        Returns ``b""`` once the peer's normal close frame (1000, 1001 or no
        code) has arrived and every earlier byte was returned.

        Raises:
            trio.BrokenResourceError: from :class:`WebSocketProtocolError` (the
                peer broke the protocol), :class:`WebSocketClosedError` (abnormal
                close or EOF without a close frame), :class:`muxstream.KeepaliveTimeout`,
                or the transport's own error.
            trio.ClosedResourceError: this stream was closed.
            trio.BusyResourceError: another task is receiving.
        Cancellation loses no data.
        """
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        await trio.lowlevel.checkpoint_if_cancelled()
        self._enter_receive()
        filled = False
        try:
            while True:
                chunk = self._take_bytes(max_bytes)
                if chunk is not None:
                    break
                if self._eof:
                    chunk = b""
                    break
                self._raise_if_failed()
                await self._fill()
                filled = True  # the transport read was a full checkpoint
        finally:
            self._receiving = False
        if not filled:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return chunk

    async def receive_message(self) -> bytes:
        """Return the next whole binary message (possibly empty).

        Raises:
            trio.EndOfChannel: the peer closed normally and every message was
                returned.
            Otherwise as :meth:`receive_some`.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._enter_receive()
        filled = False
        try:
            while True:
                message = self._take_message()
                if message is not None:
                    break
                if self._eof:
                    raise trio.EndOfChannel("the peer closed the WebSocket")
                self._raise_if_failed()
                await self._fill()
                filled = True
        finally:
            self._receiving = False
        if not filled:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    def _enter_receive(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the WebSocketStream was closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving")
        self._receiving = True

    def _raise_if_failed(self) -> None:
        if self._aborted is not None:
            raise trio.BrokenResourceError(str(self._aborted)) from self._aborted
        if self._error is not None:
            raise trio.BrokenResourceError(str(self._error)) from self._error

    def _take_bytes(self, max_bytes: int | None) -> bytes | None:
        incoming = self._incoming
        while incoming:
            data = incoming[0][0]
            start = self._head_offset
            remaining = len(data) - start
            if remaining == 0:
                incoming.popleft()
                self._head_offset = 0
                continue
            if max_bytes is None or max_bytes >= remaining:
                incoming.popleft()
                self._head_offset = 0
                return data[start:] if start else data
            self._head_offset = start + max_bytes
            return data[start : start + max_bytes]
        return None

    def _take_message(self) -> bytes | None:
        if not any(ends for _, ends in self._incoming):
            return None
        parts: list[bytes] = []
        while True:
            data, ends = self._incoming.popleft()
            parts.append(data[self._head_offset :] if self._head_offset else data)
            self._head_offset = 0
            if ends:
                return b"".join(parts)

    async def _fill(self) -> None:
        """Read once from the transport and parse what arrived."""
        try:
            data = await self.transport_stream.receive_some(self._receive_size)
        except trio.ClosedResourceError:
            if self._closed:
                raise trio.ClosedResourceError("the WebSocketStream was closed") from None
            if self._aborted is not None:
                raise trio.BrokenResourceError(str(self._aborted)) from self._aborted
            raise
        if data:
            self._receive(bytes(data) if type(data) is not bytes else data)
        else:
            self._transport_eof = True
            self._conn.receive_data(None)  # wsproto reports close code 1006
            self._process_events()
        if self._pending_out:
            await self._flush_if_idle()

    def _receive(self, data: bytes) -> None:
        """Parse bytes from the transport: data to the queue, control frames to wsproto."""
        items, error = self._reader.parse(data)
        for kind, payload, ends in items:
            if kind == "data":
                size = self._message_size + len(payload)
                if size > self._max_message_size:
                    self._protocol_error(
                        CloseReason.MESSAGE_TOO_BIG,
                        f"message larger than {self._max_message_size} bytes",
                    )
                    return
                self._message_size = 0 if ends else size
                self._incoming.append((payload, ends))
            else:
                self._conn.receive_data(payload)
                if self._process_events():
                    return
        if error is not None:
            self._protocol_error(error.code, error.reason)

    def _process_events(self) -> bool:
        """Apply wsproto's events (control frames); True once the stream failed or ended."""
        for event in self._conn.events():
            if isinstance(event, Ping):
                if not self._close_sent:  # after our close frame we send nothing more
                    self._pending_out += self._out.pong(event.payload)
            elif isinstance(event, Pong):
                if event.payload == self._awaited_pong:
                    self._pong_event.set()
            elif isinstance(event, CloseConnection):
                self._on_close(event)
                return True
        return False

    def _on_close(self, event: CloseConnection) -> None:
        state = self._conn.state
        if state is ConnectionState.OPEN:
            # Not a frame from the peer: wsproto's parser failed (bad framing,
            # unmasked client frame, invalid UTF-8 in a close reason...).
            self._protocol_error(event.code, event.reason or "invalid frame")
            return
        if event.code in _NORMAL_CLOSE_CODES:
            # EOF, like a TCP FIN: we may go on sending until our own send_eof()
            # or aclose() answers with our close frame.
            self._eof = True
            self._peer_close = event
            self._finished.set()  # no more keepalive pings
            return
        if state is ConnectionState.REMOTE_CLOSING:
            self._pending_out += self._conn.send(event.response())
            self._close_sent = True
        if event.code == CloseReason.ABNORMAL_CLOSURE:
            self._error = WebSocketClosedError(event.code, "connection ended without a close frame")
        else:
            self._error = WebSocketClosedError(event.code, event.reason or "")
        self._finished.set()

    def _protocol_error(self, code: int, reason: str) -> None:
        self._error = WebSocketProtocolError(code, reason)
        if self._conn.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self._pending_out += self._conn.send(CloseConnection(code=code, reason=reason))
            self._close_sent = True
        self._finished.set()

    # -- sending -----------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send *data* as one or more binary messages (none if it is empty).

        Raises:
            trio.BrokenResourceError: the peer closed or broke the WebSocket,
                or the transport failed.
            trio.ClosedResourceError: this stream was closed.
            trio.BusyResourceError: another task is sending.
        If cancelled, some of *data* may have been sent and the stream is broken.
        """
        await self._send(data, whole_message=False)

    async def send_message(self, data: bytes | bytearray | memoryview) -> None:
        """Send *data* as exactly one binary message (empty allowed).

        Raises as :meth:`send_all`.
        """
        await self._send(data, whole_message=True)

    async def _send(self, data: bytes | bytearray | memoryview, *, whole_message: bool) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("the WebSocketStream was closed")
            view = memoryview(data).cast("B")
            if not view and not whole_message:
                await trio.lowlevel.checkpoint()
                if self._closed:
                    raise trio.ClosedResourceError("the WebSocketStream was closed")
                return
            self._check_can_send()
            step = len(view) if whole_message else self._send_message_size
            async with self._send_lock:
                await self._flush_pending()
                offset = 0
                while True:
                    chunk = view[offset : offset + step]
                    self._check_can_send()
                    # RFC 6455 5.3: a fresh, unpredictable key for every client frame.
                    key = os.urandom(4) if self.is_client else None
                    await self._transport_send(ws_frame(FIN | OP_BINARY, chunk, key))
                    offset += len(chunk)
                    if offset >= len(view):
                        break
                await self._flush_pending()
        finally:
            self._sending = False

    def _check_can_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the WebSocketStream was closed")
        if self._aborted is not None:
            raise trio.BrokenResourceError(str(self._aborted)) from self._aborted
        if self._error is not None:
            raise trio.BrokenResourceError(str(self._error)) from self._error
        if self._send_broken:
            raise trio.BrokenResourceError("an earlier send on this WebSocket failed")
        if self._close_sent:
            raise trio.ClosedResourceError("send_eof() was called: our close frame is sent")

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the transport can take more data (see ``trio.abc.SendStream``)."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending")
        self._sending = True
        try:
            if self._closed:
                await trio.lowlevel.checkpoint()
                raise trio.ClosedResourceError("the WebSocketStream was closed")
            # Holding the lock keeps readers from writing pongs meanwhile.
            async with self._send_lock:
                await self.transport_stream.wait_send_all_might_not_block()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Send our close frame (1000, or the peer's code if it closed first).

        The WebSocket equivalent of a TCP FIN: the peer's ``receive_some``
        returns ``b""``; we keep receiving until the peer's own close frame
        (our ``receive_some`` then returns ``b""``). Further sends raise
        ``trio.ClosedResourceError``. Idempotent. Note that many WebSocket
        peers (wsproto's ``Connection``, browsers, gorilla by default) answer a
        close frame at once and stop sending; muxstream's WebSocketStream
        does not: it answers with its own ``send_eof()`` or ``aclose()``.

        Raises:
            trio.ClosedResourceError: this stream was closed.
            trio.BusyResourceError: another task is sending.
            trio.BrokenResourceError: the transport failed.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("the WebSocketStream was closed")
            if self._close_sent:
                await trio.lowlevel.checkpoint()
                return
            self._queue_close_frame()
            async with self._send_lock:
                await self._flush_pending()
        finally:
            self._sending = False

    def _queue_close_frame(self) -> None:
        if self._close_sent:
            return
        self._close_sent = True
        if self._conn.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            if self._peer_close is not None:
                frame = self._conn.send(self._peer_close.response())
            else:
                frame = self._conn.send(CloseConnection(code=CloseReason.NORMAL_CLOSURE))
            self._pending_out += frame

    async def _transport_send(self, data: bytes | bytearray) -> None:
        try:
            await self.transport_stream.send_all(data)
        except trio.ClosedResourceError:
            self._send_broken = True
            if self._closed:
                raise trio.ClosedResourceError("the WebSocketStream was closed") from None
            if self._aborted is not None:
                raise trio.BrokenResourceError(str(self._aborted)) from self._aborted
            raise
        except BaseException:
            # Cancelled or failed midway: a frame may be cut short on the wire.
            self._send_broken = True
            raise

    async def _flush_pending(self) -> None:
        # Caller holds the send lock.
        while self._pending_out and not self._send_broken:
            out = bytes(self._pending_out)
            self._pending_out.clear()
            await self._transport_send(out)

    async def _flush_if_idle(self) -> None:
        # Called by readers and the keepalive task: never waits for the lock.
        if self._send_lock.locked() or self._send_broken:
            return
        async with self._send_lock:
            try:
                await self._flush_pending()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the reader reports the failure when it reads

    # -- keepalive ---------------------------------------------------------

    async def run_keepalive(self, interval: float, timeout: float | None = None) -> None:
        """Send a ping every *interval* seconds until the stream ends.

        Run it in a nursery next to the user of the stream. Pongs are noticed
        only while someone reads the stream. With *timeout*, a ping not
        answered within *timeout* seconds aborts the connection: pending and
        later calls raise ``trio.BrokenResourceError`` from
        :class:`muxstream.KeepaliveTimeout`. Returns when the stream is closed, the peer
        closed it, or it was aborted; never raises for a network failure.
        """
        while not self._finished.is_set():
            with trio.move_on_after(interval):
                await self._finished.wait()
            if self._finished.is_set() or self._close_sent or self._eof:
                return
            self._ping_count += 1
            payload = self._ping_count.to_bytes(8, "big")
            self._awaited_pong = payload
            self._pong_event = trio.Event()
            self._pending_out += self._out.ping(payload)
            await self._flush_if_idle()
            if timeout is None:
                continue
            with trio.move_on_after(timeout) as scope:
                await self._pong_event.wait()
            if scope.cancelled_caught and not self._finished.is_set():
                self._aborted = KeepaliveTimeout(f"no pong within {timeout} s")
                self._finished.set()
                await trio.aclose_forcefully(self.transport_stream)
                return

    # -- closing -----------------------------------------------------------

    async def aclose(self) -> None:
        """Close gracefully, bounded by ``close_timeout``; see the module docs.

        Tasks blocked in this stream's methods get ``trio.ClosedResourceError``
        (the transport is then closed without waiting for the peer's reply).
        If cancelled, the transport is closed at once, and Cancelled propagates.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._finished.set()
        graceful = False
        try:
            with trio.move_on_after(self._close_timeout):
                if self._receiving or self._sending:
                    await self._send_close_frame()
                else:
                    await self._close_handshake()
                    graceful = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except BaseException:
            await trio.aclose_forcefully(self.transport_stream)
            raise
        if graceful:
            with trio.move_on_after(self._close_timeout):
                await self.transport_stream.aclose()
        await trio.aclose_forcefully(self.transport_stream)  # no-op if closed above

    async def _send_close_frame(self) -> None:
        self._queue_close_frame()
        if not self._send_lock.locked():
            async with self._send_lock:
                await self._flush_pending()

    async def _close_handshake(self) -> None:
        await self._send_close_frame()
        if isinstance(self._error, WebSocketProtocolError):
            # RFC 6455 7.1.7: after failing the connection, send the close frame and
            # stop processing the peer's data -- no wait for its reply.
            return
        transport = self.transport_stream
        # Wait for the peer's close frame; data after ours is discarded (we are closing).
        while self._conn.state is ConnectionState.LOCAL_CLOSING and not self._transport_eof:
            data = await transport.receive_some(self._receive_size)
            if not data:
                self._transport_eof = True
                break
            items, _ = self._reader.parse(bytes(data) if type(data) is not bytes else data)
            for kind, payload, _ in items:
                if kind == "control":
                    self._conn.receive_data(payload)
                    for _event in self._conn.events():
                        pass
        # RFC 6455 7.1.1: the server closes TCP first. With a half-closeable
        # transport both sides send FIN and read to EOF, which satisfies it;
        # without one (TLS) the client waits for the server's close.
        if isinstance(transport, trio.abc.HalfCloseableStream):
            await transport.send_eof()
        elif not self.is_client:
            return
        while not self._transport_eof:
            if not await transport.receive_some(self._receive_size):
                self._transport_eof = True
