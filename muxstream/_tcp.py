"""TCP (and TLS) helpers: a session over a socket in one call."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Unpack

import trio

from ._options import SessionKeywords, SessionOptions
from ._session import CLIENT, SERVER, Session, open_session

logger = logging.getLogger("muxstream")

SessionHandler = Callable[[Session], Awaitable[object]]


@asynccontextmanager
async def open_tcp_session(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    handshake_timeout: float | None = None,
    options: SessionOptions | None = None,
    **keywords: Unpack[SessionKeywords],
) -> AsyncIterator[Session]:
    """Connect to ``host:port`` (TLS if ``ssl_context``) and run a client session.

    ``options`` and ``keywords`` are those of :func:`open_session`. A TLS
    handshake not done within ``handshake_timeout`` (default
    ``muxstream.transport.DEFAULT_TLS_HANDSHAKE_TIMEOUT``) raises
    ``trio.TooSlowError``; on any connect error the socket is closed.
    """
    # Imported here: the transport package loads h11 and wsproto, which a plain
    # ``import muxstream`` does not need.
    from .transport import (
        DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        HandshakeTimeout,
        open_tcp_or_tls_stream,
    )

    if handshake_timeout is None:
        handshake_timeout = DEFAULT_TLS_HANDSHAKE_TIMEOUT
    try:
        transport = await open_tcp_or_tls_stream(host, port, ssl_context=ssl_context,
                                                 server_hostname=server_hostname or host,
                                                 handshake_timeout=handshake_timeout)
    except HandshakeTimeout as exc:
        raise trio.TooSlowError(str(exc)) from exc  # what this function has always raised
    async with open_session(transport, role=CLIENT, options=options, **keywords) as session:
        yield session


async def serve_tcp(
    handler: SessionHandler,
    port: int,
    *,
    host: str = "127.0.0.1",
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    options: SessionOptions | None = None,
    **keywords: Unpack[SessionKeywords],
) -> None:
    """Accept TCP connections on ``host:port`` and run ``await handler(session)`` for each.

    Like ``trio.serve_tcp``: runs until cancelled, and ``task_status.started`` gets
    the listeners (``port=0`` picks a free port). Binds loopback unless told
    otherwise. When the handler returns, its session closes gracefully. An
    exception in one handler is logged and closes only that connection. A TLS
    handshake not done within ``handshake_timeout`` (default
    ``muxstream.transport.DEFAULT_TLS_HANDSHAKE_TIMEOUT``) drops the connection.
    ``options`` and ``keywords`` are those of :func:`open_session`.
    """
    settings = SessionOptions.resolve(options, keywords)  # a misspelt option fails now

    async def on_connection(tcp: trio.SocketStream) -> None:
        transport: trio.abc.Stream = tcp
        try:
            if ssl_context is not None:
                # deferred, as above; TLSStream: one pass per 256 KiB, not per record
                from .transport import DEFAULT_TLS_HANDSHAKE_TIMEOUT, wrap_tls_server

                transport = await wrap_tls_server(
                    tcp, ssl_context, handshake_timeout=DEFAULT_TLS_HANDSHAKE_TIMEOUT
                    if handshake_timeout is None else handshake_timeout)
            async with open_session(transport, role=SERVER, options=settings) as session:
                await handler(session)
        except Exception as exc:
            logger.warning("connection handler failed: %r", exc, exc_info=exc)
            await trio.aclose_forcefully(transport)

    await trio.serve_tcp(
        on_connection, port, host=host, handler_nursery=handler_nursery, task_status=task_status
    )
