"""wrap_prefixed: bytes read ahead during a handshake are replayed, nothing else changes."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from muxstream.transport import PrefixedStream, wrap_prefixed


async def test_empty_prefix_returns_the_stream_itself() -> None:
    a, _ = trio.testing.memory_stream_pair()
    assert wrap_prefixed(a, b"") is a


async def test_prefix_comes_first_respecting_max_bytes() -> None:
    a, b = trio.testing.memory_stream_pair()
    wrapped = wrap_prefixed(b, b"abcdef")
    assert isinstance(wrapped, trio.abc.HalfCloseableStream)  # b is half-closeable
    await a.send_all(b"XYZ")
    await a.send_eof()
    with trio.fail_after(10):
        with trio.testing.assert_checkpoints():
            assert await wrapped.receive_some(4) == b"abcd"
        assert await wrapped.receive_some() == b"ef"
        assert await wrapped.receive_some() == b"XYZ"
        assert await wrapped.receive_some() == b""
        await wrapped.send_all(b"back")
        await wrapped.send_eof()
        assert await a.receive_some() == b"back"
        with pytest.raises(ValueError):
            await wrapped.receive_some(0)


class PlainStream(trio.abc.Stream):
    """A stream without send_eof (like trio.SSLStream)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_prefixed_plain_stream_stays_plain_and_closes() -> None:
    a, b = trio.testing.memory_stream_pair()
    wrapped = wrap_prefixed(PlainStream(b), b"left over")
    assert isinstance(wrapped, PrefixedStream)
    assert not isinstance(wrapped, trio.abc.HalfCloseableStream)
    await wrapped.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await wrapped.receive_some()
    await a.aclose()
