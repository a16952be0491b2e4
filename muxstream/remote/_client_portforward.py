"""Port-forward, client side: many forwarded connections over one upgraded connection.

Each forwarded connection is a pair of streams (client-go tools/portforward/
portforward.go): ``error`` (we only read it) then ``data``, both carrying
``port`` and ``requestid``. The server FINs ``error`` at the end, after a
one-line reason if it could not reach the port.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .. import CLIENT, Session, Stream, open_session
from .._failures import GONE, collapsing_groups
from ..transport import wrap_close_as_eof
from ._channels import (
    PORT_FORWARD_PROTOCOL,
    PORT_FORWARD_TUNNEL_PROTOCOL,
    PORT_HEADER,
    REQUEST_ID_HEADER,
    STREAM_TYPE_HEADER,
    StreamType,
)
from ._client_endpoint import RemoteEndpoint, RemoteError, upgrade

logger = logging.getLogger("muxstream.remote")

COPY_SIZE = 256 * 1024
#: Seconds to wait for the error stream's verdict after the data stream ended.
ERROR_WAIT = 10.0


class ForwardedStream(trio.abc.HalfCloseableStream):
    """A byte stream to ``port`` inside the pod.

    Behaves like a TCP connection: ``send_eof`` half-closes. If the server
    could not reach the port, receiving raises ``trio.BrokenResourceError``
    chained to :class:`RemoteError` carrying the server's reason.
    """

    def __init__(self, data: Stream, error: Stream, port: int) -> None:
        self.port = port
        self._data = data
        self._error = error
        self._verdict: bytes | None = None

    async def _check_error(self) -> None:
        if self._verdict is None:
            chunks = []
            with trio.move_on_after(ERROR_WAIT), contextlib.suppress(*GONE):
                async for chunk in self._error:
                    chunks.append(bytes(chunk))
            self._verdict = b"".join(chunks)
        if self._verdict:
            message = self._verdict.decode("utf-8", "replace")
            raise trio.BrokenResourceError(message) from RemoteError(0, message)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            data = await self._data.receive_some(max_bytes)
        except trio.BrokenResourceError:
            await self._check_error()
            raise
        if not data:
            await self._check_error()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._data.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._data.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._data.send_eof()

    async def aclose(self) -> None:
        await self._data.aclose()
        await self._error.aclose()


class PortForwarder:
    """An open port-forward connection to one pod (from :func:`open_port_forward`)."""

    def __init__(self, session: Session, pod: str, transport: str) -> None:
        self.session = session
        self.pod = pod
        self.transport = transport
        self._request_ids = itertools.count()

    async def connect(self, port: int) -> ForwardedStream:
        """Open a connection to ``port`` in the pod."""
        request_id = str(next(self._request_ids))
        headers = {PORT_HEADER: str(port), REQUEST_ID_HEADER: request_id}
        error = await self.session.open_stream(
            headers={STREAM_TYPE_HEADER: str(StreamType.ERROR), **headers}
        )
        await error.send_eof()  # we only read it
        data = await self.session.open_stream(
            headers={STREAM_TYPE_HEADER: str(StreamType.DATA), **headers}
        )
        return ForwardedStream(data, error, port)

    async def _handle(self, remote_port: int, local: trio.abc.Stream) -> None:
        async with local:
            try:
                remote = await self.connect(remote_port)
            except GONE as exc:
                logger.warning("port-forward to %s: %s", remote_port, exc)
                return
            async with remote:

                async def upstream() -> None:
                    with contextlib.suppress(*GONE, OSError):
                        while chunk := await local.receive_some(COPY_SIZE):
                            await remote.send_all(chunk)
                        await remote.send_eof()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(upstream)
                    try:
                        while chunk := await remote.receive_some(COPY_SIZE):
                            await local.send_all(chunk)
                    except GONE as exc:
                        logger.warning("port-forward to %s: %s", remote_port, exc)
                        nursery.cancel_scope.cancel()
                    except OSError:
                        nursery.cancel_scope.cancel()
                    # the remote side finished: half-close the local socket and
                    # let the upstream copy finish on its own.
                    if isinstance(local, trio.abc.HalfCloseableStream):
                        with contextlib.suppress(*GONE, OSError):
                            await local.send_eof()

    async def serve(
        self,
        remote_port: int,
        local_port: int = 0,
        *,
        host: str = "127.0.0.1",
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:local_port`` and forward each connection to ``remote_port``.

        Runs until cancelled; ``task_status.started`` gets the listeners.
        """
        await trio.serve_tcp(
            functools.partial(self._handle, remote_port),
            local_port,
            host=host,
            task_status=task_status,
        )


@collapsing_groups
@asynccontextmanager
async def open_port_forward(endpoint: RemoteEndpoint, pod: str) -> AsyncIterator[PortForwarder]:
    """Connect to ``pod``'s port-forward endpoint (WebSocket tunnel first, then SPDY).

    Exceptions come out as themselves, not wrapped in an ExceptionGroup."""
    kind, _protocol, stream = await upgrade(
        endpoint,
        endpoint.path(pod, "portforward"),
        websocket_protocols=[PORT_FORWARD_TUNNEL_PROTOCOL],
        spdy_protocols=[PORT_FORWARD_PROTOCOL],
    )
    # Over WebSocket the binary messages are the SPDY byte stream itself.
    async with open_session(wrap_close_as_eof(stream), role=CLIENT) as session:
        yield PortForwarder(session, pod, kind)


async def port_forward(
    endpoint: RemoteEndpoint,
    pod: str,
    remote_port: int,
    local_port: int = 0,
    *,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Forward ``host:local_port`` to ``remote_port`` in ``pod`` until cancelled
    (``kubectl port-forward``). ``task_status.started`` gets the local listeners."""
    async with open_port_forward(endpoint, pod) as forwarder:
        await forwarder.serve(remote_port, local_port, host=host, task_status=task_status)
