"""The WebSocket opening handshake (RFC 6455 section 4) with h11.

The client side is complete here; the server side is split between the request
checks below and ``HTTPRequest.accept_websocket`` (the HTTP server owns the
connection, so plain HTTP, Upgrade and WebSocket share one port).
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
from collections.abc import Sequence

import h11
import trio

from ._errors import HandshakeError
from ._headers import HeadersLike, HTTPHeaders
from ._http import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_HEADER_SIZE,
    client_handshake,
    host_header,
    request_headers,
)
from ._tls import open_tcp_or_tls_stream
from ._websocket import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_WEBSOCKET_CLOSE_TIMEOUT,
    WebSocketStream,
)

__all__ = [
    "accept_token",
    "open_websocket_stream",
    "websocket_request_problem",
    "wrap_websocket_client",
]

_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


def accept_token(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value answering ``Sec-WebSocket-Key`` *key*."""
    digest = hashlib.sha1(key.strip().encode("ascii") + _ACCEPT_GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def websocket_request_problem(method: str, http_version: str, headers: HTTPHeaders) -> str | None:
    """Why this request is not a valid WebSocket opening handshake, or None.

    Checks RFC 6455 section 4.2.1: GET, HTTP/1.1 or later, ``Upgrade: websocket``,
    ``Connection: Upgrade``, ``Sec-WebSocket-Version: 13`` and a
    ``Sec-WebSocket-Key`` that decodes to 16 bytes.
    """
    if method != "GET":
        return f"WebSocket handshake must use GET, not {method}"
    if http_version not in ("1.1",):
        return f"WebSocket handshake needs HTTP/1.1, not HTTP/{http_version}"
    if not headers.has_token("upgrade", "websocket"):
        return "missing 'Upgrade: websocket'"
    if not headers.has_token("connection", "upgrade"):
        return "missing 'Connection: Upgrade'"
    if (headers.get("sec-websocket-version") or "").strip() != "13":
        return "unsupported Sec-WebSocket-Version (need 13)"
    key = headers.get("sec-websocket-key")
    if key is None:
        return "missing Sec-WebSocket-Key"
    try:
        if len(base64.b64decode(key.strip(), validate=True)) != 16:
            return "Sec-WebSocket-Key must encode 16 bytes"
    except ValueError:
        return "Sec-WebSocket-Key is not base64"
    return None


async def wrap_websocket_client(
    stream: trio.abc.Stream,
    target: str,
    *,
    host: str,
    subprotocols: Sequence[str] = (),
    headers: HeadersLike = (),
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    close_timeout: float = DEFAULT_WEBSOCKET_CLOSE_TIMEOUT,
) -> WebSocketStream:
    """Run the client opening handshake over *stream* and return the WebSocket.

    Args:
        stream: a fresh connection to an HTTP/1.1 server (TCP or TLS).
        target: the request target, e.g. ``"/api/v1/.../exec?command=sh"``.
        host: the ``Host`` header value; a ``Host`` in *headers* overrides it.
        subprotocols: offered in ``Sec-WebSocket-Protocol``, most preferred
            first. When non-empty the server must pick one of them.
        headers: extra request headers (``Authorization``...).
        handshake_timeout, max_header_size: bounds on the handshake.
        max_message_size, close_timeout: passed to :class:`WebSocketStream`.

    Returns:
        The :class:`WebSocketStream`; ``.subprotocol`` is the server's choice.
        Bytes the server sent right after its ``101`` are parsed as frames.

    Raises:
        UpgradeRefused: the server answered with a regular response.
        HandshakeTimeout: no answer within *handshake_timeout*.
        HandshakeError: a malformed answer, a wrong ``Sec-WebSocket-Accept``,
            missing ``Upgrade``/``Connection`` headers, or a subprotocol we did
            not offer (or none when we offered some).
        On any error or cancellation *stream* is closed.
    """
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    required = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", key),
        ("sec-websocket-version", "13"),
    ]
    if subprotocols:
        required.append(("sec-websocket-protocol", ", ".join(subprotocols)))
    request = h11.Request(
        method="GET", target=target, headers=request_headers(host, required, headers)
    )
    try:
        response, trailing = await client_handshake(
            stream, request, timeout=handshake_timeout, max_header_size=max_header_size
        )
        if not response.headers.has_token("upgrade", "websocket"):
            raise HandshakeError("101 response without 'Upgrade: websocket'")
        if not response.headers.has_token("connection", "upgrade"):
            raise HandshakeError("101 response without 'Connection: Upgrade'")
        if (response.headers.get("sec-websocket-accept") or "").strip() != accept_token(key):
            raise HandshakeError("wrong or missing Sec-WebSocket-Accept")
        chosen = response.subprotocol
        if chosen is not None and chosen not in subprotocols:
            raise HandshakeError(f"server chose subprotocol {chosen!r}, which we did not offer")
        if chosen is None and subprotocols:
            raise HandshakeError(
                f"server chose none of the offered subprotocols ({', '.join(subprotocols)})"
            )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return WebSocketStream(
        stream,
        client=True,
        trailing_data=trailing,
        subprotocol=chosen,
        max_message_size=max_message_size,
        close_timeout=close_timeout,
    )


async def open_websocket_stream(
    host: str,
    port: int,
    target: str,
    *,
    subprotocols: Sequence[str] = (),
    headers: HeadersLike = (),
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    close_timeout: float = DEFAULT_WEBSOCKET_CLOSE_TIMEOUT,
) -> WebSocketStream:
    """Connect (TCP, or TLS when *ssl_context* is given) and open a WebSocket.

    See :func:`wrap_websocket_client` for arguments, result and errors;
    connection errors raise ``OSError`` (TCP) or ``trio.BrokenResourceError``
    (TLS handshake). The connection is closed on any error.
    """
    stream = await open_tcp_or_tls_stream(
        host, port, ssl_context=ssl_context, server_hostname=server_hostname,
        handshake_timeout=handshake_timeout,
    )
    return await wrap_websocket_client(
        stream,
        target,
        host=host_header(host, port, ssl_context is not None),
        subprotocols=subprotocols,
        headers=headers,
        handshake_timeout=handshake_timeout,
        max_header_size=max_header_size,
        max_message_size=max_message_size,
        close_timeout=close_timeout,
    )
