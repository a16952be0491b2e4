"""``wrap_close_as_eof``: a client's half-close over a transport that has none."""

from __future__ import annotations

import trio
import trio.testing

from muxstream import CLIENT, open_session
from muxstream.transport import wrap_close_as_eof


class WholeStream(trio.abc.Stream):
    """A stream without ``send_eof`` (as TLS and WebSocket streams are)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self.inner.receive_some(max_bytes))

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()


def test_a_half_closeable_stream_is_returned_as_it_is() -> None:
    left, _right = trio.testing.memory_stream_pair()
    assert wrap_close_as_eof(left) is left


async def test_send_eof_closes_the_transport_after_what_was_sent() -> None:
    left, right = trio.testing.memory_stream_pair()
    whole = WholeStream(left)
    wrapped = wrap_close_as_eof(whole)
    assert isinstance(wrapped, trio.abc.HalfCloseableStream) and wrapped is not whole
    with trio.fail_after(5):
        await wrapped.send_all(b"last words")
        await wrapped.send_eof()
        assert whole.closed
        assert await right.receive_some() == b"last words"
        assert await right.receive_some() == b""  # the peer reads a clean EOF
        # our own reading ends too, instead of failing on the closed transport
        assert await wrapped.receive_some() == b""


async def test_a_client_session_over_it_ends_the_connection_once_flushed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A server that reads until the client's EOF before it closes (as a plain
    # socket server does). Unwrapped, the client's session cannot half-close
    # either: both ends wait for the other until close_timeout (60 s here).
    left, right = trio.testing.memory_stream_pair()
    server = WholeStream(right)
    received = bytearray()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:

            async def read_to_eof() -> None:
                while data := await server.receive_some():
                    received.extend(data)
                await server.aclose()

            nursery.start_soon(read_to_eof)
            start = trio.current_time()
            async with open_session(wrap_close_as_eof(WholeStream(left)), role=CLIENT,
                                    close_timeout=60, keepalive_interval=None):
                pass
            closed_after = trio.current_time() - start
    assert closed_after < 1  # not the close timeout
    assert received  # the session's GOAWAY went out before the end
