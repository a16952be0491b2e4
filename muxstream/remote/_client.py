"""Client side: run commands on a Kubernetes-style endpoint (muxstream's or a real one).

Mirrors ``trio.run_process`` / ``trio.Process``: :func:`run_remote` collects
output and the exit code; :func:`open_remote_process` gives an interactive
:class:`RemoteProcess`. Transport negotiation follows kubectl v1.32: WebSocket
(``v5.channel.k8s.io``, then v4) first, and on a refused upgrade (any non-101
answer) SPDY with ``X-Stream-Protocol-Version`` v5..v2.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlencode, urlsplit

import trio

import muxstream

from ..transport import (
    UpgradeRefused,
    WebSocketStream,
    wrap_upgrade_client,
    wrap_websocket_client,
)
from ..transport._tls import connect
from ._channels import (
    PROTOCOL_VERSIONS,
    STREAM_TYPE_HEADER,
    SUPPORTED_STREAM_PROTOCOLS,
    Channel,
    StreamType,
    encode_close,
)
from ._collapse import collapse_groups
from ._exec_ws import PING_INTERVAL, PING_TIMEOUT, ChannelSendStream, demux_messages
from ._pipe import PipeSendStream, open_pipe
from ._status import decode_status, encode_resize

Transport = Literal["auto", "websocket", "spdy"]
_KIND_NAMES = {"websocket": "WebSocket", "spdy": "SPDY/3.1"}
#: Each connection phase is told here at DEBUG (``muxstream -v`` shows them).
logger = logging.getLogger("muxstream.connect")
WEBSOCKET_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


class RemoteError(Exception):
    """The endpoint refused the request (HTTP status and the Status message).

    ``reason`` is the Status document's reason (``"Forbidden"``, ``"NotFound"``...),
    empty when the answer was not a Status.
    """

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class RemoteEndpoint:
    """Where and how to connect: ``url`` is ``https://host:port`` or ``http://...``.

    ``ssl_context`` defaults to the system trust store for https URLs; pass one
    with ``load_cert_chain`` for client-certificate authentication.
    ``connect_timeout`` bounds each phase of connecting on its own: the TCP
    connect (``ConnectTimeout``), the TLS handshake (``TLSHandshakeTimeout``) and
    the HTTP upgrade (``HandshakeTimeout``), all from ``muxstream.transport``.
    """

    url: str
    token: str | None = None
    ssl_context: ssl.SSLContext | None = None
    namespace: str = "default"
    transport: Transport = "auto"
    connect_timeout: float = 30.0

    def path(self, pod: str, subresource: str) -> str:
        return (
            f"/api/v1/namespaces/{quote(self.namespace, safe='')}/pods/"
            f"{quote(pod, safe='')}/{subresource}"
        )

    def headers(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    async def connect(self) -> tuple[trio.abc.Stream, str]:
        """A fresh connection (TLS for https) and the Host header value."""
        split = urlsplit(self.url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError(f"bad endpoint URL {self.url!r}")
        port = split.port or (443 if split.scheme == "https" else 80)
        context = None
        if split.scheme == "https":
            context = self.ssl_context or ssl.create_default_context()
        stream = await connect(
            split.hostname,
            port,
            ssl_context=context,
            https_compatible=True,  # API servers may close without close_notify
            connect_timeout=self.connect_timeout,
            handshake_timeout=self.connect_timeout,
        )
        return stream, split.netloc


def _refusal(refused: UpgradeRefused) -> RemoteError:
    message = refused.body.decode("utf-8", "replace").strip()
    reason = ""
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        document = json.loads(refused.body)
        reason = str(document.get("reason") or "")
        message = document["message"]
    return RemoteError(
        refused.status, message or f"HTTP {refused.status} {refused.reason}", reason
    )


async def upgrade(
    endpoint: RemoteEndpoint,
    target: str,
    *,
    websocket_protocols: Sequence[str],
    spdy_protocols: Sequence[str],
) -> tuple[Literal["websocket", "spdy"], str, trio.abc.Stream]:
    """Connect and upgrade, WebSocket first unless ``endpoint.transport`` says otherwise.

    Returns (transport, negotiated protocol, upgraded stream); for "websocket"
    the stream is a :class:`~muxstream.transport.WebSocketStream`. Raises
    :class:`RemoteError` when the endpoint refuses (the last refusal wins), and
    ``muxstream.transport.HandshakeError`` for a broken handshake.
    """
    order: list[Literal["websocket", "spdy"]] = (
        ["websocket", "spdy"] if endpoint.transport == "auto" else [endpoint.transport]
    )
    refusal: RemoteError | None = None
    for kind in order:
        stream, host = await endpoint.connect()
        offered = websocket_protocols if kind == "websocket" else spdy_protocols
        logger.debug("upgrade to %s, offering %s", _KIND_NAMES[kind], ", ".join(offered))
        try:
            if kind == "websocket":
                websocket = await wrap_websocket_client(
                    stream,
                    target,
                    host=host,
                    subprotocols=websocket_protocols,
                    headers=endpoint.headers(),
                    handshake_timeout=endpoint.connect_timeout,
                )
                logger.debug("upgraded to WebSocket, protocol %s", websocket.subprotocol)
                return kind, websocket.subprotocol or "", websocket
            upgraded, response = await wrap_upgrade_client(
                stream,
                target,
                host=host,
                method="POST",
                protocols=spdy_protocols,
                headers=endpoint.headers(),
                handshake_timeout=endpoint.connect_timeout,
            )
            logger.debug("upgraded to SPDY/3.1, protocol %s", response.protocol)
            return kind, response.protocol or "", upgraded
        except UpgradeRefused as refused:
            refusal = _refusal(refused)
            logger.debug("%s refused: HTTP %s %s", _KIND_NAMES[kind], refused.status,
                         refusal.message)
    assert refusal is not None
    raise refusal


class _CloseAsEofStream(trio.abc.HalfCloseableStream):
    """A client transport that cannot half-close (TLS, WebSocket), made to.

    The session's last step of a graceful close, once everything it sends is
    flushed, is ``send_eof``. Without a half-close both muxstream ends would
    wait for the other's EOF until ``close_timeout``. As the client we end the
    connection there instead (TLS close_notify or WebSocket Close 1000, then
    TCP), as client-go's ``conn.Close()`` does; nothing we still owe is lost,
    and the peer reads a clean EOF.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.transport = stream
        self._closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return b""
        try:
            return bytes(await self.transport.receive_some(max_bytes))
        except (*_GONE,):
            if self._closed:
                return b""  # closed in send_eof: that is the end of our reading
            raise

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        self._closed = True
        await self.transport.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await self.transport.aclose()


