"""The Kubernetes channel protocol over a WebSocket, both sides.

``v5.channel.k8s.io``/``v4.channel.k8s.io``: one channel byte per binary
message (``_channels``). :class:`ChannelSendStream` writes one channel;
:func:`demux_messages` routes what arrives into one pipe per channel. The exec
server (``_server_exec_ws``) and the exec client (``_client_exec``) both use
them, with the same keepalive numbers.
"""

from __future__ import annotations

import contextlib
import logging

import trio

from .._failures import GONE
from ..transport import WebSocketStream
from ._channels import ChannelClosed, ChannelData, decode_message, encode_data
from ._pipe import PipeSendStream

logger = logging.getLogger("muxstream.remote")

#: Larger writes are split into messages of at most this size. Big messages cut
#: per-message cost (wsproto, locking, scheduling: 32 KiB messages ran at a third
#: of the speed); peers accept far more (gorilla: no limit by default, x/net
#: websocket: 32 MiB, muxstream.transport: 4 MiB).
MAX_CHANNEL_MESSAGE = 256 * 1024
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
            except GONE as exc:
                return exc
            try:
                decoded = decode_message(message, version=version)
            except ValueError:
                logger.warning("bad close signal from the peer; ignoring it")
                continue
            if isinstance(decoded, ChannelData):
                pipe = sinks.get(decoded.channel)
                if pipe is not None and decoded.data:
                    with contextlib.suppress(*GONE):
                        await pipe.send_all(decoded.data)
            elif isinstance(decoded, ChannelClosed):
                pipe = sinks.pop(decoded.channel, None)
                if pipe is not None:
                    pipe.close_sync()
    finally:
        for pipe in sinks.values():
            pipe.close_sync()
