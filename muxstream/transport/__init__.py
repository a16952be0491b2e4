"""Transports: byte streams a session can run over.

Each helper yields a plain ``trio.abc.Stream`` (half-closeable where the
underlying connection is), independent of the session:

* TLS: :func:`open_tls_stream`, :func:`wrap_tls_server` (a :class:`TLSStream`).
* HTTP/1.1 Upgrade (h11): :func:`open_upgraded_stream`, :func:`wrap_upgrade_client`;
  server side ``HTTPRequest.accept_upgrade``.
* WebSocket (wsproto): :func:`open_websocket_stream`, :func:`wrap_websocket_client`,
  :class:`WebSocketStream`; server side ``HTTPRequest.accept_websocket``.
* One HTTP server for all of it plus plain requests: :func:`serve_http`,
  :func:`handle_http_connection`, :class:`HTTPRequest`.

See docs/transports.md.
"""

from ._errors import (
    ConnectTimeout,
    HandshakeError,
    HandshakeNoAnswer,
    HandshakeTimeout,
    TLSHandshakeTimeout,
    TransportError,
    UpgradeRefused,
    WebSocketClosedError,
    WebSocketProtocolError,
)
from ._headers import HeadersLike, HTTPHeaders, negotiate_protocol
from ._http import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_HEADER_SIZE,
    PROTOCOL_VERSION_HEADER,
    UpgradeResponse,
)
from ._prefixed import PrefixedStream, wrap_prefixed
from ._server import (
    DEFAULT_MAX_BODY_SIZE,
    HTTPApp,
    HTTPRequest,
    handle_http_connection,
    serve_http,
)
from ._tls import DEFAULT_TLS_HANDSHAKE_TIMEOUT, open_tls_stream, wrap_tls_server
from ._tls_stream import DEFAULT_TLS_RECEIVE_SIZE, TLSStream
from ._upgrade import UPGRADE_SPDY, open_upgraded_stream, wrap_upgrade_client
from ._websocket import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_WEBSOCKET_CLOSE_TIMEOUT,
    WebSocketStream,
)
from ._websocket_handshake import open_websocket_stream, wrap_websocket_client

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT",
    "DEFAULT_TLS_RECEIVE_SIZE",
    "DEFAULT_WEBSOCKET_CLOSE_TIMEOUT",
    "PROTOCOL_VERSION_HEADER",
    "UPGRADE_SPDY",
    "ConnectTimeout",
    "HTTPApp",
    "HTTPHeaders",
    "HTTPRequest",
    "HandshakeError",
    "HandshakeNoAnswer",
    "HandshakeTimeout",
    "HeadersLike",
    "PrefixedStream",
    "TLSHandshakeTimeout",
    "TLSStream",
    "TransportError",
    "UpgradeRefused",
    "UpgradeResponse",
    "WebSocketClosedError",
    "WebSocketProtocolError",
    "WebSocketStream",
    "handle_http_connection",
    "negotiate_protocol",
    "open_tls_stream",
    "open_upgraded_stream",
    "open_websocket_stream",
    "serve_http",
    "wrap_prefixed",
    "wrap_tls_server",
    "wrap_upgrade_client",
    "wrap_websocket_client",
]
