"""Errors of the trio layer.

User calls speak trio's vocabulary: ``trio.BrokenResourceError`` (the peer or the
network broke it) chained with ``from`` to one of these, which says what
happened; ``trio.ClosedResourceError`` only when this side closed it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from .protocol import MuxstreamError as MuxstreamError  # the root lives with the protocol
from .protocol import RstStatus


class ConnectionLost(MuxstreamError):
    """The transport failed, or the peer closed it before ending the stream."""


class StreamResetError(MuxstreamError):
    """The stream was reset (RST_STREAM) with ``status``; ``remote`` if by the peer."""

    def __init__(self, status: int, *, remote: bool = True, message: str | None = None) -> None:
        try:
            name = RstStatus(status).name
        except ValueError:
            name = str(status)
        who = "peer" if remote else "us (answering a peer protocol error)"
        super().__init__(message or f"stream reset by {who}: {name}")
        self.status = status
        self.remote = remote


class PingTimeout(MuxstreamError, trio.TooSlowError):
    """A PING went unanswered for ``ping_timeout`` seconds."""


class StreamOpenTimeout(MuxstreamError, trio.TooSlowError):
    """The peer did not answer SYN_STREAM with SYN_REPLY within ``open_timeout``."""


class SessionGoneAway(MuxstreamError):
    """The peer sent GOAWAY: no new streams on this session."""

    def __init__(self, last_good_stream_id: int, status: int) -> None:
        super().__init__(f"peer sent GOAWAY (last good stream {last_good_stream_id}, "
                         f"status {status})")
        self.last_good_stream_id = last_good_stream_id
        self.status = status


class SessionClosed(MuxstreamError):
    """The session ended gracefully (GOAWAY and EOF); nothing more will arrive."""


class KeepaliveTimeout(PingTimeout):
    """The keepalive PING went unanswered: the peer or the path is dead."""


class LocalClose(MuxstreamError):
    """Why a stream broke when this side closed the session: its calls raise
    ``trio.ClosedResourceError``, not ``BrokenResourceError``. Never raised to users."""


@contextmanager
def failures_reported(
    doing: str, fail: Callable[[BaseException], None], closed: trio.Event
) -> Iterator[None]:
    """Run a background task's body: background tasks never raise into user code.

    A transport failure becomes :class:`ConnectionLost` (unless the transport
    is ``closed``, which explains it), anything else is a bug; either goes to
    ``fail``, which records it as the session's error. Cancellation passes.
    """
    try:
        yield
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        if not closed.is_set():
            fail(ConnectionLost(f"transport failed while {doing}: {exc!r}"))
    except Exception as exc:  # a bug: still never raise into user code
        fail(exc)
