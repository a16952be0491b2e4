"""What a server knows about the connection a task is serving, and an accept
loop that bounds connections before and after authentication.

The accept loop (:func:`serve_http`, ``muxstream serve``) records one
:class:`ConnectionInfo` per accepted connection in a context variable; the
handler task and every task it starts see the same object through
:func:`current_connection`. The application uses it to name the peer in its
logs and to say when the connection has authenticated (:meth:`ConnectionInfo.
mark_authenticated`), which lifts the limits that apply to connections that
have not.
"""

from __future__ import annotations

import errno
import itertools
import logging
import math
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import NoReturn

import trio

from .. import _redact

__all__ = [
    "ConnectionInfo",
    "ConnectionLimits",
    "current_connection",
    "current_peer",
    "peer_name",
    "serve_connections",
    "set_current_connection",
]

logger = logging.getLogger("muxstream.transport")
_redact.install()  # (idempotent) what this package logs never carries a credential


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


# --- an accept loop that bounds connections ----------------------------------------------

#: accept() errors that mean "out of resources", not "broken listener" (trio's list).
_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: Seconds to wait after such an error when nothing could be freed (trio waits 0.1).
_CAPACITY_RETRY = 0.1


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds :func:`serve_connections` enforces.

    Attributes:
        max_connections: connections served at once; at the limit a new one
            replaces the oldest unauthenticated connection, or is closed at once
            if every connection has authenticated.
        max_unauthenticated: connections not yet authenticated; a new one beyond
            it closes the oldest of them. So a flood of idle sockets cannot keep
            out a client that authenticates at once: it always gets a slot.
        auth_timeout: seconds a connection has to authenticate (None: forever).
    """

    max_connections: int
    max_unauthenticated: int
    auth_timeout: float | None


class _Tracked:
    __slots__ = ("info", "key", "scope")

    def __init__(self, key: int, info: ConnectionInfo, scope: trio.CancelScope) -> None:
        self.key = key
        self.info = info
        self.scope = scope


class ConnectionTracker:
    """The live connections of one server and the limits on them (see
    :class:`ConnectionLimits`); shared by its accept loops."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.connections = 0
        # Unauthenticated connections, oldest first (dicts keep insertion order).
        self._unauthenticated: dict[int, _Tracked] = {}
        self._ids = itertools.count()

    @property
    def unauthenticated(self) -> int:
        return len(self._unauthenticated)

    def evict_oldest_unauthenticated(self) -> bool:
        """Close the oldest unauthenticated connection; False if there is none."""
        if not self._unauthenticated:
            return False
        key = next(iter(self._unauthenticated))
        tracked = self._unauthenticated.pop(key)
        logger.info("closing unauthenticated connection from %s (limit)", tracked.info.peer)
        tracked.scope.cancel()
        return True

    def admit(self, stream: trio.SocketStream) -> _Tracked | None:
        """Count a new connection in, making room if needed; None if it must be
        refused (every slot is held by an authenticated connection)."""
        if self.connections >= self.limits.max_connections:
            if not self.evict_oldest_unauthenticated():
                return None
        if len(self._unauthenticated) >= self.limits.max_unauthenticated:
            self.evict_oldest_unauthenticated()
        key = next(self._ids)
        scope = trio.CancelScope()
        if self.limits.auth_timeout is not None:
            scope.deadline = trio.current_time() + self.limits.auth_timeout

        def authenticated() -> None:
            self._unauthenticated.pop(key, None)
            scope.deadline = math.inf

        info = ConnectionInfo(peer_name(stream), _on_authenticated=authenticated)
        tracked = _Tracked(key, info, scope)
        self._unauthenticated[key] = tracked
        self.connections += 1
        return tracked

    async def run(
        self,
        tracked: _Tracked,
        handler: Callable[[trio.SocketStream], Awaitable[object]],
        stream: trio.SocketStream,
    ) -> None:
        """Serve one admitted connection with ``handler``; the stream is closed
        when it returns, fails or is evicted."""
        try:
            with tracked.scope:
                set_current_connection(tracked.info)
                await handler(stream)
            if tracked.scope.cancelled_caught and not tracked.info.authenticated:
                logger.info("closed connection from %s: not authenticated", tracked.info.peer)
        finally:
            self.connections -= 1
            self._unauthenticated.pop(tracked.key, None)
            await trio.aclose_forcefully(stream)


async def serve_connections(
    handler: Callable[[trio.SocketStream], Awaitable[object]],
    listeners: list[trio.SocketListener],
    limits: ConnectionLimits,
    *,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Accept on every listener and serve each connection with ``handler`` under
    ``limits``; runs until cancelled, like ``trio.serve_listeners``.

    Handlers see their :class:`ConnectionInfo` through :func:`current_connection`
    and must call its :meth:`~ConnectionInfo.mark_authenticated` once the client
    has proved who it is; until then the connection counts against
    ``max_unauthenticated`` and ``auth_timeout``. Out of descriptors (EMFILE and
    friends) the loop closes the oldest unauthenticated connection and goes on
    at once, instead of waiting for connections to time out.
    """
    tracker = ConnectionTracker(limits)
    async with trio.open_nursery() as nursery:
        handlers = handler_nursery if handler_nursery is not None else nursery
        for listener in listeners:
            nursery.start_soon(_accept_loop, listener, tracker, handler, handlers)
        task_status.started(listeners)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


async def _accept_loop(
    listener: trio.SocketListener,
    tracker: ConnectionTracker,
    handler: Callable[[trio.SocketStream], Awaitable[object]],
    handlers: trio.Nursery,
) -> None:
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _CAPACITY_ERRNOS:
                    raise
                freed = tracker.evict_oldest_unauthenticated()
                logger.warning(
                    "accept: %s with %d connections open; %s",
                    errno.errorcode.get(exc.errno or 0, exc), tracker.connections,
                    "closed the oldest unauthenticated one" if freed else "retrying",
                )
                # An evicted connection's descriptor is free once its task has run.
                await trio.sleep(0 if freed else _CAPACITY_RETRY)
                continue
            tracked = tracker.admit(stream)
            if tracked is None:
                logger.warning(
                    "refused a connection from %s: %d connections (the limit) are open",
                    peer_name(stream), tracker.connections,
                )
                await trio.aclose_forcefully(stream)
                continue
            handlers.start_soon(tracker.run, tracked, handler, stream)
