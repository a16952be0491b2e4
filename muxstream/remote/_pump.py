"""Drive one process: copy stdin in, output out, apply resizes, return the exit code.

Transport-neutral: SPDY hands in mux streams, WebSocket hands in channel
adapters; both look like trio streams here.
"""

from __future__ import annotations

import contextlib
import logging

import trio

from ._backend import ExecBackend, ExecRequest, ProcessHandle
from ._status import ResizeDecoder, encode_error, encode_status

logger = logging.getLogger("muxstream.remote")

COPY_SIZE = 256 * 1024
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


async def _copy_stdin(source: trio.abc.ReceiveStream, handle: ProcessHandle) -> None:
    stdin = handle.stdin
    assert stdin is not None
    try:
        while True:
            try:
                data = await source.receive_some(COPY_SIZE)
            except _GONE:
                break
            if not data:
                break
            await stdin.send_all(data)
    except (*_GONE, OSError):
        pass  # the process stopped reading (exited or closed stdin)
    finally:
        with contextlib.suppress(*_GONE, OSError):
            await stdin.aclose()


async def _apply_resizes(source: trio.abc.ReceiveStream, handle: ProcessHandle) -> None:
    """Apply each size from the resize stream. After a malformed message the
    rest is read and discarded: an unread resize channel would stall a
    WebSocket's reader (and with it stdin) once its pipe filled up."""
    decoder: ResizeDecoder | None = ResizeDecoder()
    with contextlib.suppress(*_GONE):
        while data := await source.receive_some(COPY_SIZE):
            if decoder is None:
                continue
            try:
                sizes = list(decoder.feed(data))
            except ValueError as exc:
                logger.warning("ignoring the resize stream after a bad message: %s", exc)
                decoder = None
                continue
            for size in sizes:
                await handle.resize(size.width, size.height)


async def _copy_output(
    source: trio.abc.ReceiveStream,
    sink: trio.abc.SendStream | None,
    on_sink_broken: trio.Event,
) -> None:
    """Copy until EOF. If the sink breaks, keep draining (a blocked writer would
    never exit) and signal the caller."""
    while chunk := await source.receive_some(COPY_SIZE):
        if sink is None:
            continue
        try:
            await sink.send_all(chunk)
        except _GONE:
            sink = None
            on_sink_broken.set()


async def pump_process(
    handle: ProcessHandle,
    *,
    stdin: trio.abc.ReceiveStream | None,
    stdout: trio.abc.SendStream | None,
    stderr: trio.abc.SendStream | None,
    resize: trio.abc.ReceiveStream | None,
    client_gone: trio.Event | None = None,
) -> int:
    """Run ``handle`` to completion with the given client-side streams.

    Returns the exit code once the process has exited **and** its stdout and
    stderr have been read to EOF and written to the sinks, so no output is
    lost. The sinks are not closed here. If ``client_gone`` fires (or an output
    sink breaks) the process is killed. Cancellation kills the process too.
    """
    if client_gone is None:
        client_gone = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            if handle.stdin is not None:
                if stdin is not None:
                    nursery.start_soon(_copy_stdin, stdin, handle)
                else:
                    await handle.stdin.aclose()
            if resize is not None:
                nursery.start_soon(_apply_resizes, resize, handle)

            async def watch() -> None:
                await client_gone.wait()
                logger.info("client went away: killing the process")
                handle.kill()

            nursery.start_soon(watch)
            async with trio.open_nursery() as outputs:
                if handle.stdout is not None:
                    outputs.start_soon(_copy_output, handle.stdout, stdout, client_gone)
                if handle.stderr is not None:
                    outputs.start_soon(_copy_output, handle.stderr, stderr, client_gone)
                code = await handle.wait()
            nursery.cancel_scope.cancel()
        return code
    except BaseException:
        handle.kill()
        raise


async def run_request(
    backend: ExecBackend,
    request: ExecRequest,
    *,
    stdin: trio.abc.ReceiveStream | None,
    stdout: trio.abc.SendStream | None,
    stderr: trio.abc.SendStream | None,
    resize: trio.abc.ReceiveStream | None,
    client_gone: trio.Event,
) -> bytes:
    """Start the request's process (or attach), pump it, and return the Status
    document for the error stream. Start failures become a Status too."""
    handle: ProcessHandle
    try:
        handle = await (backend.attach(request) if request.attach else backend.start(request))
    except Exception as exc:
        return await _start_failure(exc, request, stderr or stdout)
    code = await pump_process(
        handle,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        resize=resize,
        client_gone=client_gone,
    )
    return encode_status(code)


async def _start_failure(
    exc: Exception, request: ExecRequest, sink: trio.abc.SendStream | None
) -> bytes:
    """A command that cannot start: explain on stderr, exit like a shell would
    (127 not found, 126 not executable); other failures are InternalError."""
    what = request.command[0] if request.command else "?"
    if isinstance(exc, (FileNotFoundError, PermissionError)):
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        message = f"exec: {what!r}: {exc.strerror}\n"
        if sink is not None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await sink.send_all(message.encode())
        return encode_status(code, message.strip())
    logger.warning("cannot start %r: %s", request.command, exc)
    return encode_error(f"cannot start {what!r}: {exc}")
