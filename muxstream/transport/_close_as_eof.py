"""A client transport that cannot half-close, made to: close as the end of sending."""

from __future__ import annotations

import trio

from .._failures import GONE

__all__ = ["wrap_close_as_eof"]


class _CloseAsEofStream(trio.abc.HalfCloseableStream):
    """``send_eof`` closes the whole transport; reading then ends with ``b""``."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.transport = stream
        self._closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return b""
        try:
            return bytes(await self.transport.receive_some(max_bytes))
        except GONE:
            if self._closed:
                return b""  # closed in send_eof: that is the end of our reading
            raise

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        self._closed = True
        await self.transport.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await self.transport.aclose()


def wrap_close_as_eof(stream: trio.abc.Stream) -> trio.abc.HalfCloseableStream:
    """``stream`` if it can half-close; else a wrapper whose ``send_eof`` closes it.

    For the client end of a session over a transport without a half-close (TLS,
    WebSocket). A session's last step of a graceful close, once everything it
    sends is flushed, is ``send_eof``; without a half-close both muxstream ends
    would then wait for the other's EOF until ``close_timeout``. As the client
    we end the connection there instead (TLS ``close_notify`` or WebSocket Close
    1000, then TCP), as client-go's ``conn.Close()`` does: nothing we still owe
    is lost, and the peer reads a clean EOF. After ``send_eof`` the wrapper's
    ``receive_some`` returns ``b""``. Servers should not use it: a server keeps
    reading until the client's EOF.
    """
    if isinstance(stream, trio.abc.HalfCloseableStream):
        return stream
    return _CloseAsEofStream(stream)
