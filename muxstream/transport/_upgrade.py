"""HTTP/1.1 Upgrade, client side (the server side is :class:`HTTPRequest`).

The Kubernetes way: the client asks ``Connection: Upgrade``, ``Upgrade:
SPDY/3.1`` and offers protocol versions as repeated ``X-Stream-Protocol-Version``
headers; the server answers ``101 Switching Protocols`` echoing the chosen
version, and from the byte after the ``101``'s blank line on, the connection
carries SPDY frames.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import h11
import trio

from ._errors import HandshakeError
from ._headers import HeadersLike
from ._http import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_HEADER_SIZE,
    PROTOCOL_VERSION_HEADER,
    UpgradeResponse,
    client_handshake,
    host_header,
    request_headers,
)
from ._prefixed import wrap_prefixed
from ._tls import open_tcp_or_tls_stream

__all__ = ["UPGRADE_SPDY", "open_upgraded_stream", "wrap_upgrade_client"]

UPGRADE_SPDY = "SPDY/3.1"  # the Upgrade token Kubernetes and spdystream use


async def wrap_upgrade_client(
    stream: trio.abc.Stream,
    target: str,
    *,
    host: str,
    method: str = "GET",
    upgrade: str = UPGRADE_SPDY,
    protocols: Sequence[str] = (),
    headers: HeadersLike = (),
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
) -> tuple[trio.abc.Stream, UpgradeResponse]:
    """Upgrade the HTTP/1.1 connection *stream* to protocol *upgrade*.

    Args:
        stream: a fresh connection to an HTTP/1.1 server (TCP or TLS).
        target: the request target, e.g. ``"/api/v1/namespaces/default/pods/p/exec?..."``.
        host: the ``Host`` header value (see :func:`host_header`); a ``Host``
            in *headers* overrides it.
        method: ``"GET"`` or, as kubectl does for exec/attach/port-forward, ``"POST"``.
        upgrade: the ``Upgrade`` token to ask for.
        protocols: versions to offer, most preferred first, one
            ``X-Stream-Protocol-Version`` header line each.
        headers: extra request headers (``Authorization``...); may not repeat
            ``Connection``, ``Upgrade`` or ``X-Stream-Protocol-Version``.
        handshake_timeout: bound on the whole exchange, in seconds.
        max_header_size: largest response head accepted, in bytes.

    Returns:
        ``(upgraded_stream, response)``. *upgraded_stream* first replays any
        bytes that arrived with the ``101`` and is half-closeable when *stream*
        is; ``response.protocol`` is the version the server chose (None if it
        named none).

    Raises:
        UpgradeRefused: the server answered with a regular response.
        HandshakeTimeout: no answer within *handshake_timeout*.
        HandshakeError: a malformed answer, a ``101`` without
            ``Connection: upgrade`` and our ``Upgrade`` token, or a protocol
            version we did not offer.
        On any error or cancellation *stream* is closed.
    """
    required = [("connection", "Upgrade"), ("upgrade", upgrade)]
    required += [(PROTOCOL_VERSION_HEADER, p) for p in protocols]
    if method.upper() not in ("GET", "HEAD"):
        required.append(("content-length", "0"))  # Go's client sends it for an empty POST
    request = h11.Request(
        method=method, target=target, headers=request_headers(host, required, headers)
    )
    try:
        response, trailing = await client_handshake(
            stream, request, timeout=handshake_timeout, max_header_size=max_header_size
        )
        _check_upgrade_response(response, upgrade, protocols)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return wrap_prefixed(stream, trailing), response


def _check_upgrade_response(
    response: UpgradeResponse, upgrade: str, protocols: Sequence[str]
) -> None:
    if not response.headers.has_token("connection", "upgrade"):
        raise HandshakeError("101 response without 'Connection: Upgrade'")
    if not response.headers.has_token("upgrade", upgrade):
        got = response.headers.get("upgrade")
        raise HandshakeError(f"101 response upgrades to {got!r}, not {upgrade!r}")
    chosen = response.protocol
    if chosen is not None and protocols and chosen not in protocols:
        raise HandshakeError(
            f"server chose protocol version {chosen!r}, which we did not offer "
            f"({', '.join(protocols)})"
        )


async def open_upgraded_stream(
    host: str,
    port: int,
    target: str,
    *,
    method: str = "GET",
    upgrade: str = UPGRADE_SPDY,
    protocols: Sequence[str] = (),
    headers: HeadersLike = (),
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
) -> tuple[trio.abc.Stream, UpgradeResponse]:
    """Connect (TCP, or TLS when *ssl_context* is given) and upgrade.

    See :func:`wrap_upgrade_client` for the arguments, result and errors;
    connection errors raise ``OSError`` (TCP) or ``trio.BrokenResourceError``
    (TLS handshake). The connection is closed on any error.
    """
    stream = await open_tcp_or_tls_stream(
        host, port, ssl_context=ssl_context, server_hostname=server_hostname,
        handshake_timeout=handshake_timeout,
    )
    return await wrap_upgrade_client(
        stream,
        target,
        host=host_header(host, port, ssl_context is not None),
        method=method,
        upgrade=upgrade,
        protocols=protocols,
        headers=headers,
        handshake_timeout=handshake_timeout,
        max_header_size=max_header_size,
    )
