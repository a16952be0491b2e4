"""One HTTP/1.1 server for plain requests, Upgrade and WebSocket on one port.

Each connection runs a loop: read one request (head and body, bounded in time
and size), hand an :class:`HTTPRequest` to the application, then either keep the
connection alive for the next request, or -- if the application accepted an
upgrade -- give the connection to the application for good.

The application decides everything about a request with exactly one of:
``await request.respond(...)`` (plain HTTP), ``await request.accept_upgrade(...)``
(a raw stream, e.g. SPDY/3.1) or ``await request.accept_websocket(...)``. That is
how kubectl's behaviour is served: it tries WebSocket first and falls back to
the SPDY upgrade when refused, on the same URL.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any, NoReturn
from urllib.parse import parse_qs

import h11
import trio

from ._connections import (
    ConnectionInfo,
    ConnectionLimits,
    current_connection,
    peer_name,
    serve_connections,
    set_current_connection,
)
from ._errors import HandshakeError
from ._headers import HeadersLike, HTTPHeaders, negotiate_protocol
from ._http import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_HEADER_SIZE,
    HANDSHAKE_RECEIVE_SIZE,
    PROTOCOL_VERSION_HEADER,
)
from ._prefixed import wrap_prefixed
from ._tls import wrap_tls_server
from ._websocket import DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_WEBSOCKET_CLOSE_TIMEOUT, WebSocketStream
from ._websocket_handshake import accept_token, websocket_request_problem

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "HTTPApp",
    "HTTPRequest",
    "handle_http_connection",
    "serve_http",
]

logger = logging.getLogger("muxstream.transport")

DEFAULT_MAX_BODY_SIZE = 1024 * 1024  # bytes; API requests (JSON) are small, bodies are read whole
LINGER_TIMEOUT = 2.0  # seconds spent draining after our last response before closing

#: The application: called once per request; must answer it (see HTTPRequest).
HTTPApp = Callable[["HTTPRequest"], Awaitable[None]]


class _Refuse(Exception):
    """Answer the current request with *status* and close the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class HTTPRequest:
    """One request, as the application sees it, and the ways to answer it.

    Attributes:
        method: e.g. ``"GET"``.
        target: the raw request target, e.g. ``"/api/v1/x?watch=1"``.
        path: *target* up to ``?``.
        query: *target* after ``?`` (``""`` if none).
        headers: the request headers.
        body: the whole request body (at most ``max_body_size`` bytes).
        http_version: ``"1.1"`` or ``"1.0"``.

    Answer exactly once, with :meth:`respond` (or :meth:`respond_json`),
    :meth:`accept_upgrade` or :meth:`accept_websocket`. A second answer raises
    ``RuntimeError``. If the application returns without answering, the server
    answers 500.
    """

    def __init__(self, connection: _Connection, event: h11.Request, body: bytes) -> None:
        self._connection = connection
        self.method = event.method.decode("ascii")
        self.target = event.target.decode("latin-1")
        self.path, _, self.query = self.target.partition("?")
        self.headers = HTTPHeaders(event.headers)
        self.body = body
        self.http_version = event.http_version.decode("ascii")
        self._answered = False

    def __repr__(self) -> str:
        return f"<HTTPRequest {self.method} {self.target}>"

    @property
    def query_params(self) -> dict[str, list[str]]:
        """The query string decoded; repeated keys keep every value in order."""
        return parse_qs(self.query, keep_blank_values=True)

    @property
    def answered(self) -> bool:
        """Whether a response or an upgrade was sent."""
        return self._answered

    @property
    def is_upgrade(self) -> bool:
        """Whether this is an HTTP/1.1 Upgrade request (``Connection: Upgrade``
        plus an ``Upgrade`` header) -- WebSocket handshakes included."""
        return bool(self.headers.get_tokens("upgrade")) and self.headers.has_token(
            "connection", "upgrade"
        )

    @property
    def is_websocket(self) -> bool:
        """Whether this asks for a WebSocket (``Upgrade: websocket``)."""
        return self.is_upgrade and self.headers.has_token("upgrade", "websocket")

    @property
    def protocol_versions(self) -> list[str]:
        """The offered ``X-Stream-Protocol-Version`` values, client's order."""
        return self.headers.get_tokens(PROTOCOL_VERSION_HEADER)

    @property
    def websocket_subprotocols(self) -> list[str]:
        """The offered ``Sec-WebSocket-Protocol`` values, client's order."""
        return self.headers.get_tokens("sec-websocket-protocol")

    def _begin_answer(self) -> None:
        if self._answered:
            raise RuntimeError(f"{self!r} was already answered")
        self._answered = True

    async def respond(
        self, status: int, headers: HeadersLike = (), body: bytes | str = b""
    ) -> None:
        """Send a complete response; the connection stays usable (keep-alive).

        Args:
            status: a final status code (200-599).
            headers: response headers; ``Content-Length`` is added unless present.
            body: the body; ``str`` is encoded as UTF-8 (and ``Content-Type``
                defaults to ``text/plain; charset=utf-8``).

        Raises:
            RuntimeError: already answered.
            ValueError: *status* is not a final status.
            trio.BrokenResourceError: the client went away.
        """
        if not 200 <= status <= 599:
            raise ValueError(f"respond() needs a final status, not {status}")
        hdrs = HTTPHeaders(headers)
        if isinstance(body, str):
            body = body.encode("utf-8")
            if hdrs.get("content-type") is None:
                hdrs = HTTPHeaders([*hdrs, ("content-type", "text/plain; charset=utf-8")])
        self._begin_answer()
        await self._connection.send_response(status, hdrs, body, head=self.method == "HEAD")

    async def respond_json(self, obj: Any, status: int = 200, headers: HeadersLike = ()) -> None:
        """:meth:`respond` with *obj* serialized as ``application/json``."""
        hdrs = HTTPHeaders(headers)
        if hdrs.get("content-type") is None:
            hdrs = HTTPHeaders([*hdrs, ("content-type", "application/json")])
        await self.respond(status, hdrs, json.dumps(obj).encode("utf-8"))

    async def accept_upgrade(
        self,
        protocol: str | None = None,
        *,
        upgrade: str | None = None,
        headers: HeadersLike = (),
    ) -> trio.abc.Stream:
        """Answer ``101 Switching Protocols`` and return the upgraded stream.

        Args:
            protocol: the ``X-Stream-Protocol-Version`` to echo (pick it with
                :meth:`negotiate_protocol`); None sends none.
            upgrade: the ``Upgrade`` token to answer; defaults to the first
                one the client asked for (e.g. ``SPDY/3.1``).
            headers: extra response headers.

        Returns:
            The connection, from the first byte after the request on: bytes the
            client sent right behind its request are replayed first. It is
            half-closeable when the connection is (plain TCP). The application
            owns it; the server closes it (gracefully) when the application
            returns.

        Raises:
            ValueError: not an upgrade request, or *upgrade*/*protocol* was not
                offered by the client.
            RuntimeError: already answered.
        """
        if not self.is_upgrade:
            raise ValueError(f"{self!r} does not ask for an upgrade")
        offered = self.headers.get_tokens("upgrade")
        if upgrade is None:
            upgrade = offered[0]
        elif upgrade.lower() not in (t.lower() for t in offered):
            raise ValueError(f"the client did not offer Upgrade {upgrade!r}")
        offered_versions = self.protocol_versions
        if protocol is not None and offered_versions and protocol not in offered_versions:
            raise ValueError(f"the client did not offer protocol version {protocol!r}")
        required = [("connection", "Upgrade"), ("upgrade", upgrade)]
        if protocol is not None:
            required.append((PROTOCOL_VERSION_HEADER, protocol))
        self._begin_answer()
        return await self._connection.switch_protocols([*required, *HTTPHeaders(headers)])

    async def accept_websocket(
        self,
        subprotocol: str | None = None,
        *,
        headers: HeadersLike = (),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        close_timeout: float = DEFAULT_WEBSOCKET_CLOSE_TIMEOUT,
    ) -> WebSocketStream:
        """Complete the WebSocket opening handshake and return the WebSocket.

        Args:
            subprotocol: the ``Sec-WebSocket-Protocol`` to answer (one the client
                offered; see :meth:`negotiate_subprotocol`), or None.
            headers: extra response headers.
            max_message_size, close_timeout: passed to :class:`WebSocketStream`.

        Returns:
            The :class:`WebSocketStream`, owned by the application; the server
            closes it (gracefully) when the application returns.

        Raises:
            HandshakeError: the request is not a valid WebSocket handshake; the
                server has already answered 400 (426 for a wrong version).
            ValueError: *subprotocol* was not offered.
            RuntimeError: already answered.
        """
        problem = websocket_request_problem(self.method, self.http_version, self.headers)
        if problem is not None:
            if "Sec-WebSocket-Version" in problem:
                await self.respond(426, {"sec-websocket-version": "13"}, problem)
            else:
                await self.respond(400, (), problem)
            raise HandshakeError(problem)
        if subprotocol is not None and subprotocol not in self.websocket_subprotocols:
            raise ValueError(f"the client did not offer subprotocol {subprotocol!r}")
        key = self.headers.get("sec-websocket-key") or ""
        required = [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-accept", accept_token(key)),
        ]
        if subprotocol is not None:
            required.append(("sec-websocket-protocol", subprotocol))
        self._begin_answer()
        upgraded = await self._connection.switch_protocols(
            [*required, *HTTPHeaders(headers)], replay=False
        )
        ws = WebSocketStream(
            upgraded,
            client=False,
            trailing_data=self._connection.trailing,
            subprotocol=subprotocol,
            max_message_size=max_message_size,
            close_timeout=close_timeout,
        )
        self._connection.upgraded = ws
        return ws

    def negotiate_protocol(self, supported: Sequence[str]) -> str | None:
        """The first offered ``X-Stream-Protocol-Version`` in *supported*, or None."""
        return negotiate_protocol(self.protocol_versions, supported)

    def negotiate_subprotocol(self, supported: Sequence[str]) -> str | None:
        """The first offered WebSocket subprotocol in *supported*, or None."""
        return negotiate_protocol(self.websocket_subprotocols, supported)


