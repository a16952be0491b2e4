"""Client side, exec and attach: run commands on a Kubernetes-style endpoint.

Mirrors ``trio.run_process`` / ``trio.Process``: :func:`run_remote` collects
output and the exit code; :func:`open_remote_process` gives an interactive
:class:`RemoteProcess`. Over WebSocket (``v5.channel.k8s.io``, then v4, tried
first) or, on a refused upgrade, SPDY with ``X-Stream-Protocol-Version``
v5..v2 (:func:`~._client_endpoint.upgrade`).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import trio

from .. import CLIENT, Session, Stream, open_session
from .._failures import GONE, collapsing_groups
from ..transport import WebSocketStream, wrap_close_as_eof
from ._channels import (
    PROTOCOL_VERSIONS,
    STREAM_TYPE_HEADER,
    SUPPORTED_STREAM_PROTOCOLS,
    Channel,
    StreamType,
    encode_close,
)
from ._client_endpoint import RemoteEndpoint, RemoteError, upgrade
from ._pipe import PipeSendStream, open_pipe
from ._status import decode_status, encode_resize
from ._ws_channels import PING_INTERVAL, PING_TIMEOUT, ChannelSendStream, demux_messages

WEBSOCKET_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


class _RemoteStdin(trio.abc.SendStream):
    """stdin of a remote process: ``aclose()`` means EOF for the remote command."""

    def __init__(
        self,
        send: trio.abc.SendStream,
        eof: contextlib.AbstractAsyncContextManager[None] | None = None,
    ) -> None:
        self._send = send
        self._closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stdin is closed")
        await self._send.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._send.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        with contextlib.suppress(*GONE):
            if isinstance(self._send, trio.abc.HalfCloseableStream):
                await self._send.send_eof()
            else:
                await self._send.aclose()


class _WebSocketStdin(ChannelSendStream):
    """stdin over WebSocket: ``aclose`` sends the v5 close signal (v4 cannot say EOF)."""

    def __init__(self, websocket: WebSocketStream, lock: trio.Lock, version: int) -> None:
        super().__init__(websocket, Channel.STDIN, lock)
        self._version = version

    async def aclose(self) -> None:
        if self._version >= 5:
            with contextlib.suppress(*GONE):
                await self.send_message(encode_close(Channel.STDIN))
        else:
            await trio.lowlevel.checkpoint()


class _ExitStatusReader:
    """Reads the error stream to its end: the exit Status, or why it is missing.

    Fed by the connection side (:func:`open_remote_process`), read by
    :meth:`RemoteProcess.wait`.
    """

    def __init__(self) -> None:
        self.document: bytes | None = None
        #: reading the error stream failed (the connection broke under it)
        self.failure: BaseException | None = None
        #: the connection ended with this error (WebSocket: the reader's verdict)
        self.connection_failure: BaseException | None = None
        self.done = trio.Event()

    async def read(self, source: trio.abc.ReceiveStream) -> None:
        chunks = []
        try:
            async for chunk in source:
                chunks.append(bytes(chunk))
            self.document = b"".join(chunks)
        except GONE as exc:
            self.failure = exc
        finally:
            self.done.set()

    async def wait(self) -> bytes:
        """The Status document; BrokenResourceError if the connection broke first."""
        await self.done.wait()
        if not self.document and self.connection_failure is not None:
            self.failure = self.connection_failure
        if self.failure is not None:
            raise trio.BrokenResourceError("connection lost before the exit status") from (
                self.failure
            )
        assert self.document is not None
        return self.document


class RemoteProcess:
    """A command running on the endpoint (compare ``trio.Process``).

    Attributes:
      stdin: a ``trio.abc.SendStream`` (None unless requested); ``aclose()`` it
        to send EOF.
      stdout, stderr: ``trio.abc.ReceiveStream`` (None unless requested; with a
        TTY there is no stderr).
      returncode: None while running, then the exit code.
      transport, protocol: what was negotiated ("websocket"/"spdy", version).
    """

    stdin: trio.abc.SendStream | None
    stdout: trio.abc.ReceiveStream | None
    stderr: trio.abc.ReceiveStream | None

    def __init__(
        self,
        transport: str,
        protocol: str,
        *,
        stdin: trio.abc.SendStream | None = None,
        stdout: trio.abc.ReceiveStream | None = None,
        stderr: trio.abc.ReceiveStream | None = None,
        resize: trio.abc.SendStream | None = None,
        status: _ExitStatusReader | None = None,
    ) -> None:
        self.transport = transport
        self.protocol = protocol
        self.version = PROTOCOL_VERSIONS.get(protocol, 4)
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.returncode: int | None = None
        self._resize = resize
        self._status = status if status is not None else _ExitStatusReader()

    async def resize(self, width: int, height: int) -> None:
        """Tell the remote terminal its new size (only with ``tty=True``)."""
        if self._resize is None:
            raise RuntimeError("resize needs tty=True")
        await self._resize.send_all(encode_resize(width, height))

    async def wait(self) -> int:
        """Wait for the exit status; returns the exit code.

        Raises :class:`~muxstream.remote.RemoteStatusError` if the endpoint
        reported a failure that is not an exit code, and
        ``trio.BrokenResourceError`` if the connection broke first.
        """
        document = await self._status.wait()
        self.returncode = decode_status(document, version=self.version).returncode
        return self.returncode


async def _spdy_process(
    nursery: trio.Nursery,
    session: Session,
    kind: str,
    protocol: str,
    *,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> RemoteProcess:
    """Open the typed streams in client-go's order; the process they make up."""

    async def open_typed(kind: StreamType) -> Stream:
        return await session.open_stream(headers={STREAM_TYPE_HEADER: str(kind)})

    status = _ExitStatusReader()
    error = await open_typed(StreamType.ERROR)
    await error.send_eof()  # we never write on it
    nursery.start_soon(status.read, error)
    stdin_stream = _RemoteStdin(await open_typed(StreamType.STDIN)) if stdin else None
    stdout_stream = await open_typed(StreamType.STDOUT) if stdout else None
    stderr_stream = await open_typed(StreamType.STDERR) if stderr and not tty else None
    resize = None
    if tty and PROTOCOL_VERSIONS.get(protocol, 4) >= 3:
        resize = await open_typed(StreamType.RESIZE)
    return RemoteProcess(
        kind, protocol, stdin=stdin_stream, stdout=stdout_stream, stderr=stderr_stream,
        resize=resize, status=status,
    )


