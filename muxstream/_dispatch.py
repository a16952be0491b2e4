"""What the peer did, applied to the session: one handler per protocol event.

The reader task calls :func:`dispatch` with the events of each read. DATA is
handled inline (it is most of the events, and a call per frame is measurable);
every other event goes to its handler in :data:`HANDLERS`. A handler returns
True if the event counts as activity for ``idle_timeout``: as DATA does, a
stream opened or ended; replies, headers, resets, PINGs, GOAWAY, SETTINGS and
window updates do not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from ._core import DRAINING, OPEN, SessionCore, Trigger
from ._errors import SessionGoneAway, StreamResetError
from ._stream import Stream, StreamCore
from .protocol import (
    DataReceived,
    Event,
    GoAwayReceived,
    HeadersReceived,
    PingAcked,
    PingReceived,
    ReplyReceived,
    RstStatus,
    SettingsReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamState,
    WindowUpdated,
)

_NO_LIMIT = 1 << 62
_CLOSED = StreamState.CLOSED


def dispatch(core: SessionCore, events: list[Event]) -> None:
    """Apply ``events`` (one read's worth) to the session and its streams."""
    if not events:
        return
    streams = core.streams
    conn = core.conn
    limit = core.buffer_limit
    # Without the peer's flow control, a stream that buffers more than its
    # share pauses the reader (TCP backpressure); while draining on close, data
    # beyond it is discarded instead: nobody may ever read it.
    draining = core.phase is DRAINING
    track = not conn.peer_flow_control and not draining
    discard_above = limit if draining and not conn.peer_flow_control else _NO_LIMIT
    active = False
    for ev in events:
        if type(ev) is DataReceived:
            active = True
            stream = streams.get(ev.stream_id)
            buffered = -1 if stream is None else stream.on_data(ev.data, discard_above)
            if buffered < 0:
                # Nobody will read it: discard, credit back.
                conn.acknowledge_received_data(ev.stream_id, len(ev.data))
                continue
            core.buffered_total += len(ev.data)
            if track and buffered > limit:
                core.overfull = stream
        elif HANDLERS[type(ev)](core, ev):
            active = True
    if active:
        core.last_activity = trio.current_time()
    writer = core.writer
    if writer.space_waiters and conn.ordered_bytes < core.options.write_buffer_size:
        writer.wake_space_waiters()


def _stream_ended(core: SessionCore, ev: StreamEnded) -> bool:
    stream = core.streams.get(ev.stream_id)
    if stream is not None:
        stream.on_fin()
        core.forget_if_done(stream)
    return True


def _stream_opened(core: SessionCore, ev: StreamOpened) -> bool:
    size = ev.headers.nbytes
    accept = core.accept
    if core.phase is not OPEN or not accept.admits(size):
        core.attempt(core.conn.reset_stream, ev.stream_id, RstStatus.REFUSED_STREAM)
        return True
    stream = StreamCore(ev.stream_id, they_sent_fin=ev.ended, we_sent_fin=ev.unidirectional)
    if core.conn.stream_state(ev.stream_id) is not _CLOSED:
        core.streams[ev.stream_id] = stream
    accept.push(Stream(core, stream, ev.headers, local=False), stream, size)
    return True


def _reply_received(core: SessionCore, ev: ReplyReceived) -> bool:
    stream = core.streams.get(ev.stream_id)
    if stream is not None:
        stream.on_reply(ev.headers, ev.ended)
    return False


def _headers_received(core: SessionCore, ev: HeadersReceived) -> bool:
    stream = core.streams.get(ev.stream_id)
    if stream is not None:
        stream.on_headers(ev.headers, ev.ended)
    return False


def _window_updated(core: SessionCore, ev: WindowUpdated) -> bool:
    if ev.stream_id == 0:
        for each in core.streams.values():
            each.wake()
    else:
        stream = core.streams.get(ev.stream_id)
        if stream is not None:
            stream.wake()
    return False


def _stream_reset(core: SessionCore, ev: StreamReset) -> bool:
    stream = core.streams.pop(ev.stream_id, None)
    if stream is not None:
        stream.on_broken(StreamResetError(ev.status, remote=ev.remote))
        core.open_lot.unpark_all()
    return False


def _ping_acked(core: SessionCore, ev: PingAcked) -> bool:
    core.pings.acked(ev.ping_id)
    return False


def _ping_received(core: SessionCore, ev: PingReceived) -> bool:
    core.pings.received += 1  # the echo is queued already
    return False


def _goaway_received(core: SessionCore, ev: GoAwayReceived) -> bool:
    core.goaway = SessionGoneAway(ev.last_good_stream_id, ev.status)
    core.accept.lot.unpark_all()
    core.open_lot.unpark_all()
    if core.idle:
        core.begin_close(Trigger.PEER)  # nothing left to finish
    return False


def _settings_received(core: SessionCore, ev: SettingsReceived) -> bool:
    core.open_lot.unpark_all()  # MAX_CONCURRENT_STREAMS may have grown
    for stream in core.streams.values():
        stream.wake()  # and windows may have opened
    return False


#: Every event but DataReceived (handled inline), by type.
HANDLERS: dict[type, Callable[[SessionCore, Any], bool]] = {
    StreamEnded: _stream_ended,
    StreamOpened: _stream_opened,
    ReplyReceived: _reply_received,
    HeadersReceived: _headers_received,
    WindowUpdated: _window_updated,
    StreamReset: _stream_reset,
    PingAcked: _ping_acked,
    PingReceived: _ping_received,
    GoAwayReceived: _goaway_received,
    SettingsReceived: _settings_received,
}