class _Connection:
    """The server side of one HTTP/1.1 connection (h11 state plus the stream)."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        handshake_timeout: float,
        max_header_size: int,
        max_body_size: int,
    ) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_size)
        self.handshake_timeout = handshake_timeout
        self.max_body_size = max_body_size
        self.upgraded: trio.abc.AsyncResource | None = None
        self.trailing = b""

    async def read_request(self) -> tuple[h11.Request, bytes] | None:
        """The next request and its body, or None on a clean EOF between requests.

        Raises _Refuse (408, 413, or h11's 400/431 hint) for bad requests.
        """
        with trio.move_on_after(self.handshake_timeout):
            try:
                return await self._read_request()
            except h11.RemoteProtocolError as exc:
                raise _Refuse(exc.error_status_hint, f"bad request: {exc}") from exc
        if self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]:
            return None  # an idle keep-alive connection: just close it
        raise _Refuse(408, f"request not received within {self.handshake_timeout} s")

    async def _read_request(self) -> tuple[h11.Request, bytes] | None:
        request: h11.Request | None = None
        body = bytearray()
        sent_continue = False
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                if (
                    request is not None
                    and not sent_continue
                    and request.headers
                    and _expects_continue(request)
                ):
                    sent_continue = True
                    await self.stream.send_all(
                        self.conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                    )
                data = await self.stream.receive_some(HANDSHAKE_RECEIVE_SIZE)
                self.conn.receive_data(bytes(data))
            elif isinstance(event, h11.Request):
                request = event
                if _declared_length(event) > self.max_body_size:
                    # Refused before reading any of it (nor sending 100 Continue).
                    raise _Refuse(413, f"request body larger than {self.max_body_size} bytes")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body_size:
                    raise _Refuse(413, f"request body larger than {self.max_body_size} bytes")
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                return None
            else:  # pragma: no cover - PAUSED comes only after EndOfMessage
                raise _Refuse(400, f"unexpected HTTP event {event!r}")

    async def send_response(
        self, status: int, headers: HTTPHeaders, body: bytes, *, head: bool = False
    ) -> None:
        pairs = list(headers)
        if headers.get("content-length") is None:
            pairs.append(("content-length", str(len(body))))
        data = self.conn.send(
            h11.Response(status_code=status, headers=pairs, reason=_reason(status))
        )
        if body and not head:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)

    async def switch_protocols(
        self, headers: list[tuple[str, str]], *, replay: bool = True
    ) -> trio.abc.Stream:
        data = self.conn.send(
            h11.InformationalResponse(
                status_code=101, headers=headers, reason="Switching Protocols"
            )
        )
        self.trailing = self.conn.trailing_data[0]
        await self.stream.send_all(data)
        upgraded = wrap_prefixed(self.stream, self.trailing) if replay else self.stream
        self.upgraded = upgraded
        return upgraded

    async def refuse(self, refusal: _Refuse) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f"{refusal}\n".encode()
        headers = HTTPHeaders(
            [("connection", "close"), ("content-type", "text/plain; charset=utf-8")]
        )
        try:
            await self.send_response(refusal.status, headers, body)
        except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _declared_length(request: h11.Request) -> int:
    """The request's Content-Length (h11 has checked it is one number), else 0."""
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)
    return 0


