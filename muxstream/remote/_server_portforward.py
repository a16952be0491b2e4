"""Port-forward over SPDY and over the WebSocket SPDY tunnel, server side.

Theory of operation (kubelet cri/streaming/portforward/httpstream.go, client-go
tools/portforward/portforward.go): per forwarded connection the client opens an
``error`` and a ``data`` stream carrying the same ``port`` and ``requestid``
headers. Once both are here we dial ``forward_host:port`` and copy both ways.
When the target finishes sending we FIN ``data``; the client then resets
``data`` and waits for EOF on ``error``, so ``error`` is always FINed at the
end, after a one-line reason if the dial or the copy failed.
"""

from __future__ import annotations

import contextlib
import logging

import trio

from .. import SERVER, Stream, open_session
from .._failures import GONE
from ..transport import current_peer
from ._channels import PORT_HEADER, REQUEST_ID_HEADER, STREAM_TYPE_HEADER, StreamType
from ._server_config import RemoteServerConfig
from ._server_kubeapi import parse_port
from ._server_limits import Slots

logger = logging.getLogger("muxstream.remote")
audit = logging.getLogger("muxstream.audit")

COPY_SIZE = 256 * 1024


async def _copy(
    source: trio.abc.ReceiveStream, sink: trio.abc.HalfCloseableStream, counted: list[int]
) -> None:
    """Copy to EOF, then half-close ``sink``; adds what it copied to
    ``counted[0]``. Errors end the copy quietly."""
    with contextlib.suppress(*GONE, OSError):
        while data := await source.receive_some(COPY_SIZE):
            await sink.send_all(data)
            counted[0] += len(data)
        await sink.send_eof()


async def _forward(
    error: Stream,
    data: Stream,
    config: RemoteServerConfig,
    pod: str,
) -> None:
    port_text = data.headers.get(PORT_HEADER, "")
    reason: str | None = None
    port = parse_port(port_text) or 0
    if not port:
        reason = f"invalid port {port_text[:16]!r}"
    if reason is None and config.allowed_ports is not None and port not in config.allowed_ports:
        reason = "port is not allowed"
    target: trio.SocketStream | None = None
    started = trio.current_time()
    to_target, from_target = [0], [0]
    if reason is None:
        try:
            target = await trio.open_tcp_stream(config.forward_host, port)
        except OSError as exc:
            reason = f"dial tcp {config.forward_host}:{port}: {exc.strerror or exc}"
    try:
        if target is not None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_copy, data, target, to_target)
                await _copy(target, data, from_target)
                # The target is done sending; the client resets data once it has
                # read everything, which ends the other copy.
        if reason is not None:
            message = f"error forwarding port {port} to pod {pod}, uid : {reason}"
            logger.info("%s", message)
            with contextlib.suppress(*GONE):
                await error.send_all(message.encode())
        with contextlib.suppress(*GONE):
            await error.send_eof()
    finally:
        await data.aclose()
        await error.aclose()
        if target is not None:
            await target.aclose()
        audit.info(
            "port-forward peer=%s pod=%s port=%r to_port_bytes=%d from_port_bytes=%d "
            "result=%s seconds=%.3f",
            current_peer(), pod, port_text[:16], to_target[0], from_target[0],
            "ok" if reason is None else repr(reason), trio.current_time() - started,
        )


async def _refuse(error: Stream, data: Stream, message: str) -> None:
    logger.warning("%s", message)
    with contextlib.suppress(*GONE):
        await error.send_all(message.encode())
        await error.send_eof()
    await data.aclose()
    await error.aclose()


async def serve_port_forward_session(
    transport: trio.abc.Stream,
    config: RemoteServerConfig,
    pod: str,
    forwards: Slots | None = None,
) -> None:
    """Serve port-forward streams on ``transport`` until the client closes it.

    At most ``config.limits.max_forwards_per_session`` forwarded connections
    at once here, and none beyond what ``forwards`` (the server's count) has
    room for: a connection over either limit gets an error and is closed.
    """
    if forwards is None:
        forwards = Slots(config.limits.max_forwards)
    here = Slots(config.limits.max_forwards_per_session)

    async def forward(error: Stream, data: Stream) -> None:
        full: Slots | None = None
        if not here.acquire():
            full = here
        elif not forwards.acquire():
            here.release()
            full = forwards
        if full is not None:
            where = "in this session" if full is here else "on this server"
            message = (
                f"error forwarding to pod {pod}: too many forwarded connections {where} "
                f"(limit {full.capacity})"
            )
            await _refuse(error, data, message)
            return
        try:
            await _forward(error, data, config, pod)
        finally:
            here.release()
            forwards.release()

    async with open_session(
        transport,
        role=SERVER,
        **config.session_kwargs(),
    ) as session:
        # request id -> (the streams so far, the scope of its expiry timer)
        pending: dict[str, tuple[dict[str, Stream], trio.CancelScope]] = {}
        async with trio.open_nursery() as nursery:

            async def expire(
                request_id: str, streams: dict[str, Stream], scope: trio.CancelScope
            ) -> None:
                with scope:
                    await trio.sleep(config.stream_creation_timeout)
                    logger.warning("request %s: timed out waiting for streams", request_id)
                    pending.pop(request_id, None)
                    for stream in streams.values():
                        stream.reset()

            with contextlib.suppress(*GONE):
                async for stream in session:
                    kind = stream.headers.get(STREAM_TYPE_HEADER, "")
                    request_id = stream.headers.get(REQUEST_ID_HEADER)
                    if request_id is None:
                        # Old clients: consecutive ids, error first (kubelet's guess).
                        offset = 0 if kind == StreamType.ERROR else 2
                        request_id = str(stream.stream_id - offset)
                    if kind not in (StreamType.ERROR, StreamType.DATA):
                        stream.reset()
                        continue
                    if request_id not in pending:
                        scope = trio.CancelScope()
                        pending[request_id] = ({}, scope)
                        nursery.start_soon(expire, request_id, pending[request_id][0], scope)
                    streams, scope = pending[request_id]
                    if kind in streams:
                        stream.reset()
                        continue
                    streams[kind] = stream
                    if len(streams) == 2:
                        del pending[request_id]
                        scope.cancel()
                        nursery.start_soon(
                            forward, streams[StreamType.ERROR], streams[StreamType.DATA]
                        )
            nursery.cancel_scope.cancel()
