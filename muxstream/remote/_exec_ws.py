"""exec/attach over WebSocket (``v5.channel.k8s.io``/``v4.channel.k8s.io``), server side.

Theory of operation: one reader task demultiplexes the client's messages
(stdin, resize, the v5 close signal) into bounded pipes that
:func:`pump_process` reads; output goes out as channel messages. When the
process has exited and its output is flushed, the Status goes out on channel
3 and the server starts the close handshake (1000): client-go treats a normal
closure as EOF on every channel (tools/remotecommand/websocket.go
``readDemuxLoop``), which is how it learns stdout, stderr and error are done.
The server never sends close signals itself: client-go v1.32 does not expect
them and logs each as an unknown stream.
"""

from __future__ import annotations

import contextlib
import logging

import trio

from ._backend import ExecBackend, ExecRequest
from ._channels import Channel, ChannelClosed, ChannelData, decode_message, encode_data
from ._pipe import PipeSendStream, open_pipe
from ._pump import run_request
from ._ws import WebSocket

logger = logging.getLogger("muxstream.remote")

#: Output chunks larger than this are split into several messages.
MAX_OUTPUT_MESSAGE = 32 * 1024


class ChannelSendStream(trio.abc.SendStream):
    """Writes go out as binary messages on one channel."""

    def __init__(self, websocket: WebSocket, channel: int) -> None:
        self._websocket = websocket
        self._channel = channel

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), MAX_OUTPUT_MESSAGE):
            await self._websocket.send_message(
                encode_data(self._channel, view[start : start + MAX_OUTPUT_MESSAGE])
            )
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def _demux(
    websocket: WebSocket,
    version: int,
    inputs: dict[int, PipeSendStream],
    client_gone: trio.Event,
    process_done: trio.Event,
    reader_done: trio.Event,
) -> None:
    """Read every client message until the close handshake or EOF."""
    try:
        while True:
            message = await websocket.receive_message()
            if message is None:
                break
            try:
                decoded = decode_message(message, version=version)
            except ValueError:
                logger.warning("bad close signal from client; ignoring")
                continue
            if isinstance(decoded, ChannelData):
                pipe = inputs.get(decoded.channel)
                if pipe is not None and decoded.data:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await pipe.send_all(decoded.data)
            elif isinstance(decoded, ChannelClosed):
                pipe = inputs.pop(decoded.channel, None)
                if pipe is not None:
                    pipe.close_sync()
    except trio.BrokenResourceError:
        pass
    finally:
        for pipe in inputs.values():
            pipe.close_sync()
        if not process_done.is_set():
            client_gone.set()
        reader_done.set()


async def serve_exec_websocket(
    websocket: WebSocket,
    protocol: str,
    request: ExecRequest,
    backend: ExecBackend,
    *,
    close_timeout: float,
) -> None:
    """Run one exec/attach over an accepted WebSocket; returns when it is closed."""
    version = 5 if protocol.startswith("v5.") else 4
    inputs: dict[int, PipeSendStream] = {}
    stdin_source = resize_source = None
    if request.stdin:
        send, stdin_source = open_pipe()
        inputs[Channel.STDIN] = send
    if request.tty:
        send, resize_source = open_pipe()
        inputs[Channel.RESIZE] = send
    client_gone = trio.Event()
    process_done = trio.Event()
    reader_done = trio.Event()
    error_channel = ChannelSendStream(websocket, Channel.ERROR)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            _demux, websocket, version, inputs, client_gone, process_done, reader_done
        )
        try:
            status = await run_request(
                backend,
                request,
                stdin=stdin_source,
                stdout=ChannelSendStream(websocket, Channel.STDOUT) if request.stdout else None,
                stderr=ChannelSendStream(websocket, Channel.STDERR) if request.stderr else None,
                resize=resize_source,
                client_gone=client_gone,
            )
        finally:
            process_done.set()
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await error_channel.send_all(status)
        await websocket.send_close(1000)
        # The reader sees the client's Close (or EOF) and exits; bound the wait.
        with trio.move_on_after(close_timeout):
            await reader_done.wait()
        nursery.cancel_scope.cancel()
    await websocket.stream.aclose()
