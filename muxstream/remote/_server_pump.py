"""Drive one process: copy stdin in, output out, apply resizes, return the exit code.

Transport-neutral: SPDY hands in mux streams, WebSocket hands in channel
adapters; both look like trio streams here.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass

import trio

from .._failures import GONE
from ..transport import current_peer
from ._server_backend import ExecBackend, ExecRequest, ProcessHandle
from ._status import ResizeDecoder, encode_error, encode_status

logger = logging.getLogger("muxstream.remote")
#: One line per exec, attach and forwarded connection (docs/security.md).
audit = logging.getLogger("muxstream.audit")

COPY_SIZE = 256 * 1024


@dataclass
class Transfer:
    """Bytes moved for one exec/attach (the audit line's figures)."""

    stdin: int = 0
    stdout: int = 0
    stderr: int = 0


async def _copy_stdin(
    source: trio.abc.ReceiveStream, handle: ProcessHandle, transfer: Transfer
) -> None:
    stdin = handle.stdin
    assert stdin is not None
    try:
        while True:
            try:
                data = await source.receive_some(COPY_SIZE)
            except GONE:
                break
            if not data:
                break
            await stdin.send_all(data)
            transfer.stdin += len(data)
    except (*GONE, OSError):
        pass  # the process stopped reading (exited or closed stdin)
    finally:
        with contextlib.suppress(*GONE, OSError):
            await stdin.aclose()


async def _apply_resizes(source: trio.abc.ReceiveStream, handle: ProcessHandle) -> None:
    """Apply each size from the resize stream. After a malformed message the
    rest is read and discarded: an unread resize channel would stall a
    WebSocket's reader (and with it stdin) once its pipe filled up."""
    decoder: ResizeDecoder | None = ResizeDecoder()
    with contextlib.suppress(*GONE):
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


#: Seconds the output pipes may stay silent after the command exited before we
#: stop reading them. Its process group is killed at exit, so what still holds
#: a pipe open left the group on purpose (setsid); what the command wrote is
#: already in the pipe and reads at once.
DRAIN_AFTER_EXIT_IDLE = 1.0


class _OutputCopy:
    """Copies one output pipe to its sink until EOF. If the sink breaks, keeps
    draining (a blocked writer would never exit) and signals the caller. Once
    the command has exited (:meth:`leader_exited`), a pipe that stays silent for
    DRAIN_AFTER_EXIT_IDLE, or whose sink is gone, is abandoned."""

    def __init__(
        self,
        source: trio.abc.ReceiveStream,
        sink: trio.abc.SendStream | None,
        on_sink_broken: trio.Event,
    ) -> None:
        self.bytes = 0
        self._source = source
        self._sink = sink
        self._on_sink_broken = on_sink_broken
        self._scope: trio.CancelScope | None = None
        self._exited = False

    def leader_exited(self) -> None:
        self._exited = True
        if self._scope is not None:
            self._scope.deadline = trio.current_time() + DRAIN_AFTER_EXIT_IDLE

    async def run(self) -> None:
        while True:
            deadline = trio.current_time() + DRAIN_AFTER_EXIT_IDLE if self._exited else math.inf
            with trio.CancelScope(deadline=deadline) as scope:
                self._scope = scope
                chunk = await self._source.receive_some(COPY_SIZE)
            self._scope = None
            if scope.cancelled_caught:
                logger.warning(
                    "an output pipe is still open %.0f s after the command exited "
                    "(held by a process outside its group); no longer reading it",
                    DRAIN_AFTER_EXIT_IDLE,
                )
                return
            if not chunk:
                return
            if self._sink is None:
                if self._exited:
                    return  # nobody to deliver to, and the command is gone
                continue
            try:
                await self._sink.send_all(chunk)
                self.bytes += len(chunk)
            except GONE:
                self._sink = None
                self._on_sink_broken.set()


async def pump_process(
    handle: ProcessHandle,
    *,
    stdin: trio.abc.ReceiveStream | None,
    stdout: trio.abc.SendStream | None,
    stderr: trio.abc.SendStream | None,
    resize: trio.abc.ReceiveStream | None,
    client_gone: trio.Event | None = None,
    transfer: Transfer | None = None,
) -> int:
    """Run ``handle`` to completion with the given client-side streams.

    Returns the exit code once the process has exited **and** its stdout and
    stderr have been read to EOF and written to the sinks, so no output is
    lost. When the process exits, ``handle.kill()`` ends what it left behind
    (its process group), so a background child cannot hold the session open.
    The sinks are not closed here. If ``client_gone`` fires (or an output sink
    breaks) the process is killed. Cancellation kills the process too.
    """
    if client_gone is None:
        client_gone = trio.Event()
    if transfer is None:
        transfer = Transfer()
    out = _OutputCopy(handle.stdout, stdout, client_gone) if handle.stdout is not None else None
    err = _OutputCopy(handle.stderr, stderr, client_gone) if handle.stderr is not None else None
    copies = [copy for copy in (out, err) if copy is not None]
    try:
        async with trio.open_nursery() as nursery:
            if handle.stdin is not None:
                if stdin is not None:
                    nursery.start_soon(_copy_stdin, stdin, handle, transfer)
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
                for copy in copies:
                    outputs.start_soon(copy.run)
                code = await handle.wait()
                # The session's command is over: end whatever it left running in
                # its group (a backgrounded child would hold the pipes, and the
                # connection, until it exits), then read what the pipes hold.
                handle.kill()
                for copy in copies:
                    copy.leader_exited()
            nursery.cancel_scope.cancel()
        return code
    except BaseException:
        handle.kill()
        raise
    finally:
        transfer.stdout = out.bytes if out is not None else 0
        transfer.stderr = err.bytes if err is not None else 0


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
    document for the error stream. Start failures become a Status too.

    Logs one audit line (logger ``muxstream.audit``, INFO) when it ends, however
    it ends: peer, pod/container, argv, exit code, bytes each way, duration."""
    handle: ProcessHandle
    started = trio.current_time()
    transfer = Transfer()
    code: int | str = "cancelled"
    try:
        try:
            handle = await (
                backend.attach(request) if request.attach else backend.start(request)
            )
        except Exception as exc:
            code = f"not started ({type(exc).__name__})"
            return await _start_failure(exc, request, stderr or stdout)
        code = await pump_process(
            handle,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            resize=resize,
            client_gone=client_gone,
            transfer=transfer,
        )
        return encode_status(code)
    finally:
        # attach runs no client argv: it joins the process the server configured.
        what = "attach" if request.attach else f"exec argv={list(request.command)!r}"
        audit.info(
            "%s peer=%s pod=%s container=%s tty=%s exit=%s stdin_bytes=%d "
            "stdout_bytes=%d stderr_bytes=%d seconds=%.3f",
            what, current_peer(), request.pod, request.container, request.tty, code,
            transfer.stdin, transfer.stdout, transfer.stderr, trio.current_time() - started,
        )


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
