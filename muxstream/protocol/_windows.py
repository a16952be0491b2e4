"""Flow control (SPDY/3.1): a window per stream and one for the session.

A window is opened by WINDOW_UPDATE (stream id 0: the session). muxstream
announces its windows at start (SETTINGS INITIAL_WINDOW_SIZE, then WINDOW_UPDATE
on stream 0) and credits them back as the application consumes data. Windows
are enforced *only with a peer that announced flow control* (sent SETTINGS
INITIAL_WINDOW_SIZE or any WINDOW_UPDATE): moby/spdystream never does, and
ignores ours, so against it we neither stall waiting for credit nor reject its
data; the session then falls back to TCP backpressure. So windows apply, both
ways, only when *both* ends announced: ``announce=False`` behaves like
spdystream (announces nothing, sends no WINDOW_UPDATE, which would announce,
and honours no window either way). A muxstream peer's announcement is its very
first frame, so it is known before any of its streams or replies arrive. See
docs/protocol.md.

The per-stream windows live in each :class:`~._state.StreamRecord`
(``our_window``, ``their_window``, ``unacked``); :class:`Windows` holds the
session's and the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ._constants import MAX_WINDOW, SPDY_DEFAULT_WINDOW, SettingsId
from ._frames import Frame, SettingsEntry, SettingsFrame, WindowUpdateFrame
from ._state import StreamRecord, StreamState

#: Per-stream receive window. Measured on loopback (benchmarks/, 2 cores): 1 MiB
#: runs one stream at 0.42x raw trio, 4 MiB at 0.69x, 16 MiB at 0.82x -- the
#: sender waits for WINDOW_UPDATE round trips. 4 MiB keeps 16 stalled streams
#: within the 64 MiB session window before the session itself stalls.
DEFAULT_INITIAL_WINDOW = 4 << 20
#: Session receive window: 64 stalled streams' worth before the session stalls.
DEFAULT_SESSION_WINDOW = 64 << 20


class Windows:
    """The session's windows, and the flow-control rules for every window."""

    __slots__ = ("announce", "initial_window", "our_session_window", "peer_flow_control",
                 "peer_initial_window", "session_unacked", "session_window",
                 "their_session_window")

    def __init__(self, initial_window: int, session_window: int, *, announce: bool) -> None:
        if not 1 <= initial_window <= MAX_WINDOW or not 1 <= session_window <= MAX_WINDOW:
            raise ValueError("windows must be 1..2**31-1")
        #: our per-stream and session receive windows, as announced
        self.initial_window = initial_window
        self.session_window = session_window
        #: whether we announce flow control (and so police our receive windows)
        self.announce = announce
        #: True once the peer announced flow control (SETTINGS window or WINDOW_UPDATE)
        self.peer_flow_control = False
        self.peer_initial_window = SPDY_DEFAULT_WINDOW
        #: what the peer may still send us on the session (stream 0)
        self.our_session_window = SPDY_DEFAULT_WINDOW
        #: what we may still send the peer on the session
        self.their_session_window = SPDY_DEFAULT_WINDOW
        self.session_unacked = 0  # consumed, not yet credited back

    def announcement(self, max_concurrent_streams: int) -> list[Frame]:
        """Our first frames: SETTINGS, and a WINDOW_UPDATE for a larger session window."""
        if not self.announce:
            return []
        frames: list[Frame] = [SettingsFrame((
            SettingsEntry(SettingsId.INITIAL_WINDOW_SIZE, self.initial_window),
            SettingsEntry(SettingsId.MAX_CONCURRENT_STREAMS, max_concurrent_streams),
        ))]
        if self.session_window > SPDY_DEFAULT_WINDOW:
            frames.append(WindowUpdateFrame(0, self.session_window - SPDY_DEFAULT_WINDOW))
            self.our_session_window = self.session_window
        return frames

    @property
    def enforced(self) -> bool:
        """Windows apply: both ends announced flow control."""
        return self.announce and self.peer_flow_control

    def new_stream(self, stream_id: int, *, local: bool, state: StreamState) -> StreamRecord:
        """A stream record with this connection's opening windows."""
        return StreamRecord(stream_id, local=local, state=state,
                            our_window=self.initial_window,
                            their_window=self.peer_initial_window)

    def sendable(self, st: StreamRecord) -> int:
        """What the windows let us send on ``st`` now (no limit if none apply)."""
        if not (self.announce and self.peer_flow_control):
            return MAX_WINDOW
        return max(0, min(st.their_window, self.their_session_window))

    def sent(self, st: StreamRecord, n: int) -> None:
        st.their_window -= n
        self.their_session_window -= n

    def consumed(self, st: StreamRecord | None, stream_id: int, n: int,
                 queue: Callable[[Frame], object]) -> None:
        """The application consumed ``n`` bytes: credit the windows.

        WINDOW_UPDATE frames go to ``queue`` once a quarter of a window is owed,
        so the sender never runs dry while we are still reading. Without
        ``announce`` none (a WINDOW_UPDATE would announce flow control to the
        peer): the windows just reopen.
        """
        if not self.announce:
            self.our_session_window += n
            if st is not None:
                st.our_window += n
            return
        self.session_unacked += n
        if self.session_unacked >= self.session_window // 4:
            queue(WindowUpdateFrame(0, self.session_unacked))
            self.our_session_window += self.session_unacked
            self.session_unacked = 0
        if st is None or st.they_sent_fin:
            return
        st.unacked += n
        if st.unacked >= self.initial_window // 4:
            queue(WindowUpdateFrame(stream_id, st.unacked))
            st.our_window += st.unacked
            st.unacked = 0

    def peer_initial(self, window: int, streams: Iterable[StreamRecord]) -> None:
        """The peer's SETTINGS INITIAL_WINDOW_SIZE: it announced flow control."""
        delta = window - self.peer_initial_window
        self.peer_initial_window = window
        self.peer_flow_control = True
        for st in streams:
            st.their_window += delta
