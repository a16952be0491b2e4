"""The exec service's limits: every one has a default that fits a 1024-descriptor process.

Descriptor budget at the defaults (the soft RLIMIT_NOFILE is raised to the hard
one at start-up; these numbers assume the common hard limit of 1024 is all
there is): 256 connections (one socket each) + 64 processes (up to 4 each:
three pipes, or a pty and its two duplicates, plus a pidfd while waited for) +
128 forwarded sockets + listeners, logs and Python's own < 1024. Unauthenticated
connections are at most 64 of the 256, so 192 stay for clients with the token
however many sockets a flood opens (and the oldest unauthenticated connection
is dropped to make room for a new one).

Memory per authenticated session (see docs/security.md): the receive window
(``session_window``, 8 MiB here instead of the library's 64 MiB), the write
buffer (1 MiB), the accept backlog's headers (1 MiB), and per exec the pipes
(up to 3 MiB); port-forward sockets add their kernel buffers.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from .._auth import (
    DEFAULT_THROTTLE_BURST,
    DEFAULT_THROTTLE_MAX_DELAY,
    DEFAULT_THROTTLE_RATE,
    AuthThrottle,
)
from .._options import SessionKeywords
from ..transport import ConnectionLimits
from ._server_spawn import set_children_nofile

#: Connections served at once (any state); beyond it new ones are closed at once.
DEFAULT_MAX_CONNECTIONS = 256
#: Connections that have not authenticated yet; a new one beyond it evicts the oldest.
DEFAULT_MAX_UNAUTHENTICATED = 64
#: Seconds a connection has to authenticate (all its requests, keep-alive included).
DEFAULT_AUTH_TIMEOUT = 10.0
#: exec sessions (processes) running at once; beyond it exec is answered 429.
DEFAULT_MAX_PROCESSES = 64
#: Forwarded connections (target sockets) one port-forward session may hold.
DEFAULT_MAX_FORWARDS_PER_SESSION = 32
#: Forwarded connections the whole server may hold.
DEFAULT_MAX_FORWARDS = 128
#: Session options of the exec service: a smaller receive window than the
#: library's 64 MiB bounds what one session can pin (throughput on loopback
#: stays within a few percent: commands and tar are slower than 8 MiB windows).
SERVICE_SESSION_OPTIONS: SessionKeywords = {"session_window": 8 << 20}


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """Bounds on what clients may hold, before and after authentication.

    Attributes:
      max_connections: connections served at once.
      max_unauthenticated: of those, connections that have not authenticated;
        a new one beyond it closes the oldest (so a flood cannot lock out a
        client with the token).
      auth_timeout: seconds a connection has to authenticate; then it is closed.
      max_processes: exec sessions running at once (429 beyond).
      max_forwards_per_session, max_forwards: forwarded connections per
        port-forward session and in all (the error stream says why beyond).
      auth_failure_burst, auth_failure_rate, auth_failure_max_delay: the
        per-address throttle of failed authentications (see
        :class:`muxstream._auth.AuthThrottle`).
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_unauthenticated: int = DEFAULT_MAX_UNAUTHENTICATED
    auth_timeout: float = DEFAULT_AUTH_TIMEOUT
    max_processes: int = DEFAULT_MAX_PROCESSES
    max_forwards_per_session: int = DEFAULT_MAX_FORWARDS_PER_SESSION
    max_forwards: int = DEFAULT_MAX_FORWARDS
    auth_failure_burst: int = DEFAULT_THROTTLE_BURST
    auth_failure_rate: float = DEFAULT_THROTTLE_RATE
    auth_failure_max_delay: float = DEFAULT_THROTTLE_MAX_DELAY

    def connection_limits(self) -> ConnectionLimits:
        """The accept loop's share of these limits."""
        return ConnectionLimits(
            max_connections=self.max_connections,
            max_unauthenticated=self.max_unauthenticated,
            auth_timeout=self.auth_timeout,
        )

    def throttle(self) -> AuthThrottle:
        """A fresh throttle with these settings."""
        return AuthThrottle(
            burst=self.auth_failure_burst,
            rate=self.auth_failure_rate,
            max_delay=self.auth_failure_max_delay,
        )


class Slots:
    """How many of something are in use, against a capacity (never blocks)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0

    def acquire(self) -> bool:
        """Take a slot; False (and nothing taken) when all are in use."""
        if self.in_use >= self.capacity:
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        self.in_use -= 1


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (a server's
    connections and pipes need descriptors; the soft default is often 1024 when
    the hard one is far higher). Commands started afterwards get the old soft
    limit back (programs using select() break above 1024). Returns the new
    (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):  # e.g. hard is RLIM_INFINITY on some systems
            return soft, hard
        set_children_nofile((soft, hard))
    return hard, hard
