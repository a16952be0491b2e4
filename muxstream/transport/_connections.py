"""What a server knows about the connection a task is serving.

The accept loop (:func:`serve_http`, ``muxstream serve``) records one
:class:`ConnectionInfo` per accepted connection in a context variable; the
handler task and every task it starts see the same object through
:func:`current_connection`. The application uses it to name the peer in its
logs and to say when the connection has authenticated (:meth:`ConnectionInfo.
mark_authenticated`), which lifts the limits that apply to connections that
have not.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

import trio

__all__ = ["ConnectionInfo", "current_connection", "peer_name"]


@dataclass
class ConnectionInfo:
    """One accepted connection, as its handlers see it.

    Attributes:
        peer: the client's address as ``host:port`` (``?`` if unknown).
        authenticated: whether the application has said the client proved who
            it is (see :meth:`mark_authenticated`).
    """

    peer: str = "?"
    authenticated: bool = False
    _on_authenticated: Callable[[], None] | None = field(default=None, repr=False)

    def mark_authenticated(self) -> None:
        """Record that the client authenticated: idempotent, never blocks."""
        if not self.authenticated:
            self.authenticated = True
            if self._on_authenticated is not None:
                self._on_authenticated()


_current: ContextVar[ConnectionInfo | None] = ContextVar("muxstream_connection", default=None)


def current_connection() -> ConnectionInfo | None:
    """The connection the calling task serves, or None outside a server's handler."""
    return _current.get()


def set_current_connection(info: ConnectionInfo) -> None:
    """Make ``info`` the calling task's connection (and its future children's)."""
    _current.set(info)


def current_peer() -> str:
    """The current connection's peer address, or ``?``."""
    info = _current.get()
    return info.peer if info is not None else "?"


def peer_name(stream: object) -> str:
    """``host:port`` of the socket under ``stream`` (through TLS and wrappers), or ``?``."""
    for _ in range(8):  # wrappers nest a few levels at most
        if isinstance(stream, trio.SocketStream):
            try:
                address = stream.socket.getpeername()
            except OSError:
                return "?"
            if isinstance(address, tuple) and len(address) >= 2:
                host, port = address[0], address[1]
                return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
            return str(address) or "?"
        stream = getattr(stream, "transport_stream", None)
        if stream is None:
            break
    return "?"
