"""The receive half of a Connection: one handler per frame the peer sends.

:class:`PeerFrames` holds the rules for what the peer may do -- which frames a
stream's state allows, flow-control overruns, stream ids, GOAWAY -- and turns
each frame into state changes and :mod:`events <._events>`. A frame that breaks
a rule raises :class:`RemoteProtocolError` with its answer queued: RST_STREAM
for a stream error, GOAWAY (in ``Connection.receive_data``) for a session error.
:class:`~._connection.Connection` inherits it, so both halves share one state.
"""

from __future__ import annotations

from ._constants import MAX_WINDOW, Flag, RstStatus, SettingsId
from ._errors import RemoteProtocolError
from ._events import (
    DataReceived,
    Event,
    GoAwayReceived,
    HeadersReceived,
    PingAcked,
    PingReceived,
    ReplyReceived,
    SettingsReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
    WindowUpdated,
)
from ._frames import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    SynReplyFrame,
    SynStreamFrame,
    WindowUpdateFrame,
    encode_ping,
)
from ._outbound import OutboundQueues
from ._state import OPENING, Fin, Role, StreamRecord, StreamState, StreamTable
from ._windows import Windows

#: Flag bits as plain ints: ``frame.flags & Flag.FIN`` builds an enum per test.
_FIN = int(Flag.FIN)
_UNIDIRECTIONAL = int(Flag.UNIDIRECTIONAL)

#: Streams closed by our RST whose late frames are silently dropped.
_RESET_MEMORY = 4096


