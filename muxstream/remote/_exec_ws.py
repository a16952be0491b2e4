"""exec/attach over WebSocket (``v5.channel.k8s.io``/``v4.channel.k8s.io``), server side.

Theory of operation: one reader task demultiplexes the client's messages
(stdin, resize, the v5 close signal) into bounded pipes that
:func:`pump_process` reads; output goes out as channel messages. When the
process has exited and its output is flushed, the Status goes out on channel
3 and we return: the HTTP server then closes the WebSocket with 1000, which
client-go treats as EOF on every channel (tools/remotecommand/websocket.go
``readDemuxLoop``) -- that is how it learns stdout, stderr and error are done.
The server never sends close signals itself: client-go v1.32 does not expect
them and logs each as an unknown stream.
"""

from __future__ import annotations

import contextlib
import logging

import trio

from ..transport import WebSocketStream
from ._backend import ExecBackend, ExecRequest
from ._channels import Channel, ChannelClosed, ChannelData, decode_message, encode_data
from ._pipe import PipeSendStream, open_pipe
from ._pump import run_request

logger = logging.getLogger("muxstream.remote")

#: Larger writes are split into messages of at most this size. Big messages cut
#: per-message cost (wsproto, locking, scheduling: 32 KiB messages ran at a third
#: of the speed); peers accept far more (gorilla: no limit by default, x/net
#: websocket: 32 MiB, muxstream.transport: 4 MiB).
MAX_CHANNEL_MESSAGE = 256 * 1024
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)
#: WebSocket keepalive: client-go pings every 5 s and gives up after 61 s without
#: a pong (tools/remotecommand/websocket.go). We use the same numbers on both
#: ends; a ping is also what makes a silently vanished peer show up as an error
#: (an idle socket never learns that its peer is gone).
PING_INTERVAL = 5.0
PING_TIMEOUT = 61.0


class ChannelSendStream(trio.abc.SendStream):
    """Writes go out as binary messages on one channel. Several of these may
    share one WebSocket: ``lock`` serialises their messages."""

    def __init__(self, websocket: WebSocketStream, channel: int, lock: trio.Lock) -> None:
        self._websocket = websocket
        self._channel = channel
        self._lock = lock

    async def send_message(self, message: bytes) -> None:
        async with self._lock:
            await self._websocket.send_message(message)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), MAX_CHANNEL_MESSAGE):
            await self.send_message(
                encode_data(self._channel, view[start : start + MAX_CHANNEL_MESSAGE])
            )
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def demux_messages(
    websocket: WebSocketStream,
    version: int,
    sinks: dict[int, PipeSendStream],
) -> BaseException | None:
    """Route incoming channel messages into ``sinks`` until the peer closes.

    A v5 close signal closes that channel's sink; at the end every sink is
    closed (EOF for its reader). Messages for channels without a sink are
    dropped. Returns None after a normal close, or the error that broke the
    connection (so callers can tell a clean end from a lost connection).
    """
    try:
        while True:
            try:
                message = await websocket.receive_message()
            except trio.EndOfChannel:
                return None
            except _GONE as exc:
                return exc
            try:
                decoded = decode_message(message, version=version)
            except ValueError:
                logger.warning("bad close signal from the peer; ignoring it")
                continue
            if isinstance(decoded, ChannelData):
                pipe = sinks.get(decoded.channel)
                if pipe is not None and decoded.data:
                    with contextlib.suppress(*_GONE):
                        await pipe.send_all(decoded.data)
            elif isinstance(decoded, ChannelClosed):
                pipe = sinks.pop(decoded.channel, None)
                if pipe is not None:
                    pipe.close_sync()
    finally:
        for pipe in sinks.values():
            pipe.close_sync()


async def serve_exec_websocket(
    websocket: WebSocketStream,
    protocol: str,
    request: ExecRequest,
    backend: ExecBackend,
) -> None:
    """Run one exec/attach over an accepted WebSocket. Returns once the Status
    is sent; the caller closes the WebSocket."""
    version = 5 if protocol.startswith("v5.") else 4
    sinks: dict[int, PipeSendStream] = {}
    stdin_source = resize_source = None
    if request.stdin:
        sinks[Channel.STDIN], stdin_source = open_pipe()
    if request.tty:
        sinks[Channel.RESIZE], resize_source = open_pipe()
    lock = trio.Lock()
    client_gone = trio.Event()
    process_done = trio.Event()

    async def read_client() -> None:
        await demux_messages(websocket, version, sinks)
        if not process_done.is_set():
            client_gone.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_client)
        nursery.start_soon(websocket.run_keepalive, PING_INTERVAL, PING_TIMEOUT)
        try:
            status = await run_request(
                backend,
                request,
                stdin=stdin_source,
                stdout=ChannelSendStream(websocket, Channel.STDOUT, lock)
                if request.stdout
                else None,
                stderr=ChannelSendStream(websocket, Channel.STDERR, lock)
                if request.stderr
                else None,
                resize=resize_source,
                client_gone=client_gone,
            )
        finally:
            process_done.set()
        with contextlib.suppress(*_GONE):
            await ChannelSendStream(websocket, Channel.ERROR, lock).send_all(status)
        nursery.cancel_scope.cancel()  # the reader; the close handshake reads from here on