def exec_target(
    endpoint: RemoteEndpoint,
    pod: str,
    command: Sequence[str],
    *,
    container: str | None,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    attach: bool = False,
) -> str:
    query: list[tuple[str, str]] = [] if attach else [("command", c) for c in command]
    if container:
        query.append(("container", container))
    for name, flag in (
        ("stdin", stdin),
        ("stdout", stdout),
        ("stderr", stderr and not tty),
        ("tty", tty),
    ):
        if flag:
            query.append((name, "true"))
        elif name == "stdout":
            # Said explicitly: an absent stdout reads as true on some servers
            # (ours, for kubectl's sake), which would then send output back.
            query.append((name, "false"))
    return endpoint.path(pod, "attach" if attach else "exec") + "?" + urlencode(query)


@collapsing_groups
@asynccontextmanager
async def open_remote_process(
    endpoint: RemoteEndpoint,
    pod: str,
    command: Sequence[str] = (),
    *,
    container: str | None = None,
    stdin: bool = False,
    stdout: bool = True,
    stderr: bool = True,
    tty: bool = False,
    attach: bool = False,
) -> AsyncIterator[RemoteProcess]:
    """Start ``command`` in ``pod`` (or attach to it) and yield a :class:`RemoteProcess`.

    Leaving the block closes the connection; if the command is still running
    the endpoint kills it. Raises :class:`RemoteError` if the endpoint refuses,
    ``trio.BrokenResourceError`` if the connection breaks. Exceptions come out
    as themselves, not wrapped in an ExceptionGroup -- also those raised in the
    body of the ``async with``, so a nursery there whose tasks all saw the one
    broken connection raises that one error (``run_remote`` and the copy
    functions rely on this).
    """
    if not attach and not command:
        raise ValueError("command must not be empty")
    target = exec_target(
        endpoint,
        pod,
        command,
        container=container,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        tty=tty,
        attach=attach,
    )
    kind, protocol, stream = await upgrade(
        endpoint,
        target,
        websocket_protocols=WEBSOCKET_PROTOCOLS,
        spdy_protocols=SUPPORTED_STREAM_PROTOCOLS,
    )
    if kind == "spdy":
        if protocol not in PROTOCOL_VERSIONS:
            await stream.aclose()
            raise RemoteError(101, f"unsupported protocol version {protocol!r}")
        async with open_session(wrap_close_as_eof(stream), role=CLIENT) as session:
            async with trio.open_nursery() as nursery:
                process = await _spdy_process(
                    nursery, session, kind, protocol,
                    stdin=stdin, stdout=stdout, stderr=stderr, tty=tty,
                )
                try:
                    yield process
                finally:
                    nursery.cancel_scope.cancel()
        return
    assert isinstance(stream, WebSocketStream)
    websocket = stream
    version = PROTOCOL_VERSIONS.get(protocol, 4)
    lock = trio.Lock()
    status = _ExitStatusReader()
    outputs: dict[int, PipeSendStream] = {}
    error_send, error_receive = open_pipe()
    outputs[Channel.ERROR] = error_send
    stdout_stream = stderr_stream = None
    if stdout:
        outputs[Channel.STDOUT], stdout_stream = open_pipe()
    if stderr and not tty:
        outputs[Channel.STDERR], stderr_stream = open_pipe()
    process = RemoteProcess(
        kind, protocol,
        stdin=_WebSocketStdin(websocket, lock, version) if stdin else None,
        stdout=stdout_stream,
        stderr=stderr_stream,
        resize=ChannelSendStream(websocket, Channel.RESIZE, lock) if tty else None,
        status=status,
    )
    async with websocket:
        async with trio.open_nursery() as nursery:

            async def demux() -> None:
                status.connection_failure = await demux_messages(websocket, version, outputs)

            nursery.start_soon(demux)
            nursery.start_soon(websocket.run_keepalive, PING_INTERVAL, PING_TIMEOUT)
            nursery.start_soon(status.read, error_receive)
            try:
                yield process
            finally:
                nursery.cancel_scope.cancel()