def _expects_continue(request: h11.Request) -> bool:
    return any(
        name == b"expect" and value.lower() == b"100-continue" for name, value in request.headers
    )


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


async def _linger_and_close(stream: trio.abc.Stream) -> None:
    # Half-close, then read until the client's EOF (bounded) before closing: a
    # close with unread input makes the kernel send RST, which can destroy our
    # last response before the client reads it.
    try:
        with trio.move_on_after(LINGER_TIMEOUT):
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            while await stream.receive_some(HANDSHAKE_RECEIVE_SIZE):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    await trio.aclose_forcefully(stream)


async def handle_http_connection(
    stream: trio.abc.Stream,
    app: HTTPApp,
    *,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
) -> None:
    """Serve HTTP/1.1 requests on *stream* with *app* until the connection ends.

    Each request (head and body) must arrive within *handshake_timeout*
    seconds (idle keep-alive connections are closed after it too); a head
    larger than *max_header_size* is answered 431, a body larger than
    *max_body_size* 413, a malformed request 400, a slow one 408 -- each then
    closes the connection without calling *app*.

    *app* exceptions are logged (logger ``muxstream.transport``) and answered
    500 if nothing was sent yet; they never propagate. Transport errors end
    the connection quietly. *stream* is always closed on return.
    """
    connection = _Connection(
        stream,
        handshake_timeout=handshake_timeout,
        max_header_size=max_header_size,
        max_body_size=max_body_size,
    )
    conn = connection.conn
    try:
        while True:
            try:
                received = await connection.read_request()
            except _Refuse as refusal:
                await connection.refuse(refusal)
                break
            if received is None:
                break
            request = HTTPRequest(connection, *received)
            try:
                await app(request)
            except Exception:
                logger.exception("HTTP application failed on %r", request)
                if not request.answered:
                    await connection.refuse(_Refuse(500, "internal server error"))
                if connection.upgraded is not None:
                    await trio.aclose_forcefully(connection.upgraded)
                    return
                break
            if connection.upgraded is not None:
                with trio.move_on_after(DEFAULT_WEBSOCKET_CLOSE_TIMEOUT):
                    await connection.upgraded.aclose()
                await trio.aclose_forcefully(connection.upgraded)
                return
            if not request.answered:
                await connection.refuse(_Refuse(500, "the application did not answer"))
                break
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                break  # Connection: close, HTTP/1.0, or an unread body
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await trio.aclose_forcefully(stream)
        return
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    await _linger_and_close(stream)