def close_as_eof(stream: trio.abc.Stream) -> trio.abc.Stream:
    """``stream`` itself if it can half-close, else :class:`_CloseAsEofStream`."""
    if isinstance(stream, trio.abc.HalfCloseableStream):
        return stream
    return _CloseAsEofStream(stream)


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
        with contextlib.suppress(*_GONE):
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
            with contextlib.suppress(*_GONE):
                await self.send_message(encode_close(Channel.STDIN))
        else:
            await trio.lowlevel.checkpoint()


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

    def __init__(self, transport: str, protocol: str) -> None:
        self.transport = transport
        self.protocol = protocol
        self.version = PROTOCOL_VERSIONS.get(protocol, 4)
        self.stdin = self.stdout = self.stderr = None
        self.returncode: int | None = None
        self._resize: trio.abc.SendStream | None = None
        self._error_document: bytes | None = None
        self._error_done = trio.Event()
        self._error_failure: BaseException | None = None
        self._connection_failure: BaseException | None = None

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
        await self._error_done.wait()
        if not self._error_document and self._connection_failure is not None:
            self._error_failure = self._connection_failure
        if self._error_failure is not None:
            raise trio.BrokenResourceError("connection lost before the exit status") from (
                self._error_failure
            )
        assert self._error_document is not None
        self.returncode = decode_status(self._error_document, version=self.version).returncode
        return self.returncode

    async def _read_error(self, source: trio.abc.ReceiveStream) -> None:
        chunks = []
        try:
            async for chunk in source:
                chunks.append(bytes(chunk))
            self._error_document = b"".join(chunks)
        except _GONE as exc:
            self._error_failure = exc
        finally:
            self._error_done.set()


async def _spdy_process(
    nursery: trio.Nursery,
    session: muxstream.Session,
    process: RemoteProcess,
    *,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> None:
    """Open the typed streams in client-go's order and wire them to ``process``."""

    async def open_typed(kind: StreamType) -> muxstream.Stream:
        return await session.open_stream(headers={STREAM_TYPE_HEADER: str(kind)})

    error = await open_typed(StreamType.ERROR)
    await error.send_eof()  # we never write on it
    nursery.start_soon(process._read_error, error)
    if stdin:
        process.stdin = _RemoteStdin(await open_typed(StreamType.STDIN))
    if stdout:
        process.stdout = await open_typed(StreamType.STDOUT)
    if stderr and not tty:
        process.stderr = await open_typed(StreamType.STDERR)
    if tty and process.version >= 3:
        resize = await open_typed(StreamType.RESIZE)
        process._resize = resize


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
    with collapse_groups():
        async with _open_remote_process(
            endpoint,
            pod,
            command,
            container=container,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            tty=tty,
            attach=attach,
        ) as process:
            yield process


@asynccontextmanager
async def _open_remote_process(
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
    process = RemoteProcess(kind, protocol)
    if kind == "spdy":
        if protocol not in PROTOCOL_VERSIONS:
            await stream.aclose()
            raise RemoteError(101, f"unsupported protocol version {protocol!r}")
        async with muxstream.open_session(close_as_eof(stream), role=muxstream.CLIENT) as session:
            async with trio.open_nursery() as nursery:
                await _spdy_process(
                    nursery, session, process, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty
                )
                try:
                    yield process
                finally:
                    nursery.cancel_scope.cancel()
        return
    assert isinstance(stream, WebSocketStream)
    websocket = stream
    lock = trio.Lock()
    outputs: dict[int, PipeSendStream] = {}
    error_send, error_receive = open_pipe()
    outputs[Channel.ERROR] = error_send
    if stdout:
        outputs[Channel.STDOUT], process.stdout = open_pipe()
    if stderr and not tty:
        outputs[Channel.STDERR], process.stderr = open_pipe()
    if stdin:
        process.stdin = _WebSocketStdin(websocket, lock, process.version)
    if tty:
        process._resize = ChannelSendStream(websocket, Channel.RESIZE, lock)
    async with websocket:
        async with trio.open_nursery() as nursery:

            async def demux() -> None:
                process._connection_failure = await demux_messages(
                    websocket, process.version, outputs
                )

            nursery.start_soon(demux)
            nursery.start_soon(websocket.run_keepalive, PING_INTERVAL, PING_TIMEOUT)
            nursery.start_soon(process._read_error, error_receive)
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
                with contextlib.suppress(*_GONE):
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
