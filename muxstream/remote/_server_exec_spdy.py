"""exec/attach over SPDY (HTTP upgrade + a muxstream session), server side.

Theory of operation (kubelet cri/streaming/remotecommand/httpstream.go, client-go
tools/remotecommand/v2-v5.go): the client opens one stream per role, typed by
``streamtype``; we wait for exactly the set the query asked for, run the
process, copy, then FIN stdout/stderr after their last byte, write the Status
on the error stream and FIN it. The client closes the connection once it has
read the error stream to EOF; our session close waits for that (bounded).
"""

from __future__ import annotations

import contextlib
import logging

import trio

from .. import SERVER, Session, Stream, open_session
from .._failures import GONE
from ._channels import PROTOCOL_VERSIONS, STREAM_TYPE_HEADER, StreamType
from ._server_backend import ExecBackend, ExecRequest
from ._server_config import RemoteServerConfig
from ._server_pump import run_request
from ._status import RemoteStatusError, decode_status

logger = logging.getLogger("muxstream.remote")



def expected_stream_types(request: ExecRequest, version: int) -> set[StreamType]:
    """The streams a client opens for ``request`` (client-go createStreams)."""
    expected = {StreamType.ERROR}
    if request.stdin:
        expected.add(StreamType.STDIN)
    if request.stdout:
        expected.add(StreamType.STDOUT)
    if request.stderr and not request.tty:
        expected.add(StreamType.STDERR)
    if request.tty and version >= 3:
        expected.add(StreamType.RESIZE)
    return expected


def _legacy_error_text(status: bytes) -> bytes:
    """v2/v3 carry plain text on the error stream: empty means success."""
    try:
        result = decode_status(status)
    except RemoteStatusError as exc:
        return str(exc).encode()
    if result.returncode == 0:
        return b""
    return (result.message or f"command terminated with exit code {result.returncode}").encode()


async def _collect_streams(
    session: Session, expected: set[StreamType], timeout: float
) -> dict[StreamType, Stream]:
    streams: dict[StreamType, Stream] = {}
    with trio.move_on_after(timeout):
        while set(streams) != expected:
            stream = await session.accept()
            kind = stream.headers.get(STREAM_TYPE_HEADER, "")
            if kind not in expected or StreamType(kind) in streams:
                logger.warning("unexpected stream %r; resetting it", kind)
                stream.reset()
                continue
            streams[StreamType(kind)] = stream
    return streams


async def serve_exec_spdy(
    transport: trio.abc.Stream,
    protocol: str,
    request: ExecRequest,
    backend: ExecBackend,
    config: RemoteServerConfig,
) -> None:
    """Serve one exec/attach over an upgraded connection; returns when it is closed."""
    version = PROTOCOL_VERSIONS[protocol]
    expected = expected_stream_types(request, version)
    async with open_session(
        transport,
        role=SERVER,
        **config.session_kwargs(),
    ) as session:
        try:
            streams = await _collect_streams(session, expected, config.stream_creation_timeout)
        except GONE:
            return
        if set(streams) != expected:
            missing = sorted(str(t) for t in expected - set(streams))
            logger.warning("timed out waiting for streams %s", missing)
            error = streams.get(StreamType.ERROR)
            if error is not None:
                with contextlib.suppress(*GONE):
                    await error.send_all(f"timed out waiting for streams {missing}".encode())
            for stream in streams.values():
                await stream.aclose()
            return
        client_gone = trio.Event()
        done = trio.Event()

        async def watch_session() -> None:
            # The peer opening more streams is a protocol misuse; the peer
            # closing the connection before the end means the client is gone.
            with contextlib.suppress(*GONE):
                async for extra in session:
                    extra.reset()
            if not done.is_set():
                client_gone.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_session)
            try:
                status = await run_request(
                    backend,
                    request,
                    stdin=streams.get(StreamType.STDIN),
                    stdout=streams.get(StreamType.STDOUT),
                    stderr=streams.get(StreamType.STDERR),
                    resize=streams.get(StreamType.RESIZE),
                    client_gone=client_gone,
                )
            finally:
                done.set()
            with contextlib.suppress(*GONE):
                for kind in (StreamType.STDOUT, StreamType.STDERR):
                    if kind in streams:
                        await streams[kind].send_eof()
                error = streams[StreamType.ERROR]
                await error.send_all(status if version >= 4 else _legacy_error_text(status))
                await error.send_eof()
            for stream in streams.values():
                await stream.aclose()
            nursery.cancel_scope.cancel()