async def serve_http(
    app: HTTPApp,
    port: int,
    *,
    host: str = "127.0.0.1",
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    connection_limits: ConnectionLimits | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Listen on *host*:*port* and serve every connection with *app*; runs until cancelled.

    Like ``trio.serve_tcp``: ``await nursery.start(serve_http, app, 0)`` returns
    the listeners (port 0 picks a free port). With *ssl_context* every connection
    first completes a TLS handshake (``wrap_tls_server``; failures just close the
    connection). With *connection_limits* connections are bounded before and
    after authentication (:func:`serve_connections`; *app* marks a connection
    authenticated through ``current_connection()``). Other arguments: see
    :func:`handle_http_connection`.
    """

    async def handler(stream: trio.SocketStream) -> None:
        if current_connection() is None:
            set_current_connection(ConnectionInfo(peer_name(stream)))
        transport: trio.abc.Stream = stream
        if ssl_context is not None:
            try:
                transport = await wrap_tls_server(
                    stream, ssl_context, handshake_timeout=handshake_timeout
                )
            except (trio.BrokenResourceError, HandshakeError):
                return
        await handle_http_connection(
            transport,
            app,
            handshake_timeout=handshake_timeout,
            max_header_size=max_header_size,
            max_body_size=max_body_size,
        )

    if connection_limits is None:
        await trio.serve_tcp(handler, port, host=host, task_status=task_status)
    else:
        listeners = await trio.open_tcp_listeners(port, host=host)
        await serve_connections(handler, listeners, connection_limits, task_status=task_status)
    raise AssertionError("the accept loop returned")  # pragma: no cover
