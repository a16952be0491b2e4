"""A WebSocket endpoint over a trio stream (wsproto), with message and byte-stream views.

One task reads (:meth:`WebSocket.receive_message`); any task may send (a lock
serialises frames). Pings are answered as they are read. Closing follows RFC
6455 5.5.1: send Close (1000), keep reading until the peer's Close or EOF
(bounded by ``close_timeout``), then close the transport.
"""

from __future__ import annotations

import contextlib

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

#: Largest message we reassemble (bytes); remotecommand messages are <= 32 KiB.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Seconds to wait for the peer's Close after ours.
DEFAULT_CLOSE_TIMEOUT = 5.0
RECEIVE_SIZE = 256 * 1024
#: Largest payload we put in one frame when sending.
SEND_CHUNK = 1024 * 1024


class WebSocket:
    """Message-level WebSocket over an established (post-101) transport."""

    def __init__(self, stream: trio.abc.Stream, *, client: bool) -> None:
        self.stream = stream
        self._ws = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        self._send_lock = trio.Lock()
        self._parts: list[bytes] = []
        self._size = 0
        self.closed = False  # the peer's Close or EOF was read
        self.close_code: int | None = None

    async def _send_raw(self, data: bytes) -> None:
        if data:
            async with self._send_lock:
                await self.stream.send_all(data)

    async def send_message(self, data: bytes | bytearray | memoryview) -> None:
        """Send one binary message. Raises trio.BrokenResourceError if closed."""
        if self._ws.state is not ConnectionState.OPEN:
            raise trio.BrokenResourceError("websocket is closing")
        try:
            payload = self._ws.send(Message(data=bytes(data)))
        except LocalProtocolError as exc:
            raise trio.BrokenResourceError("websocket is closing") from exc
        await self._send_raw(payload)

    async def receive_message(self) -> bytes | None:
        """The next data message (text is returned UTF-8 encoded), or None once
        the peer closed. Raises trio.BrokenResourceError on protocol errors."""
        while True:
            for event in self._ws.events():
                if isinstance(event, (BytesMessage, TextMessage)):
                    part = (
                        bytes(event.data)
                        if isinstance(event, BytesMessage)
                        else event.data.encode()
                    )
                    self._size += len(part)
                    if self._size > MAX_MESSAGE_SIZE:
                        raise trio.BrokenResourceError("websocket message too large")
                    self._parts.append(part)
                    if event.message_finished:
                        message = b"".join(self._parts)
                        self._parts.clear()
                        self._size = 0
                        return message
                elif isinstance(event, Ping):
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await self._send_raw(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.closed = True
                    self.close_code = event.code
                    if self._ws.state is ConnectionState.REMOTE_CLOSING:
                        with contextlib.suppress(
                            trio.BrokenResourceError, trio.ClosedResourceError
                        ):
                            await self._send_raw(self._ws.send(event.response()))
                    return None
            if self.closed:
                return None
            data = await self.stream.receive_some(RECEIVE_SIZE)
            if not data:
                self.closed = True
                return None
            try:
                self._ws.receive_data(bytes(data))
            except RemoteProtocolError as exc:
                raise trio.BrokenResourceError(f"websocket protocol error: {exc}") from exc

    async def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Send our Close frame once (no-op if already sent or the link is gone)."""
        if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._send_raw(self._ws.send(CloseConnection(code=code, reason=reason)))

    async def aclose(self, code: int = 1000, close_timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Close handshake, bounded by ``close_timeout``, then close the transport.

        Call this only when no other task is reading the socket."""
        try:
            await self.send_close(code)
            with trio.move_on_after(close_timeout):
                while not self.closed:
                    with contextlib.suppress(trio.BrokenResourceError):
                        if await self.receive_message() is None:
                            break
                        continue
                    break
        finally:
            await self.stream.aclose()


class WebSocketByteStream(trio.abc.HalfCloseableStream):
    """A byte stream carried in binary messages (message boundaries mean nothing),
    as the ``SPDY/3.1+portforward.k8s.io`` tunnel uses them. ``send_eof`` sends
    Close; ``receive_some`` returns ``b""`` after the peer's Close."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._pending = b""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while not self._pending:
            message = await self.websocket.receive_message()
            if message is None:
                return b""
            self._pending = message
        if max_bytes is None or max_bytes >= len(self._pending):
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if not view:
            await trio.lowlevel.checkpoint()
            return
        for start in range(0, len(view), SEND_CHUNK):
            await self.websocket.send_message(view[start : start + SEND_CHUNK])

    async def wait_send_all_might_not_block(self) -> None:
        await self.websocket.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.websocket.send_close(1000)

    async def aclose(self) -> None:
        await self.websocket.send_close(1000)
        await self.websocket.stream.aclose()
