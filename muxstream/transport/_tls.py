"""Thin TLS helpers over :class:`TLSStream` (``ssl.MemoryBIO``, decrypting in bulk).

Both helpers finish the TLS handshake before returning, so certificate and
protocol errors surface at connect/accept time instead of on the first read.
:class:`TLSStream` behaves as ``trio.SSLStream`` does (see its module), but
hands a reader every complete record at once instead of one per call.

Closing over TLS: a TLS stream is not half-closeable (no ``send_eof``), so
the session's close path cannot send a TCP FIN and keep reading. What it does
instead: it keeps reading until the peer's EOF (the peer's ``close_notify``) or
its close timeout, then ``aclose()`` sends our ``close_notify`` and closes the
socket. With ``https_compatible=False`` (the default here) an EOF without
``close_notify`` is reported as ``trio.BrokenResourceError`` -- a truncation is
never mistaken for a clean end.
"""

from __future__ import annotations

import logging
import math
import ssl

import trio

from ._errors import ConnectTimeout, TLSHandshakeTimeout
from ._tls_stream import TLSStream

__all__ = [
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT",
    "open_tcp_or_tls_stream",
    "open_tls_stream",
    "wrap_tls_server",
]

DEFAULT_TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds; same bound as the HTTP handshake

#: The client's connection phases (TCP, TLS, HTTP upgrade) are told here, at DEBUG.
logger = logging.getLogger("muxstream.connect")


async def open_tls_stream(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    *,
    server_hostname: str | None = None,
    https_compatible: bool = False,
    handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
) -> TLSStream:
    """Connect over TCP and complete a TLS client handshake.

    Args:
        host, port: where to connect (``trio.open_tcp_stream``).
        ssl_context: defaults to ``ssl.create_default_context()`` (verifies the
            server certificate against the system CAs).
        server_hostname: name to verify and send as SNI; defaults to *host*.
        https_compatible: as ``trio.SSLStream``'s (see :class:`TLSStream`).
        handshake_timeout: bound on the TLS handshake, in seconds.

    Returns:
        The handshaken :class:`TLSStream`; the caller owns it.

    Raises:
        OSError: the TCP connection failed.
        trio.BrokenResourceError: the TLS handshake failed (chained to the
            ``ssl.SSLError``, e.g. ``ssl.SSLCertVerificationError``).
        TLSHandshakeTimeout: no handshake within *handshake_timeout* (a
            :class:`HandshakeTimeout`).
        On any error or cancellation the socket is closed.
    """
    tcp = await _open_tcp(host, port, math.inf)
    return await _tls_client(
        tcp,
        ssl_context if ssl_context is not None else ssl.create_default_context(),
        server_hostname if server_hostname is not None else host,
        https_compatible,
        handshake_timeout,
    )


async def open_tcp_or_tls_stream(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    https_compatible: bool = False,
    handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    connect_timeout: float = math.inf,
) -> trio.abc.Stream:
    """Connect over TCP, and over TLS on top of it when *ssl_context* is given.

    The client side shared by the connecting helpers (upgrade, WebSocket,
    ``open_tcp_session``, the CLI client, ``remote.RemoteEndpoint``): plain
    ``trio.open_tcp_stream`` without a context, :func:`open_tls_stream` with one
    (TLS is opt-in here, unlike there). Each phase is logged at DEBUG level on
    the ``muxstream.connect`` logger (address, TLS version and cipher).

    Args:
        host, port: where to connect.
        ssl_context: None for plain TCP.
        server_hostname: name to verify and send as SNI; defaults to *host*.
            Ignored without *ssl_context*.
        https_compatible: as ``trio.SSLStream``'s (True where the peer may
            close without ``close_notify``, as HTTPS servers do). Ignored without
            *ssl_context*.
        handshake_timeout: bound on the TLS handshake, in seconds.
            ``math.inf`` leaves the bound to an enclosing cancel scope, which
            then cancels the handshake and still closes the socket.
        connect_timeout: bound on the TCP connect (name resolution included),
            in seconds; by default only the OS bounds it, as it does
            ``trio.open_tcp_stream``.

    Returns:
        A ``trio.SocketStream`` (half-closeable) or a handshaken
        :class:`TLSStream`; the caller owns it.

    Raises:
        OSError: the TCP connection failed (``socket.gaierror``: the name did
            not resolve).
        ConnectTimeout: no TCP connection within *connect_timeout*.
        trio.BrokenResourceError: the TLS handshake failed.
        TLSHandshakeTimeout: no TLS handshake within *handshake_timeout*.
        On any error or cancellation the socket is closed.
    """
    tcp = await _open_tcp(host, port, connect_timeout)
    if ssl_context is None:
        return tcp
    return await _tls_client(
        tcp,
        ssl_context,
        server_hostname if server_hostname is not None else host,
        https_compatible,
        handshake_timeout,
    )


async def _open_tcp(host: str, port: int, timeout: float) -> trio.SocketStream:
    logger.debug("connecting to %s:%s (TCP)", host, port)
    start = trio.current_time()
    with trio.move_on_after(timeout) as scope:
        tcp = await trio.open_tcp_stream(host, port)
    if scope.cancelled_caught:
        raise ConnectTimeout(f"TCP connect to {host}:{port} not completed within {timeout} s")
    if logger.isEnabledFor(logging.DEBUG):
        peer = tcp.socket.getpeername()
        logger.debug("connected to %s port %s in %.1f ms", peer[0], peer[1],
                     (trio.current_time() - start) * 1000)
    return tcp


async def _tls_client(
    tcp: trio.SocketStream,
    context: ssl.SSLContext,
    server_hostname: str,
    https_compatible: bool,
    timeout: float,
) -> TLSStream:
    try:
        tls = TLSStream(
            tcp, context, server_hostname=server_hostname, https_compatible=https_compatible
        )
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    start = trio.current_time()
    await _handshake(tls, timeout)
    if logger.isEnabledFor(logging.DEBUG):
        cipher = tls.cipher()
        logger.debug("TLS handshake done in %.1f ms: %s, %s, certificate verified for %s",
                     (trio.current_time() - start) * 1000, tls.version(),
                     cipher[0] if cipher else "?", server_hostname)
    return tls


async def wrap_tls_server(
    stream: trio.abc.Stream,
    ssl_context: ssl.SSLContext,
    *,
    https_compatible: bool = False,
    handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
) -> TLSStream:
    """Run the server side of a TLS handshake over an accepted *stream*.

    Args:
        stream: the accepted transport (usually a ``trio.SocketStream``).
        ssl_context: a server context, e.g.
            ``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)`` with a
            certificate chain loaded.
        https_compatible: as ``trio.SSLStream``'s (see :class:`TLSStream`).
        handshake_timeout: bound on the handshake, in seconds.

    Returns:
        The handshaken :class:`TLSStream` wrapping *stream*.

    Raises:
        trio.BrokenResourceError: the handshake failed (chained to the
            ``ssl.SSLError``).
        TLSHandshakeTimeout: the client did not finish within *handshake_timeout*.
        On any error or cancellation *stream* is closed.
    """
    try:
        tls = TLSStream(stream, ssl_context, server_side=True, https_compatible=https_compatible)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    await _handshake(tls, handshake_timeout)
    return tls


async def _handshake(tls: TLSStream, timeout: float) -> None:
    try:
        with trio.move_on_after(timeout) as scope:
            await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tls.transport_stream)
        raise
    if scope.cancelled_caught:
        await trio.aclose_forcefully(tls.transport_stream)
        raise TLSHandshakeTimeout(f"TLS handshake not completed within {timeout} s")
