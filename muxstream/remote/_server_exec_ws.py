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

import trio

from .._failures import GONE
from ..transport import WebSocketStream
from ._channels import Channel
from ._pipe import PipeSendStream, open_pipe
from ._server_backend import ExecBackend, ExecRequest
from ._server_pump import run_request
from ._ws_channels import PING_INTERVAL, PING_TIMEOUT, ChannelSendStream, demux_messages


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
        with contextlib.suppress(*GONE):
            await ChannelSendStream(websocket, Channel.ERROR, lock).send_all(status)
        nursery.cancel_scope.cancel()  # the reader; the close handshake reads from here on
