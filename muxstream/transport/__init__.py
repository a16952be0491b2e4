"""Transports: byte streams a session can run over.

Each helper yields a plain ``trio.abc.Stream`` (half-closeable where the
underlying connection is), independent of the session:

* TCP or TLS, as the client helpers connect: :func:`open_tcp_or_tls_stream`.
* TLS: :func:`open_tls_stream`, :func:`wrap_tls_server` (a :class:`TLSStream`); a
  client session over a transport that cannot half-close: :func:`wrap_close_as_eof`.
* HTTP/1.1 Upgrade (h11): :func:`open_upgraded_stream`, :func:`wrap_upgrade_client`;
  server side ``HTTPRequest.accept_upgrade``.
* WebSocket (wsproto): :func:`open_websocket_stream`, :func:`wrap_websocket_client`,
  :class:`WebSocketStream`; server side ``HTTPRequest.accept_websocket``.
* One HTTP server for all of it plus plain requests: :func:`serve_http`,
  :func:`handle_http_connection`, :class:`HTTPRequest`.
* Servers: an accept loop that bounds connections before and after
  authentication, :func:`serve_connections` (:class:`ConnectionLimits`); what a
  handler knows of its connection, :func:`current_connection`
  (:class:`ConnectionInfo`) and :func:`current_peer`.

See docs/transports.md.
"""

from ._close_as_eof import wrap_close_as_eof
from ._connections import (
    ConnectionInfo,
    ConnectionLimits,
    current_connection,
    current_peer,
    serve_connections,
)
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
    host_header,
)
from ._prefixed import PrefixedStream, wrap_prefixed
from ._server import (
    DEFAULT_MAX_BODY_SIZE,
    HTTPApp,
    HTTPRequest,
    handle_http_connection,
    serve_http,
)
from ._tls import (
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    open_tcp_or_tls_stream,
    open_tls_stream,
    wrap_tls_server,
)
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
    "ConnectionInfo",
    "ConnectionLimits",
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
    "current_connection",
    "current_peer",
    "handle_http_connection",
    "host_header",
    "negotiate_protocol",
    "open_tcp_or_tls_stream",
    "open_tls_stream",
    "open_upgraded_stream",
    "open_websocket_stream",
    "serve_connections",
    "serve_http",
    "wrap_close_as_eof",
    "wrap_prefixed",
    "wrap_tls_server",
    "wrap_upgrade_client",
    "wrap_websocket_client",
]
