"""A bounded in-memory byte pipe (send side and receive side as trio streams)."""

from __future__ import annotations

import trio

#: Chunks buffered between writer and reader before ``send_all`` blocks.
DEFAULT_PIPE_CHUNKS = 16


class _PipeState:
    def __init__(self, chunks: int) -> None:
        self.send_channel, self.receive_channel = trio.open_memory_channel[bytes](chunks)
        self.pending = b""


class PipeSendStream(trio.abc.SendStream):
    """Write end of :func:`open_pipe`. ``aclose`` is end-of-file for the reader."""

    def __init__(self, state: _PipeState) -> None:
        self._state = state

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            await trio.lowlevel.checkpoint()
            return
        try:
            await self._state.send_channel.send(bytes(data))
        except trio.BrokenResourceError as exc:
            raise trio.BrokenResourceError("pipe reader closed") from exc

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    def close_sync(self) -> None:
        """End-of-file for the reader, without a checkpoint."""
        self._state.send_channel.close()

    async def aclose(self) -> None:
        await self._state.send_channel.aclose()


class PipeReceiveStream(trio.abc.ReceiveStream):
    """Read end of :func:`open_pipe`: ``b""`` once the writer closed."""

    def __init__(self, state: _PipeState) -> None:
        self._state = state

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        state = self._state
        if not state.pending:
            try:
                state.pending = await state.receive_channel.receive()
            except trio.EndOfChannel:
                return b""
        else:
            await trio.lowlevel.checkpoint()
        if max_bytes is None or max_bytes >= len(state.pending):
            data, state.pending = state.pending, b""
        else:
            data, state.pending = state.pending[:max_bytes], state.pending[max_bytes:]
        return data

    async def aclose(self) -> None:
        await self._state.receive_channel.aclose()


def open_pipe(chunks: int = DEFAULT_PIPE_CHUNKS) -> tuple[PipeSendStream, PipeReceiveStream]:
    """A one-way pipe that buffers at most ``chunks`` writes (backpressure beyond)."""
    state = _PipeState(chunks)
    return PipeSendStream(state), PipeReceiveStream(state)
