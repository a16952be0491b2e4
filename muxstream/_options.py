"""A session's tunables, their defaults, and its statistics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, TypedDict

from .protocol import (
    DEFAULT_INITIAL_WINDOW,
    DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_HEADER_BLOCK,
    DEFAULT_SESSION_WINDOW,
)

#: seconds; spdystream has no bound by default, Kubernetes waits up to ~10 s.
DEFAULT_CLOSE_TIMEOUT = 10.0
#: seconds between keepalive pings (yamux's default).
DEFAULT_KEEPALIVE_INTERVAL = 30.0
#: seconds a ping may go unanswered before the session is declared dead.
DEFAULT_PING_TIMEOUT = 30.0
#: seconds open_stream waits for SYN_REPLY (Kubernetes' createStreamResponseTimeout).
DEFAULT_OPEN_TIMEOUT = 30.0
#: streams the peer opened that wait for accept() before new ones are refused.
DEFAULT_ACCEPT_BACKLOG = 128
#: header bytes (names + values, inflated) that streams waiting for accept() may
#: hold in all: header blocks compress ~1000:1, so without this a peer could park
#: accept_backlog x max_header_block (32 MiB) for a few hundred bytes on the wire.
DEFAULT_ACCEPT_BACKLOG_BYTES = 1 << 20
#: queued-but-unwritten bytes above which senders wait: bounds memory per session.
DEFAULT_WRITE_BUFFER = 1 << 20


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """Tunables of a session; each has a safe default (see the constants above)."""

    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    keepalive_interval: float | None = DEFAULT_KEEPALIVE_INTERVAL
    ping_timeout: float = DEFAULT_PING_TIMEOUT
    #: close gracefully after this long with no streams and no data (None: never).
    idle_timeout: float | None = None
    open_timeout: float = DEFAULT_OPEN_TIMEOUT
    initial_window: int = DEFAULT_INITIAL_WINDOW
    session_window: int = DEFAULT_SESSION_WINDOW
    #: largest DATA frame written; None: 512 KiB (DEFAULT_MAX_SEND_FRAME) to a peer
    #: that announced flow control (muxstream), 128 KiB to one that did not (spdystream).
    max_frame_size: int | None = None
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    max_header_block: int = DEFAULT_MAX_HEADER_BLOCK
    accept_backlog: int = DEFAULT_ACCEPT_BACKLOG
    #: header bytes the accept backlog may hold; beyond it, REFUSED_STREAM
    #: (one stream is always let in, whatever its headers' size).
    accept_backlog_bytes: int = DEFAULT_ACCEPT_BACKLOG_BYTES
    write_buffer_size: int = DEFAULT_WRITE_BUFFER

    @classmethod
    def resolve(
        cls, options: SessionOptions | None = None, keywords: Mapping[str, Any] | None = None
    ) -> SessionOptions:
        """``options`` (default: every default) with ``keywords`` replacing fields.

        Raises:
            TypeError: a keyword is not a field (a misspelt option).
        """
        base = cls() if options is None else options
        if not keywords:
            return base
        unknown = set(keywords) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown session option(s): {', '.join(sorted(unknown))}")
        return replace(base, **keywords)


class SessionKeywords(TypedDict, total=False):
    """:class:`SessionOptions` as keyword arguments, so that type checkers see them:
    ``open_session(transport, role=CLIENT, close_timeout=5)``. Same names,
    types and meaning as the fields (a test keeps the two in step)."""

    close_timeout: float
    keepalive_interval: float | None
    ping_timeout: float
    idle_timeout: float | None
    open_timeout: float
    initial_window: int
    session_window: int
    max_frame_size: int | None
    max_concurrent_streams: int
    max_header_block: int
    accept_backlog: int
    accept_backlog_bytes: int
    write_buffer_size: int


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    """A snapshot of :meth:`Session.statistics`."""

    streams_open: int
    streams_opened: int
    streams_accepted: int
    bytes_sent: int
    bytes_received: int
    write_buffer: int
    our_session_window: int
    their_session_window: int
    peer_flow_control: bool
    pings_sent: int
    pings_received: int
    last_rtt: float | None
    #: our PINGs not answered (nor timed out) yet
    pings_outstanding: int = 0
    #: streams the peer opened that wait for :meth:`Session.accept`
    streams_waiting: int = 0
    #: header bytes those streams hold (bounded by ``accept_backlog_bytes``)
    waiting_header_bytes: int = 0
    #: answers to the peer's frames (PING echoes, RST_STREAMs) not written yet;
    #: the reader stops reading while many wait (a peer that floods without reading)
    queued_answers: int = 0
    #: whether this session decodes frames (and WebSocket data frames) with the
    #: compiled accelerator, not the pure-Python code (``MUXSTREAM_NO_ACCEL``)
    accelerated: bool = False
    #: which, in words, as ``muxstream --version`` says it ("compiled C
    #: accelerator", or "pure Python: " and why)
    accelerator: str = ""
