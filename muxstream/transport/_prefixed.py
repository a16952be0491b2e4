"""A stream that first replays bytes already read from its transport.

An HTTP parser reads the handshake in chunks, so the chunk holding the end of
the request (or of the ``101`` response) may also hold the first bytes of the
upgraded protocol (h11 calls them ``trailing_data``). They belong to whoever
reads the upgraded stream next; dropping them corrupts its framing.
"""

from __future__ import annotations

import operator

import trio

__all__ = ["PrefixedStream", "wrap_prefixed"]


class PrefixedStream(trio.abc.Stream):
    """``transport_stream`` with *prefix* delivered before anything it receives.

    Sending, waiting and closing go straight to the transport. Use
    :func:`wrap_prefixed` to build one: it keeps half-closeability and skips the
    wrapper entirely when there is nothing to replay.
    """

    def __init__(self, transport_stream: trio.abc.Stream, prefix: bytes) -> None:
        self.transport_stream = transport_stream
        self._prefix = memoryview(bytes(prefix))
        self._closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Return replayed bytes first (at most *max_bytes*), then the transport's."""
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._prefix:
            await trio.lowlevel.checkpoint()
            if self._closed:
                raise trio.ClosedResourceError("stream was closed")
            n = len(self._prefix) if max_bytes is None else max_bytes
            chunk = bytes(self._prefix[:n])
            self._prefix = self._prefix[n:]
            return chunk
        return await self.transport_stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self._closed = True
        self._prefix = memoryview(b"")
        await self.transport_stream.aclose()


class HalfCloseablePrefixedStream(PrefixedStream, trio.abc.HalfCloseableStream):
    """A :class:`PrefixedStream` over a half-closeable transport."""

    transport_stream: trio.abc.HalfCloseableStream

    def __init__(self, transport_stream: trio.abc.HalfCloseableStream, prefix: bytes) -> None:
        super().__init__(transport_stream, prefix)

    async def send_eof(self) -> None:
        await self.transport_stream.send_eof()


def wrap_prefixed(stream: trio.abc.Stream, prefix: bytes) -> trio.abc.Stream:
    """Return a stream that yields *prefix* and then what *stream* receives.

    Returns *stream* itself when *prefix* is empty (no wrapper, no per-call
    cost), a half-closeable wrapper when *stream* is half-closeable (so a TCP FIN
    stays available to the session's close path), else a plain one.
    """
    if not prefix:
        return stream
    if isinstance(stream, trio.abc.HalfCloseableStream):
        return HalfCloseablePrefixedStream(stream, prefix)
    return PrefixedStream(stream, prefix)
