"""Two well-behaved muxstream connections under any interleaving of verbs and any
delivery schedule: neither ever sees a protocol error, every stream's bytes arrive
in order, and the flow-control books balance once everything is delivered.

This is the test that catches races between the two ends (a reset crossing data,
GOAWAY crossing a new stream, credit for a stream that just closed, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from muxstream.protocol import (
    MAX_WINDOW,
    Connection,
    DataReceived,
    Event,
    GoAwayReceived,
    LocalProtocolError,
    PingAcked,
    ReplyReceived,
    Role,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamState,
)

SENDING = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)


@dataclass
class Side:
    """One end: its Connection, what its application sent and received."""

    conn: Connection
    inbox: bytearray = field(default_factory=bytearray)  # bytes in flight towards it
    sent: dict[int, bytearray] = field(default_factory=dict)
    got: dict[int, bytearray] = field(default_factory=dict)
    unconsumed: dict[int, int] = field(default_factory=dict)
    replied: set[int] = field(default_factory=set)  # streams we may send DATA on
    fin_sent: set[int] = field(default_factory=set)
    fin_got: set[int] = field(default_factory=set)
    reset: set[int] = field(default_factory=set)  # by either side, as seen here
    pings: set[int] = field(default_factory=set)

    def handle(self, events: list[Event]) -> None:
        conn = self.conn
        for ev in events:
            if isinstance(ev, StreamOpened):
                self.got[ev.stream_id] = bytearray()
                self.sent[ev.stream_id] = bytearray()
                try:
                    conn.send_reply(ev.stream_id)  # the application accepts every stream
                except LocalProtocolError:
                    # reset by a later frame of the same batch (events are
                    # reported after the whole chunk was parsed)
                    assert conn.stream_state(ev.stream_id) is StreamState.CLOSED
                else:
                    self.replied.add(ev.stream_id)
            elif isinstance(ev, ReplyReceived):
                self.replied.add(ev.stream_id)
            elif isinstance(ev, DataReceived):
                self.got[ev.stream_id] += ev.data
                self.unconsumed[ev.stream_id] = self.unconsumed.get(ev.stream_id, 0) + len(ev.data)
            elif isinstance(ev, StreamEnded):
                self.fin_got.add(ev.stream_id)
            elif isinstance(ev, StreamReset):
                self.reset.add(ev.stream_id)
                self.drop(ev.stream_id)
            elif isinstance(ev, PingAcked):
                self.pings.discard(ev.ping_id)
            elif isinstance(ev, GoAwayReceived):
                for sid in list(self.sent):
                    if conn.stream_state(sid) is StreamState.CLOSED:
                        self.replied.discard(sid)

    def drop(self, sid: int) -> None:
        """The application lets go of a stream: whatever it did not read is consumed."""
        n = self.unconsumed.pop(sid, 0)
        if n:
            self.conn.acknowledge_received_data(sid, n)

    def consume(self, sid: int, n: int) -> None:
        have = self.unconsumed.get(sid, 0)
        n = min(n, have)
        if n:
            self.unconsumed[sid] = have - n
            self.conn.acknowledge_received_data(sid, n)


class TwoPeers(RuleBasedStateMachine):
    #: Which ends announce flow control (False: behave like Go spdystream).
    announce = {"client": True, "server": True}

    def __init__(self) -> None:
        super().__init__()
        options = {"initial_window": 4096, "session_window": 65536, "max_send_frame": 1500}
        self.sides = {
            name: Side(Connection(role, announce=self.announce[name], **options))  # type: ignore[arg-type]
            for name, role in (("client", Role.CLIENT), ("server", Role.SERVER))
        }
        # the announcements cross first, as they do on a real connection
        self.flush("client")
        self.flush("server")
        self.deliver("server", 1 << 30)
        self.deliver("client", 1 << 30)

    def other(self, name: str) -> str:
        return "server" if name == "client" else "client"

    def flush(self, name: str, max_bytes: int | None = None) -> None:
        side = self.sides[name]
        for buf in side.conn.buffers_to_send(max_bytes):
            self.sides[self.other(name)].inbox += buf

    def deliver(self, name: str, n: int) -> None:
        side = self.sides[name]
        piece = bytes(side.inbox[:n])
        del side.inbox[:n]
        side.handle(side.conn.receive_data(piece))  # must never raise

    def streams(self, name: str) -> list[int]:
        return sorted(self.sides[name].sent)

    # --- rules -------------------------------------------------------------------------

    sides_ = st.sampled_from(["client", "server"])

    @rule(name=sides_)
    def open_stream(self, name: str) -> None:
        side = self.sides[name]
        conn = side.conn
        if conn.goaway_sent or conn.goaway_received:
            return
        sid = conn.open_stream({"n": str(len(side.sent))})
        side.sent[sid] = bytearray()
        side.got[sid] = bytearray()

    @rule(name=sides_, pick=st.integers(0, 50), size=st.integers(0, 6000), fin=st.booleans())
    def send(self, name: str, pick: int, size: int, fin: bool) -> None:
        side = self.sides[name]
        sids = [s for s in self.streams(name) if s in side.replied]
        if not sids:
            return
        sid = sids[pick % len(sids)]
        conn = side.conn
        open_for_sending = conn.stream_state(sid) in SENDING and sid not in side.fin_sent
        size = min(size, conn.sendable(sid))
        payload = bytes([len(side.sent[sid]) % 251]) * size
        try:
            conn.send_data(sid, payload, end_stream=fin)
        except LocalProtocolError:
            assert not open_for_sending
            return
        assert open_for_sending
        side.sent[sid] += payload
        if fin:
            side.fin_sent.add(sid)

    @rule(name=sides_, pick=st.integers(0, 50), ordered=st.booleans())
    def reset(self, name: str, pick: int, ordered: bool) -> None:
        side = self.sides[name]
        sids = self.streams(name)
        if not sids:
            return
        sid = sids[pick % len(sids)]
        side.conn.reset_stream(sid, ordered=ordered)
        side.reset.add(sid)
        side.replied.discard(sid)
        side.drop(sid)

    @rule(name=sides_, pick=st.integers(0, 50), n=st.integers(1, 5000))
    def consume(self, name: str, pick: int, n: int) -> None:
        side = self.sides[name]
        sids = sorted(side.unconsumed)
        if sids:
            side.consume(sids[pick % len(sids)], n)

    @rule(name=sides_)
    def ping(self, name: str) -> None:
        side = self.sides[name]
        side.pings.add(side.conn.ping())

    @rule(name=sides_)
    def go_away(self, name: str) -> None:
        self.sides[name].conn.go_away()

    # small limits stop a batch right after a frame header: the case that once let
    # an urgent frame slip between a DATA header and its payload
    @rule(name=sides_, max_bytes=st.none() | st.integers(1, 24) | st.integers(1, 5000))
    def write(self, name: str, max_bytes: int | None) -> None:
        self.flush(name, max_bytes)

    @precondition(lambda self: any(s.inbox for s in self.sides.values()))
    @rule(name=sides_, n=st.integers(1, 3000))
    def read(self, name: str, n: int) -> None:
        self.deliver(name, n)

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def bytes_arrive_in_order(self) -> None:
        for name, side in self.sides.items():
            peer = self.sides[self.other(name)]
            for sid, got in side.got.items():
                assert peer.sent.get(sid, bytearray()).startswith(got)

    def teardown(self) -> None:
        # Settle: both applications read everything; deliver until nothing moves.
        for _ in range(200):
            for side in self.sides.values():
                for sid in list(side.unconsumed):
                    side.consume(sid, 1 << 30)
            moved = False
            for name in ("client", "server"):
                if self.sides[name].conn.has_data_to_send:
                    self.flush(name)
                    moved = True
            for name in ("client", "server"):
                if self.sides[name].inbox:
                    self.deliver(name, 1 << 30)
                    moved = True
            if not moved:
                break
        else:
            raise AssertionError("the two ends never went quiet")
        client, server = self.sides["client"], self.sides["server"]
        for a, b in ((client, server), (server, client)):
            assert not a.pings, "an outstanding ping was never answered"
            # every stream neither side reset delivered everything it sent, and its FIN
            for sid, sent in a.sent.items():
                if sid in a.reset or sid in b.reset:
                    continue
                assert bytes(b.got.get(sid, b"")) == bytes(sent)
                assert (sid in a.fin_sent) == (sid in b.fin_got)
            if not all(self.announce.values()):
                # no window applies either way, so nothing ever waited for credit
                for sid in a.sent:
                    if a.conn.stream_state(sid) in SENDING:
                        assert a.conn.sendable(sid) == MAX_WINDOW
                continue
            # the flow-control books balance: what a may still send is what b allows
            assert a.conn.their_session_window == b.conn.our_session_window
            for sid in a.sent:
                if a.conn.stream_state(sid) in SENDING and (
                    b.conn.stream_state(sid) is not StreamState.CLOSED
                ):
                    assert a.conn.their_window(sid) == b.conn.our_window(sid)


class SpdystreamLikeServer(TwoPeers):
    announce = {"client": True, "server": False}


class SpdystreamLikeClient(TwoPeers):
    announce = {"client": False, "server": True}


# inherit the loaded profile (see conftest.py)
for machine in (TwoPeers, SpdystreamLikeServer, SpdystreamLikeClient):
    machine.TestCase.settings = settings(stateful_step_count=40)
test_two_muxstream_peers_never_see_a_protocol_error = TwoPeers.TestCase
test_a_spdystream_like_server_never_sees_a_protocol_error = SpdystreamLikeServer.TestCase
test_a_spdystream_like_client_never_sees_a_protocol_error = SpdystreamLikeClient.TestCase