async def run_remote(
    endpoint: RemoteEndpoint,
    pod: str,
    command: Sequence[str],
    *,
    stdin: bytes | None = None,
    container: str | None = None,
    capture_stdout: bool = True,
    capture_stderr: bool = True,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` in ``pod`` to completion (compare ``trio.run_process``).

    ``stdin`` bytes are sent and then EOF. Returns a ``subprocess.CompletedProcess``
    with ``stdout``/``stderr`` bytes (``None`` when not captured; uncaptured output
    is discarded, not echoed). With ``check`` a non-zero exit raises
    ``subprocess.CalledProcessError``, as ``trio.run_process`` does.
    """
    async with open_remote_process(
        endpoint,
        pod,
        command,
        container=container,
        stdin=stdin is not None,
    ) as process:
        out, err = bytearray(), bytearray()

        async def drain(source: trio.abc.ReceiveStream | None, into: bytearray) -> None:
            if source is not None:
                async for chunk in source:
                    into += chunk

        async def feed() -> None:
            if process.stdin is not None and stdin is not None:
                with contextlib.suppress(*GONE):
                    await process.stdin.send_all(stdin)
                await process.stdin.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            nursery.start_soon(drain, process.stdout, out)
            nursery.start_soon(drain, process.stderr, err)
        returncode = await process.wait()
    result = subprocess.CompletedProcess(
        list(command),
        returncode,
        bytes(out) if capture_stdout else None,
        bytes(err) if capture_stderr else None,
    )
    if check:
        result.check_returncode()
    return result
