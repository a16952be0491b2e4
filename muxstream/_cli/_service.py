"""The muxstream service the CLI serves and talks to: hello, echo, sink.

A client opens streams with a ``service`` header (and ``authorization: Bearer T``
when the server has a token). The server answers per stream:

========  ============================================================================
hello     a JSON document ``{"server": "muxstream", "version": ..., "services": [...]}``
          then FIN: the client's first call, so a bad token fails fast
echo      every byte back, FIN after the client's FIN
sink      reads until FIN, then answers ``{"bytes": n, "sha256": hex}`` and FIN
========  ============================================================================

A stream without the right token is reset with ``INVALID_CREDENTIALS`` (SPDY/3
status 10); an unknown service with ``REFUSED_STREAM``. Over HTTP (``/muxstream``,
SPDY/3.1 upgrade or WebSocket) the token travels in the request's
``Authorization`` header instead and a wrong one is answered 401.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from .. import __version__
from .._auth import AuthThrottle, bearer_token_matches, peer_host
from .._failures import GONE
from .._session import CLIENT, Session, open_session
from .._stream import Stream
from ..protocol import RstStatus
from ..transport import current_connection, current_peer, wrap_close_as_eof
from ._common import Address, BadToken, CliError, MiB
from ._explain import HelloTimeout

logger = logging.getLogger("muxstream.cli")
#: The client's connection phases, at DEBUG (``muxstream -v`` shows them).
trace = logging.getLogger("muxstream.connect")

SERVICES = ("hello", "echo", "sink")
#: Streams with bad credentials a raw session may open before it is closed (a
#: client with the token needs none; a guesser then pays for a new connection).
MAX_AUTH_FAILURES_PER_SESSION = 3
#: The HTTP path the server upgrades (SPDY/3.1 or WebSocket) to a muxstream session.
MUX_PATH = "/muxstream"
WEBSOCKET_SUBPROTOCOL = "muxstream"
#: One receive's size on the service side: large reads (docs/performance.md, rule 1).
CHUNK = 1 << 20


def authorized(token: str | None, presented: str | None) -> bool:
    """Whether ``presented`` (an ``Authorization`` value) is ``Bearer <token>``;
    always True without a token. Constant time in the token (SHA-256 digests
    through ``hmac.compare_digest``); a malformed value is False, never an error."""
    if not token:
        return True
    return bearer_token_matches(token, presented)


# --- server side --------------------------------------------------------------------


async def serve_session(
    session: Session, token: str | None, throttle: AuthThrottle | None = None
) -> None:
    """Serve every stream the peer opens until it goes away.

    ``token=None`` means the connection was already authenticated (HTTP) or the
    server runs without a token. A stream with bad credentials is reset
    ``INVALID_CREDENTIALS`` (after the ``throttle``'s delay for its address);
    after MAX_AUTH_FAILURES_PER_SESSION of them the session ends. The first
    good stream marks the connection authenticated.
    """
    failures = 0
    async with trio.open_nursery() as nursery:
        async for stream in session:
            if authorized(token, stream.headers.get("authorization")):
                connection = current_connection()
                if connection is not None:
                    connection.mark_authenticated()
                nursery.start_soon(_serve_stream, stream)
                continue
            failures += 1
            peer = current_peer()
            delay = throttle.failed(peer_host(peer), trio.current_time()) if throttle else 0.0
            logger.warning(
                "stream %d from %s: bad token; reset INVALID_CREDENTIALS%s",
                stream.stream_id, peer, f" after {delay:.1f} s" if delay else "",
            )
            await trio.sleep(delay)
            stream.reset(RstStatus.INVALID_CREDENTIALS)
            if failures >= MAX_AUTH_FAILURES_PER_SESSION:
                logger.warning("closing the session from %s after %d bad tokens", peer, failures)
                break
        nursery.cancel_scope.cancel()


async def _serve_stream(stream: Stream) -> None:
    service = stream.headers.get("service", "")
    try:
        if service == "hello":
            hello = {"server": "muxstream", "version": __version__, "services": list(SERVICES)}
            await stream.send_all(json.dumps(hello).encode())
            await stream.send_eof()
        elif service == "echo":
            while chunk := await stream.receive_some(CHUNK):
                await stream.send_all(chunk)
            await stream.send_eof()
        elif service == "sink":
            digest = hashlib.sha256()
            count = 0
            while chunk := await stream.receive_some(CHUNK):
                digest.update(chunk)
                count += len(chunk)
            answer = {"bytes": count, "sha256": digest.hexdigest()}
            await stream.send_all(json.dumps(answer).encode())
            await stream.send_eof()
        else:
            stream.reset(RstStatus.REFUSED_STREAM)
            return
    except GONE as exc:
        logger.debug("stream %d (%s): %r", stream.stream_id, service, exc)
        return
    # Wait for the peer's FIN (if it has not sent it yet) so aclose() ends cleanly.
    try:
        while await stream.receive_some(CHUNK):
            pass
    except GONE:
        pass
    await stream.aclose()


# --- client side --------------------------------------------------------------------


@asynccontextmanager
async def connect(
    address: Address,
    *,
    token: str | None,
    ssl_context: Any = None,
    transport: str = "tcp",
    timeout: float = 10.0,
    **options: Any,
) -> AsyncIterator[Session]:
    """A client session to a ``muxstream serve``, authenticated by a hello stream.

    ``transport`` is ``tcp`` (a raw session), ``upgrade`` (HTTP/1.1 Upgrade to
    SPDY/3.1 on ``/muxstream``) or ``websocket``. ``timeout`` bounds each phase
    on its own: TCP connect, TLS handshake, HTTP upgrade, the hello. Raises
    :class:`BadToken` if the server refuses the token, :class:`CliError` if it
    does not answer the hello.
    """
    from ..transport import (
        host_header,
        open_tcp_or_tls_stream,
        wrap_upgrade_client,
        wrap_websocket_client,
    )

    headers = [("authorization", f"Bearer {token}")] if token else []
    stream = await open_tcp_or_tls_stream(
        address.host, address.port, ssl_context=ssl_context,
        connect_timeout=timeout, handshake_timeout=timeout,
    )
    host = host_header(address.host, address.port, ssl_context is not None)
    if transport == "websocket":
        trace.debug("upgrade to WebSocket on %s, offering %s", MUX_PATH, WEBSOCKET_SUBPROTOCOL)
        stream = await wrap_websocket_client(
            stream, MUX_PATH, host=host, subprotocols=[WEBSOCKET_SUBPROTOCOL],
            headers=headers, handshake_timeout=timeout,
        )
    elif transport == "upgrade":
        trace.debug("upgrade to SPDY/3.1 on %s", MUX_PATH)
        stream, _response = await wrap_upgrade_client(
            stream, MUX_PATH, host=host, method="POST", headers=headers,
            handshake_timeout=timeout,
        )
    over = "TLS" if ssl_context is not None else "TCP"
    trace.debug("SPDY/3.1 session over %s", over if transport == "tcp" else f"{transport}, {over}")
    # A transport that cannot half-close (TLS) would leave both ends waiting for
    # the other's EOF until close_timeout; as the client we end the connection at
    # that point instead, as client-go does (nothing we owe is lost by then).
    async with open_session(wrap_close_as_eof(stream), role=CLIENT, **options) as session:
        document = await hello(session, token, timeout=timeout)
        trace.debug("hello: %s %s", document.get("server"), document.get("version"))
        yield session


def _auth_headers(service: str, token: str | None) -> dict[str, str]:
    headers = {"service": service}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return headers


async def _read_json(stream: Stream) -> dict[str, Any]:
    body = await stream.receive_all()
    if not body:
        raise CliError("the server ended the stream without an answer (is it shutting down?)")
    try:
        document: dict[str, Any] = json.loads(body)
    except ValueError:
        raise CliError(f"the server sent a malformed answer: {body[:80]!r}") from None
    return document


def _map_refusal(exc: trio.BrokenResourceError) -> BaseException:
    from .._errors import StreamResetError

    cause = exc.__cause__
    if isinstance(cause, StreamResetError) and cause.status == RstStatus.INVALID_CREDENTIALS:
        return BadToken("bad token: the server refused the credentials")
    if isinstance(cause, StreamResetError) and cause.status == RstStatus.REFUSED_STREAM:
        return CliError("the server does not offer this service (is it `muxstream serve`?)")
    return exc


async def hello(session: Session, token: str | None, *, timeout: float = 10.0) -> dict[str, Any]:
    """Open the hello stream; returns the server's document. Raises BadToken, and
    HelloTimeout when no answer comes within ``timeout``."""
    try:
        with trio.move_on_after(timeout):
            stream = await session.open_stream(_auth_headers("hello", token), end_stream=True)
            async with stream:
                return await _read_json(stream)
        raise HelloTimeout(f"no answer to the hello within {timeout:g} s")
    except trio.BrokenResourceError as exc:
        mapped = _map_refusal(exc)
        if mapped is exc:
            raise
        raise mapped from None


async def echo(session: Session, token: str | None, message: bytes) -> bytes:
    """Send ``message`` on a new echo stream, FIN, and return what came back."""
    stream = await session.open_stream(_auth_headers("echo", token))
    async with stream:
        async def send() -> None:
            await stream.send_all(message)
            await stream.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            return await stream.receive_all()


@dataclass
class BulkResult:
    bytes_sent: int
    seconds: float
    local_sha256: str
    remote_bytes: int
    remote_sha256: str

    @property
    def ok(self) -> bool:
        return self.bytes_sent == self.remote_bytes and self.local_sha256 == self.remote_sha256

    @property
    def mib_per_s(self) -> float:
        return self.bytes_sent / MiB / max(self.seconds, 1e-9)


def data_blocks(count: int = 16, size: int = MiB) -> list[bytes]:
    """Random blocks the bulk copy cycles through (generated once: no per-send cost)."""
    return [os.urandom(size) for _ in range(count)]


async def bulk_send(
    session: Session,
    token: str | None,
    size: int,
    *,
    progress: Callable[[int], None] | None = None,
    chunk: int = MiB,
) -> BulkResult:
    """Send ``size`` bytes to the sink service; returns both sides' count and digest."""
    blocks = data_blocks(size=chunk)
    digest = hashlib.sha256()
    stream = await session.open_stream(_auth_headers("sink", token))
    start = trio.current_time()
    if progress is not None:
        progress(0)  # starts the display's clock with ours: its rate agrees with the result
    sent = 0
    index = 0
    async with stream:
        while sent < size:
            block = memoryview(blocks[index % len(blocks)])[: min(chunk, size - sent)]
            index += 7  # co-prime with 16: the block order does not repeat early
            await stream.send_all(block)
            digest.update(block)
            sent += len(block)
            if progress is not None:
                progress(sent)
        await stream.send_eof()
        answer = await _read_json(stream)
    seconds = trio.current_time() - start
    return BulkResult(
        bytes_sent=sent,
        seconds=seconds,
        local_sha256=digest.hexdigest(),
        remote_bytes=int(answer.get("bytes", -1)),
        remote_sha256=str(answer.get("sha256", "")),
    )
