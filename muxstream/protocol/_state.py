"""Stream states, as data: the table below is the one the code runs.

Stream states ("local" = this side, "remote" = the peer)::

    state                 we may send   peer may send   on our FIN            on their FIN
    OPEN                  yes           yes             HALF_CLOSED_LOCAL     HALF_CLOSED_REMOTE
    HALF_CLOSED_LOCAL     no            yes             -                     CLOSED
    HALF_CLOSED_REMOTE    yes           no              CLOSED                -
    CLOSED / RESET        no            no              (removed from the table)

RST_STREAM in either direction moves any state to RESET. A stream opened with
FIN (or UNIDIRECTIONAL, for the side that may not send) starts half-closed
(:data:`OPENING`). A stream leaves the :class:`StreamTable` as it reaches CLOSED
or RESET; :meth:`Connection.stream_state` reports CLOSED for it from then on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ._headers import Headers


class Role(enum.Enum):
    """Which end of the connection we are: clients use odd ids, servers even."""

    CLIENT = "client"
    SERVER = "server"


class StreamState(enum.Enum):
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed (local)"
    HALF_CLOSED_REMOTE = "half-closed (remote)"
    CLOSED = "closed"
    RESET = "reset"


class Fin(enum.Enum):
    """Who sent a FIN: the event that moves a stream along the table."""

    OURS = "our FIN"
    THEIRS = "their FIN"


_S = StreamState

#: (state, FIN) -> the next state; a pair not listed leaves the state as it is.
TRANSITIONS: dict[tuple[StreamState, Fin], StreamState] = {
    (_S.OPEN, Fin.OURS): _S.HALF_CLOSED_LOCAL,
    (_S.OPEN, Fin.THEIRS): _S.HALF_CLOSED_REMOTE,
    (_S.HALF_CLOSED_LOCAL, Fin.THEIRS): _S.CLOSED,
    (_S.HALF_CLOSED_REMOTE, Fin.OURS): _S.CLOSED,
}

#: (we opened it, FIN on its SYN_STREAM, UNIDIRECTIONAL) -> its first state.
OPENING: dict[tuple[bool, bool, bool], StreamState] = {
    (True, False, False): _S.OPEN,
    (True, True, False): _S.HALF_CLOSED_LOCAL,  # we will send nothing
    (True, False, True): _S.HALF_CLOSED_REMOTE,  # the peer may send nothing
    (True, True, True): _S.CLOSED,
    (False, False, False): _S.OPEN,
    (False, True, False): _S.HALF_CLOSED_REMOTE,
    (False, False, True): _S.HALF_CLOSED_LOCAL,
    (False, True, True): _S.CLOSED,
}

# Checked on every frame: an enum attribute lookup costs ~5x a tuple constant's.
_WE_SENT_FIN = (_S.HALF_CLOSED_LOCAL, _S.CLOSED)
_THEY_SENT_FIN = (_S.HALF_CLOSED_REMOTE, _S.CLOSED)


@dataclass(slots=True)
class StreamRecord:
    """What the protocol knows of one stream."""

    stream_id: int
    local: bool  # we opened it
    state: StreamState = StreamState.OPEN
    replied: bool = False  # SYN_REPLY exchanged
    our_window: int = 0  # what the peer may still send us
    their_window: int = 0  # what we may still send the peer
    unacked: int = 0  # consumed, not yet credited back
    queued: int = 0  # ordered items (DATA, FIN, HEADERS) queued, not yet handed out
    extra_headers: Headers | None = None  # the peer's HEADERS frames so far, merged

    @property
    def we_sent_fin(self) -> bool:
        return self.state in _WE_SENT_FIN

    @property
    def they_sent_fin(self) -> bool:
        return self.state in _THEY_SENT_FIN


class StreamTable(dict[int, StreamRecord]):
    """The streams still in play, by id; it applies the state table.

    It counts our and the peer's streams as it changes, so the concurrency
    limits cost O(1) per SYN_STREAM (counting on demand made opening 10,000
    streams quadratic).
    """

    __slots__ = ("local", "remote")

    def __init__(self) -> None:
        super().__init__()
        self.local = 0
        self.remote = 0

    def fin(self, st: StreamRecord, who: Fin) -> None:
        """A FIN went out (OURS) or came in (THEIRS) on ``st``."""
        state = TRANSITIONS.get((st.state, who))
        if state is not None:
            st.state = state
            if state is _S.CLOSED:
                del self[st.stream_id]

    def reset(self, stream_id: int) -> StreamRecord | None:
        """RST_STREAM either way: the stream leaves the table (its record, or None)."""
        st: StreamRecord | None = self.pop(stream_id, None)
        if st is not None:
            st.state = _S.RESET
        return st

    def reset_all(self) -> None:
        for st in self.values():
            st.state = _S.RESET
        self.clear()

    def _count(self, st: StreamRecord, delta: int) -> None:
        if st.local:
            self.local += delta
        else:
            self.remote += delta

    def __setitem__(self, key: int, st: StreamRecord) -> None:
        old = self.get(key)
        if old is not None:
            self._count(old, -1)
        super().__setitem__(key, st)
        self._count(st, 1)

    def __delitem__(self, key: int) -> None:
        self._count(self[key], -1)
        super().__delitem__(key)

    def pop(self, key: int, *default: Any) -> Any:
        st = super().pop(key, *default)
        if isinstance(st, StreamRecord):
            self._count(st, -1)
        return st

    def clear(self) -> None:
        super().clear()
        self.local = self.remote = 0
