"""Typed errors raised by the transports.

Who is at fault decides the class:

* :class:`HandshakeError` and its subclasses: the HTTP handshake (Upgrade or
  WebSocket opening handshake) did not produce a usable stream.
  :class:`UpgradeRefused` is the peer's considered "no" (a real HTTP status);
  :class:`HandshakeTimeout` is silence (:class:`TLSHandshakeTimeout` in the TLS
  handshake); :class:`HandshakeNoAnswer` is a connection ended before any HTTP
  answer, or answered in TLS; plain :class:`HandshakeError` is a malformed or
  unacceptable answer.
* :class:`ConnectTimeout`: the TCP connect itself did not complete in time.
* :class:`WebSocketProtocolError`: the peer broke RFC 6455 (or our limits) after
  the handshake; ``code`` is the close code we sent back.
* :class:`WebSocketClosedError`: the peer ended the WebSocket abnormally (a close
  code other than 1000/1001/1005, or TCP EOF without a close frame).

Stream methods speak trio's vocabulary: they raise ``trio.BrokenResourceError``
chained (``from``) to one of the two WebSocket errors above.
"""

from __future__ import annotations

import trio

from .._errors import MuxstreamError
from ._headers import HTTPHeaders

__all__ = [
    "ConnectTimeout",
    "HandshakeError",
    "HandshakeNoAnswer",
    "HandshakeTimeout",
    "TLSHandshakeTimeout",
    "TransportError",
    "UpgradeRefused",
    "WebSocketClosedError",
    "WebSocketProtocolError",
]


class TransportError(MuxstreamError):
    """Base class of the errors raised by :mod:`muxstream.transport`."""


class HandshakeError(TransportError):
    """The HTTP/1.1 Upgrade or WebSocket opening handshake failed.

    Raised as is for a malformed or unacceptable answer (no ``101``, a ``101``
    without the right ``Upgrade``/``Connection`` headers, a wrong
    ``Sec-WebSocket-Accept``, a subprotocol or protocol version we did not offer,
    the connection closed mid-handshake).
    """


class HandshakeTimeout(HandshakeError, trio.TooSlowError):
    """The peer did not complete the handshake within the handshake timeout (a
    ``trio.TooSlowError`` too, as every muxstream timeout is)."""


class TLSHandshakeTimeout(HandshakeTimeout):
    """The TLS handshake did not complete within the handshake timeout (a peer that
    does not speak TLS often just waits)."""


class HandshakeNoAnswer(HandshakeError):
    """The server ended the connection before any HTTP answer, or answered in TLS.

    Attributes:
        tls: True if its first bytes were a TLS record: the server expects a TLS
            client. A server that expects TLS and reads plain text may also just
            close, so a plain-text client should suspect TLS either way.
    """

    def __init__(self, message: str, *, tls: bool = False) -> None:
        super().__init__(message)
        self.tls = tls


class ConnectTimeout(TransportError, trio.TooSlowError):
    """The TCP connection was not established within the connect timeout."""


class UpgradeRefused(HandshakeError):
    """The server answered the upgrade request with a regular HTTP response.

    Attributes:
        status: the HTTP status code (e.g. 403).
        reason: the reason phrase, possibly empty.
        headers: the response headers.
        body: the response body (truncated at the client's body limit).
    """

    def __init__(self, status: int, reason: str, headers: HTTPHeaders, body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        text = body[:200].decode("utf-8", "replace").strip()
        detail = f": {text}" if text else ""
        super().__init__(f"upgrade refused with HTTP {status} {reason}".rstrip() + detail)


class WebSocketProtocolError(TransportError):
    """The WebSocket peer broke the protocol or one of our limits.

    Attributes:
        code: the close code we sent (or tried to send) to the peer:
            1002 protocol error, 1003 unsupported data (a text message),
            1007 invalid payload, 1009 message too big.
        reason: a human-readable description.
    """

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"WebSocket protocol error ({code}): {reason}")


class WebSocketClosedError(TransportError):
    """The WebSocket peer closed abnormally.

    Attributes:
        code: the close code the peer sent, or 1006 when the connection ended
            without a close frame.
        reason: the close reason the peer sent (may be empty).
    """

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        detail = f": {reason}" if reason else ""
        super().__init__(f"WebSocket closed by peer with code {code}{detail}")