class PeerFrames:
    """The peer's frames, applied to the connection's state (see the module docstring)."""

    # The state both halves share; Connection.__init__ sets it.
    role: Role
    max_concurrent_streams: int
    max_header_block: int
    peer_settings: dict[int, int]
    goaway_sent: bool
    goaway_received: bool
    peer_last_good_stream_id: int | None
    _streams: StreamTable
    _windows: Windows
    _out: OutboundQueues
    _outstanding_pings: set[int]
    _peer_max_streams: int | None
    _highest_peer_stream: int
    _highest_local_stream: int
    _reset_by_us: dict[int, None]

    def _credit(self, stream_id: int, n: int) -> None:
        """Credit ``n`` consumed (or discarded) bytes of ``stream_id`` to the windows."""
        if n > 0:
            self._windows.consumed(self._streams.get(stream_id), stream_id, n,
                                   self._out.urgent.append)

    def _discard_queued(self, st: StreamRecord) -> None:
        # A DATA payload that will never be sent: the peer never sees it, so it
        # never credits it back; give the session window back.
        self._windows.their_session_window += self._out.discard(st)

    def _remember_reset(self, stream_id: int) -> None:
        reset = self._reset_by_us
        reset.pop(stream_id, None)  # re-inserted: now the newest
        if len(reset) >= _RESET_MEMORY:
            del reset[next(iter(reset))]
        reset[stream_id] = None

    def _stream_error(self, message: str, stream_id: int, status: RstStatus) -> None:
        self._stream_error_quiet(stream_id, status)
        raise RemoteProtocolError.stream(message, stream_id, status)

    def _was_opened(self, stream_id: int) -> bool:
        """Whether ``stream_id`` was ever opened (by either side)."""
        if (stream_id % 2 == 1) == (self.role is Role.CLIENT):  # ours
            return stream_id <= self._highest_local_stream
        return stream_id <= self._highest_peer_stream

    def _frame_for_missing_stream(self, stream_id: int, what: str) -> None:
        """A frame for a stream not in the table: ignore races, reject the rest."""
        if stream_id == 0:
            # No RST_STREAM can name stream 0 (its id field is 1..2**31-1).
            raise RemoteProtocolError.session(f"{what} on stream 0")
        if stream_id in self._reset_by_us:
            return  # we reset it; the peer had not heard yet
        if self._was_opened(stream_id):
            self._stream_error(f"{what} on closed stream {stream_id}", stream_id,
                               RstStatus.STREAM_ALREADY_CLOSED)
        self._stream_error(f"{what} on unknown stream {stream_id}", stream_id,
                           RstStatus.INVALID_STREAM)

    def _stream_error_quiet(self, stream_id: int, status: RstStatus) -> None:
        st = self._streams.reset(stream_id)
        if st is not None:
            self._discard_queued(st)
        self._remember_reset(stream_id)
        self._out.urgent.append(RstStreamFrame(stream_id, status))
        self._out.answers += 1

    def _remote_fin(self, st: StreamRecord) -> None:
        self._streams.fin(st, Fin.THEIRS)

    def _handle(self, frame: Frame, events: list[Event]) -> None:
        if isinstance(frame, DataFrame):
            self._on_data(frame, events)
        elif isinstance(frame, SynStreamFrame):
            self._on_syn_stream(frame, events)
        elif isinstance(frame, SynReplyFrame):
            self._on_syn_reply(frame, events)
        elif isinstance(frame, HeadersFrame):
            self._on_headers(frame, events)
        elif isinstance(frame, RstStreamFrame):
            st = self._streams.reset(frame.stream_id)
            if st is not None:
                self._discard_queued(st)  # the peer must not get more frames for it
                events.append(StreamReset(frame.stream_id, _status(frame.status), remote=True))
        elif isinstance(frame, PingFrame):
            if (frame.ping_id % 2 == 1) == (self.role is Role.CLIENT):
                if frame.ping_id in self._outstanding_pings:
                    self._outstanding_pings.discard(frame.ping_id)
                    events.append(PingAcked(frame.ping_id))
            else:
                self._out.urgent.append(encode_ping(frame.ping_id))
                self._out.answers += 1
                events.append(PingReceived(frame.ping_id))
        elif isinstance(frame, SettingsFrame):
            self._on_settings(frame, events)
        elif isinstance(frame, WindowUpdateFrame):
            self._on_window_update(frame, events)
        elif isinstance(frame, GoAwayFrame):
            self._on_goaway(frame, events)
        # UnknownControlFrame: ignored, as SPDY/3 2.2.1 requires.

    def _on_data(self, frame: DataFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        n = len(frame.data)
        # Every DATA byte counts against the session window, even on dead streams.
        windows = self._windows
        windows.our_session_window -= n
        if windows.announce and windows.peer_flow_control and windows.our_session_window < 0:
            raise RemoteProtocolError.session("peer overran the session window")
        st = self._streams.get(sid)
        if st is None:
            self._credit(sid, n)  # nobody will consume it
            self._frame_for_missing_stream(sid, "DATA")
            return
        if st.they_sent_fin:
            self._credit(sid, n)
            self._stream_error(f"DATA after FIN on stream {sid}", sid,
                               RstStatus.STREAM_ALREADY_CLOSED)
        st.our_window -= n
        if windows.announce and windows.peer_flow_control and st.our_window < 0:
            self._credit(sid, n)
            self._stream_error(f"peer overran the window of stream {sid}", sid,
                               RstStatus.FLOW_CONTROL_ERROR)
        if n:
            events.append(DataReceived(sid, frame.data))
        if int(frame.flags) & _FIN:
            self._remote_fin(st)
            events.append(StreamEnded(sid))

    def _on_syn_stream(self, frame: SynStreamFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        if sid == 0 or (sid % 2 == 1) == (self.role is Role.CLIENT):
            raise RemoteProtocolError.session(f"SYN_STREAM with our parity of id ({sid})")
        if sid <= self._highest_peer_stream:
            if sid in self._streams:
                self._stream_error(f"SYN_STREAM for stream {sid} in use", sid,
                                   RstStatus.STREAM_IN_USE)
            raise RemoteProtocolError.session(f"SYN_STREAM id {sid} is not increasing")
        if self.goaway_sent:
            # Streams after our GOAWAY are refused, without counting them as processed.
            self._stream_error_quiet(sid, RstStatus.REFUSED_STREAM)
            return
        self._highest_peer_stream = sid
        peer_open = self._streams.remote
        if peer_open >= self.max_concurrent_streams:
            self._stream_error_quiet(sid, RstStatus.REFUSED_STREAM)
            return
        fin = bool(int(frame.flags) & _FIN)
        uni = bool(int(frame.flags) & _UNIDIRECTIONAL)
        st = self._windows.new_stream(sid, local=False, state=OPENING[False, fin, uni])
        if st.state is not StreamState.CLOSED:
            self._streams[sid] = st
        events.append(StreamOpened(sid, frame.headers, fin, uni, frame.associated_stream_id,
                                   frame.priority))
        if fin:
            events.append(StreamEnded(sid))

    def _on_syn_reply(self, frame: SynReplyFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        st = self._streams.get(sid)
        if st is None:
            self._frame_for_missing_stream(sid, "SYN_REPLY")
            return
        if not st.local or st.replied:
            self._stream_error(f"unexpected SYN_REPLY on stream {sid}", sid,
                               RstStatus.STREAM_IN_USE)
        st.replied = True
        fin = bool(int(frame.flags) & _FIN)
        events.append(ReplyReceived(sid, frame.headers, fin))
        if fin:
            self._remote_fin(st)
            events.append(StreamEnded(sid))

    def _on_headers(self, frame: HeadersFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        st = self._streams.get(sid)
        if st is None:
            self._frame_for_missing_stream(sid, "HEADERS")
            return
        if st.they_sent_fin:
            self._stream_error(f"HEADERS after FIN on stream {sid}", sid,
                               RstStatus.STREAM_ALREADY_CLOSED)
        fin = bool(int(frame.flags) & _FIN)
        merged = frame.headers
        extra = st.extra_headers
        if extra is not None:
            # HEADERS compress ~1000:1: merging without a bound would let a peer
            # pile up memory a few bytes at a time on the wire.
            if extra.nbytes + merged.nbytes > self.max_header_block:
                self._stream_error(f"HEADERS on stream {sid} exceed max_header_block "
                                   f"({self.max_header_block} bytes)", sid,
                                   RstStatus.PROTOCOL_ERROR)
            merged = extra.merged(merged)
        st.extra_headers = merged
        events.append(HeadersReceived(sid, merged, fin))
        if fin:
            self._remote_fin(st)
            events.append(StreamEnded(sid))

    def _on_settings(self, frame: SettingsFrame, events: list[Event]) -> None:
        settings = frame.as_dict()
        self.peer_settings.update(settings)
        window = settings.get(SettingsId.INITIAL_WINDOW_SIZE)
        if window is not None:
            if window > MAX_WINDOW:
                raise RemoteProtocolError.session(f"INITIAL_WINDOW_SIZE {window} too large")
            self._windows.peer_initial(window, self._streams.values())
        limit = settings.get(SettingsId.MAX_CONCURRENT_STREAMS)
        if limit is not None:
            self._peer_max_streams = limit
        events.append(SettingsReceived(settings))

    def _on_window_update(self, frame: WindowUpdateFrame, events: list[Event]) -> None:
        sid, delta = frame.stream_id, frame.delta
        windows = self._windows
        windows.peer_flow_control = True
        if sid == 0:
            if delta == 0:
                raise RemoteProtocolError.session("WINDOW_UPDATE of 0 on the session")
            windows.their_session_window += delta
            if windows.their_session_window > MAX_WINDOW:
                raise RemoteProtocolError.session("session window overflow")
            events.append(WindowUpdated(0, delta))
            return
        st = self._streams.get(sid)
        if st is None:
            return  # closed or reset: credit is moot
        if delta == 0:
            self._stream_error(f"WINDOW_UPDATE of 0 on stream {sid}", sid,
                               RstStatus.PROTOCOL_ERROR)
        st.their_window += delta
        if st.their_window > MAX_WINDOW:
            self._stream_error(f"window overflow on stream {sid}", sid,
                               RstStatus.FLOW_CONTROL_ERROR)
        events.append(WindowUpdated(sid, delta))

    def _on_goaway(self, frame: GoAwayFrame, events: list[Event]) -> None:
        self.goaway_received = True
        self.peer_last_good_stream_id = frame.last_good_stream_id
        events.append(GoAwayReceived(frame.last_good_stream_id, frame.status))
        # Our streams the peer never processed will never be answered.
        for sid in [s for s, st in self._streams.items()
                    if st.local and s > frame.last_good_stream_id and not st.replied]:
            st = self._streams.reset(sid)
            assert st is not None
            self._discard_queued(st)
            events.append(StreamReset(sid, RstStatus.REFUSED_STREAM, remote=True))


def _status(value: int) -> int:
    try:
        return RstStatus(value)
    except ValueError:
        return value
