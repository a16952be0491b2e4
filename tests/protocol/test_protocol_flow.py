"""Flow control as negotiated, and the order in which queued frames leave.

Windows are enforced only between two ends that both announced flow control
(muxstream announces SETTINGS INITIAL_WINDOW_SIZE + MAX_CONCURRENT_STREAMS, then
WINDOW_UPDATE on stream 0). Go spdystream never announces and ignores windows;
``Connection(announce=False)`` behaves the same way on the wire.
"""

from __future__ import annotations

import pytest

from muxstream.protocol import (
    MAX_WINDOW,
    SPDY_DEFAULT_WINDOW,
    Connection,
    DataFrame,
    DataReceived,
    Event,
    Flag,
    FlowControlError,
    Frame,
    GoAwayFrame,
    GoAwayStatus,
    Headers,
    PingFrame,
    RemoteProtocolError,
    ReplyReceived,
    Role,
    RstStatus,
    RstStreamFrame,
    SettingsEntry,
    SettingsFrame,
    SettingsId,
    StreamOpened,
    StreamReset,
    SynReplyFrame,
    SynStreamFrame,
    WindowUpdated,
    WindowUpdateFrame,
)
from muxstream.testing import RawPeer

KiB = 1024
MiB = 1024 * 1024


def deliver(src: Connection, dst: Connection) -> list[Event]:
    return dst.receive_data(src.data_to_send())


def pair(
    client_options: dict[str, object] | None = None,
    server_options: dict[str, object] | None = None,
) -> tuple[Connection, Connection]:
    client = Connection(Role.CLIENT, **(client_options or {}))  # type: ignore[arg-type]
    server = Connection(Role.SERVER, **(server_options or {}))  # type: ignore[arg-type]
    deliver(client, server)
    deliver(server, client)
    return client, server


def open_stream(opener: Connection, acceptor: Connection) -> int:
    sid = opener.open_stream({"streamtype": "data"})
    assert isinstance(deliver(opener, acceptor)[0], StreamOpened)
    acceptor.send_reply(sid)
    assert isinstance(deliver(acceptor, opener)[-1], ReplyReceived)
    return sid


def received(events: list[Event]) -> int:
    return sum(len(e.data) for e in events if isinstance(e, DataReceived))


# --- the announcement -------------------------------------------------------------------


def test_muxstream_announces_windows_and_stream_limit_first() -> None:
    conn = Connection(Role.CLIENT)
    assert conn.data_to_send() == bytes.fromhex(
        "80030004 00000014 00000002"  # SETTINGS, 2 entries
        "00000007 00400000"  # INITIAL_WINDOW_SIZE = 4 MiB
        "00000004 000003e8"  # MAX_CONCURRENT_STREAMS = 1000
        "80030009 00000008 00000000 03ff0000"  # WINDOW_UPDATE session += 64 MiB - 64 KiB
    )
    assert conn.our_session_window == 64 * MiB


def test_a_session_window_at_the_default_is_announced_by_settings_alone() -> None:
    conn = Connection(
        Role.SERVER,
        initial_window=5000,
        session_window=SPDY_DEFAULT_WINDOW,
        max_concurrent_streams=7,
    )
    assert RawPeer().receive_from(conn) == [
        SettingsFrame(
            (
                SettingsEntry(SettingsId.INITIAL_WINDOW_SIZE, 5000),
                SettingsEntry(SettingsId.MAX_CONCURRENT_STREAMS, 7),
            )
        )
    ]


def test_announce_false_sends_nothing_first() -> None:
    assert Connection(Role.CLIENT, announce=False).data_to_send() == b""


@pytest.mark.parametrize("bad", [0, MAX_WINDOW + 1])
def test_window_options_are_validated(bad: int) -> None:
    with pytest.raises(ValueError):
        Connection(Role.CLIENT, initial_window=bad)
    with pytest.raises(ValueError):
        Connection(Role.CLIENT, session_window=bad)


# --- two muxstream peers: windows are enforced ------------------------------------------


def test_sender_is_limited_by_the_peers_stream_window() -> None:
    client, server = pair(server_options={"initial_window": 100 * KiB})
    assert client.peer_flow_control
    sid = open_stream(client, server)
    assert client.sendable(sid) == 100 * KiB
    client.send_data(sid, b"x" * 60 * KiB)
    assert client.sendable(sid) == 40 * KiB
    with pytest.raises(FlowControlError):
        client.send_data(sid, b"x" * (40 * KiB + 1))
    client.send_data(sid, b"x" * 40 * KiB)
    assert client.sendable(sid) == 0
    assert received(deliver(client, server)) == 100 * KiB


def test_window_update_credit_follows_acknowledge_received_data() -> None:
    client, server = pair(server_options={"initial_window": 100 * KiB})
    sid = open_stream(client, server)
    client.send_data(sid, b"x" * 100 * KiB)
    deliver(client, server)
    # credit is returned once a quarter of the window is owed, not per byte
    server.acknowledge_received_data(sid, 25 * KiB - 1)
    assert RawPeer().receive_from(server) == []
    server.acknowledge_received_data(sid, 1)
    assert RawPeer().receive_from(server) == [WindowUpdateFrame(sid, 25 * KiB)]
    assert server.our_window(sid) == 25 * KiB
    server.acknowledge_received_data(sid, 75 * KiB)
    update = server.data_to_send()
    assert RawPeer().decode(update) == [WindowUpdateFrame(sid, 75 * KiB)]
    assert client.receive_data(update) == [WindowUpdated(sid, 75 * KiB)]
    assert client.sendable(sid) == 75 * KiB


def test_session_window_is_credited_separately() -> None:
    client, server = pair(server_options={"initial_window": MiB, "session_window": 400 * KiB})
    a, b = open_stream(client, server), open_stream(client, server)
    # the server announced 400 KiB for the whole session
    assert client.their_session_window == 400 * KiB
    client.send_data(a, b"x" * 300 * KiB)
    assert client.sendable(b) == 100 * KiB
    deliver(client, server)
    server.acknowledge_received_data(a, 100 * KiB)
    frames = RawPeer().receive_from(server)
    assert WindowUpdateFrame(0, 100 * KiB) in frames


def test_no_stream_credit_after_the_peers_fin() -> None:
    client, server = pair(server_options={"initial_window": 4 * KiB})
    sid = open_stream(client, server)
    client.send_data(sid, b"x" * 4 * KiB, end_stream=True)
    deliver(client, server)
    server.acknowledge_received_data(sid, 4 * KiB)
    assert all(
        not isinstance(f, WindowUpdateFrame) or f.stream_id == 0
        for f in RawPeer().receive_from(server)
    )


def test_settings_initial_window_size_adjusts_open_streams() -> None:
    conn = Connection(Role.CLIENT)
    peer = RawPeer()
    peer.receive_from(conn)
    peer.send_to(conn, SettingsFrame((SettingsEntry(SettingsId.INITIAL_WINDOW_SIZE, 10000),)))
    peer.send_to(conn, WindowUpdateFrame(0, 10 * MiB))
    sid = conn.open_stream()
    peer.send_to(conn, SynReplyFrame(sid, Headers()))
    conn.send_data(sid, b"x" * 4000)
    assert conn.sendable(sid) == 6000
    peer.send_to(conn, SettingsFrame((SettingsEntry(SettingsId.INITIAL_WINDOW_SIZE, 20000),)))
    assert conn.sendable(sid) == 16000
    peer.send_to(conn, SettingsFrame((SettingsEntry(SettingsId.INITIAL_WINDOW_SIZE, 1000),)))
    assert conn.sendable(sid) == 0  # the window is now negative: -3000
    later = conn.open_stream()
    assert conn.sendable(later) == 1000


def test_a_stalled_stream_does_not_stall_the_others() -> None:
    client, server = pair(server_options={"initial_window": 64 * KiB})
    slow, fast = open_stream(client, server), open_stream(client, server)
    client.send_data(slow, b"s" * 64 * KiB)
    deliver(client, server)  # never acknowledged
    for _ in range(10):
        client.send_data(fast, b"f" * 64 * KiB)
        assert received(deliver(client, server)) == 64 * KiB
        server.acknowledge_received_data(fast, 64 * KiB)
        deliver(server, client)
    assert client.sendable(slow) == 0
    assert client.sendable(fast) == 64 * KiB


# --- a spdystream-like peer: windows are not enforced -----------------------------------


def test_a_peer_that_never_announced_never_stalls_our_sender() -> None:
    conn = Connection(Role.CLIENT, initial_window=64 * KiB)
    peer = RawPeer()  # like Go spdystream: no SETTINGS, no WINDOW_UPDATE
    peer.receive_from(conn)
    sid = conn.open_stream()
    peer.send_to(conn, SynReplyFrame(sid, Headers()))
    assert not conn.peer_flow_control
    total = 0
    for _ in range(16):
        assert conn.sendable(sid) == MAX_WINDOW
        conn.send_data(sid, b"x" * MiB)
        total += sum(len(f.data) for f in peer.receive_from(conn) if isinstance(f, DataFrame))
    assert total == 16 * MiB


def test_we_accept_data_beyond_our_window_from_a_peer_that_never_announced() -> None:
    conn = Connection(Role.SERVER, initial_window=16 * KiB, session_window=SPDY_DEFAULT_WINDOW)
    peer = RawPeer()
    peer.receive_from(conn)
    peer.send_to(conn, SynStreamFrame(1, Headers()))
    conn.send_reply(1)
    total = 0
    for _ in range(64):  # 4 MiB on a 16 KiB window and a 64 KiB session, no credit
        total += received(peer.send_to(conn, DataFrame(1, b"y" * 64 * KiB)))
    assert total == 4 * MiB


def test_a_spdystream_like_connection_never_stalls_a_muxstream_sender() -> None:
    # announce=False: the client says nothing about windows, so the server's
    # sender is never limited, and the client does not police what it never
    # announced (nor send WINDOW_UPDATE, which would announce flow control).
    client, server = pair(client_options={"announce": False})
    assert client.peer_flow_control and not server.peer_flow_control
    sid = open_stream(client, server)
    total = 0
    for _ in range(40):  # 10 MiB: beyond every default window, never acknowledged
        assert server.sendable(sid) == MAX_WINDOW
        server.send_data(sid, b"z" * 256 * KiB)
        total += received(deliver(server, client))
    assert total == 10 * MiB
    client.acknowledge_received_data(sid, total)
    assert client.data_to_send() == b""  # no WINDOW_UPDATE: it never announced
    assert not server.peer_flow_control


def test_a_spdystream_like_connection_ignores_a_muxstream_receivers_windows() -> None:
    # ...and the muxstream receiver, which never heard an announcement, accepts it.
    client, server = pair(
        client_options={"announce": False}, server_options={"initial_window": 64 * KiB}
    )
    sid = open_stream(client, server)
    assert client.sendable(sid) == MAX_WINDOW
    client.send_data(sid, b"a" * 4 * MiB)
    assert received(deliver(client, server)) == 4 * MiB
    assert not server.peer_flow_control


# --- the order in which queued frames leave ------------------------------------------------


def stalled_sender() -> tuple[Connection, RawPeer, int]:
    """A server (1 MiB stream windows) with DATA queued on stream 1 (opened, replied)."""
    conn = Connection(Role.SERVER, initial_window=1 << 20)
    peer = RawPeer()
    peer.receive_from(conn)
    peer.send_to(conn, SynStreamFrame(1, Headers()), SynStreamFrame(3, Headers()))
    conn.send_reply(1)
    conn.send_reply(3)
    peer.receive_from(conn)
    conn.send_data(1, b"d" * 1000)
    return conn, peer, 1


def test_ping_echo_leaves_before_queued_data() -> None:
    conn, peer, sid = stalled_sender()
    peer.send_to(conn, PingFrame(7))
    assert peer.receive_from(conn) == [PingFrame(7), DataFrame(sid, b"d" * 1000)]


def test_our_ping_leaves_before_queued_data() -> None:
    conn, peer, sid = stalled_sender()
    pid = conn.ping()
    assert peer.receive_from(conn) == [PingFrame(pid), DataFrame(sid, b"d" * 1000)]


def test_window_update_leaves_before_queued_data() -> None:
    conn, peer, sid = stalled_sender()
    peer.send_to(conn, WindowUpdateFrame(0, 1))  # the peer announces flow control
    peer.send_to(conn, DataFrame(3, b"u" * 300 * KiB))
    conn.acknowledge_received_data(3, 300 * KiB)
    frames = peer.receive_from(conn)
    assert frames[0] == WindowUpdateFrame(3, 300 * KiB)
    assert frames[-1] == DataFrame(sid, b"d" * 1000)


def test_rst_of_another_stream_leaves_before_queued_data() -> None:
    conn, peer, sid = stalled_sender()
    conn.reset_stream(3, RstStatus.CANCEL)
    assert peer.receive_from(conn) == [RstStreamFrame(3, RstStatus.CANCEL),
                                       DataFrame(sid, b"d" * 1000)]


def test_graceful_goaway_stays_behind_queued_data() -> None:
    # spdystream stops reading at GOAWAY: anything after it would be lost
    conn, peer, sid = stalled_sender()
    conn.go_away()
    assert peer.receive_from(conn) == [DataFrame(sid, b"d" * 1000), GoAwayFrame(3, GoAwayStatus.OK)]


def test_urgent_goaway_goes_first() -> None:
    conn, peer, sid = stalled_sender()
    conn.go_away(GoAwayStatus.INTERNAL_ERROR, urgent=True)
    assert peer.receive_from(conn) == [
        GoAwayFrame(3, GoAwayStatus.INTERNAL_ERROR),
        DataFrame(sid, b"d" * 1000),
    ]


def test_ordered_reset_follows_the_streams_data_and_fin() -> None:
    conn, peer, sid = stalled_sender()
    conn.end_stream(sid)
    conn.reset_stream(sid, RstStatus.CANCEL, ordered=True)
    assert peer.receive_from(conn) == [
        DataFrame(sid, b"d" * 1000, Flag.FIN),  # FIN rides on the queued DATA
        RstStreamFrame(sid, RstStatus.CANCEL),
    ]


def test_buffers_to_send_bounds_ordered_bytes_but_not_urgent_ones() -> None:
    conn, peer, sid = stalled_sender()
    conn.send_data(sid, b"e" * 300 * KiB)  # split at max_send_frame (128 KiB)
    conn.ping()
    queued = conn.ordered_bytes
    assert queued == 1000 + 300 * KiB + 4 * 8
    first = conn.buffers_to_send(1)
    # every urgent frame, then at least one ordered entry (a DATA frame is two
    # buffers, header and payload, that are never separated)
    assert len(first) == 3
    assert peer.decode(bytes(first[0])) == [PingFrame(2)]
    rest = b"".join(bytes(b) for b in conn.buffers_to_send())
    assert conn.ordered_bytes == 0 and not conn.has_data_to_send
    data = peer.decode(b"".join(bytes(b) for b in first[1:]) + rest)
    assert b"".join(f.data for f in data if isinstance(f, DataFrame)) == (
        b"d" * 1000 + b"e" * 300 * KiB
    )


def test_large_data_is_split_at_max_send_frame_without_copying() -> None:
    conn, _peer, sid = stalled_sender()
    conn.data_to_send()
    payload = b"p" * (300 * KiB)
    conn.send_data(sid, payload, end_stream=True)
    bufs = conn.buffers_to_send()
    views = [b for b in bufs if isinstance(b, memoryview)]
    assert [len(v) for v in views] == [128 * KiB, 128 * KiB, 44 * KiB]
    assert all(v.obj is payload for v in views)  # slices of the caller's bytes


# --- nothing follows RST_STREAM on the wire ------------------------------------------------


def frames_for(frames: list[Frame], sid: int) -> list[Frame]:
    return [f for f in frames if getattr(f, "stream_id", None) == sid]


def test_an_abortive_reset_discards_the_streams_queued_frames() -> None:
    conn, peer, sid = stalled_sender()
    conn.send_data(3, b"k" * 500)
    conn.send_headers(sid, {"trailer": "x"}, end_stream=True)
    before = conn.ordered_bytes
    conn.reset_stream(sid, RstStatus.CANCEL)
    assert conn.ordered_bytes == before - (8 + 1000)  # its DATA went; HEADERS counted 0
    frames = peer.receive_from(conn)
    assert frames == [RstStreamFrame(sid, RstStatus.CANCEL), DataFrame(3, b"k" * 500)]
    assert conn.ordered_bytes == 0


def test_a_muxstream_peer_sees_no_protocol_error_after_our_abortive_reset() -> None:
    client, server = pair()
    sid = open_stream(client, server)
    client.send_data(sid, b"x" * 1000)
    client.reset_stream(sid)
    # (DATA after the RST used to reach the peer, which answered it with
    # RST STREAM_ALREADY_CLOSED and a RemoteProtocolError)
    assert deliver(client, server) == [StreamReset(sid, RstStatus.CANCEL, remote=True)]
    assert server.data_to_send() == b""


def test_a_peers_reset_discards_our_queued_frames_for_that_stream() -> None:
    conn, peer, sid = stalled_sender()
    conn.send_data(3, b"k" * 10)
    peer.send_to(conn, RstStreamFrame(sid, RstStatus.CANCEL))
    assert conn.ordered_bytes == 8 + 10
    assert peer.receive_from(conn) == [DataFrame(3, b"k" * 10)]


def test_a_stream_error_discards_our_queued_frames_for_that_stream() -> None:
    conn, peer, sid = stalled_sender()
    peer.send_to(conn, DataFrame(1, b"end", Flag.FIN))
    with pytest.raises(RemoteProtocolError):
        peer.send_to(conn, DataFrame(1, b"after fin"))
    assert peer.receive_from(conn) == [RstStreamFrame(sid, RstStatus.STREAM_ALREADY_CLOSED)]


def test_goaway_discards_queued_frames_of_the_streams_it_refuses() -> None:
    conn = Connection(Role.CLIENT)
    peer = RawPeer()
    peer.receive_from(conn)
    sid = conn.open_stream()
    conn.send_data(sid, b"early")  # before the reply: allowed on our own stream
    events = peer.send_to(conn, GoAwayFrame(0, GoAwayStatus.OK))
    assert StreamReset(sid, RstStatus.REFUSED_STREAM, remote=True) in events
    assert frames_for(peer.receive_from(conn), sid) == [SynStreamFrame(sid, Headers({}))]


def test_ordered_bytes_track_what_is_queued_exactly() -> None:
    conn, peer, sid = stalled_sender()
    conn.send_headers(sid, {"a": "b"})
    conn.send_data(sid, b"x" * 10)
    conn.go_away()
    assert conn.ordered_bytes == 8 + 1000 + 0 + 8 + 10 + 16
    conn.buffers_to_send(1)  # one DATA frame: header and payload together
    assert conn.ordered_bytes == 0 + 8 + 10 + 16
    conn.buffers_to_send(1)  # the HEADERS frame: counted 0 when queued, 0 when sent
    assert conn.ordered_bytes == 8 + 10 + 16
    conn.buffers_to_send(1)
    assert conn.ordered_bytes == 16
    peer.receive_from(conn)
    assert conn.ordered_bytes == 0


def test_discarded_data_gives_its_session_window_back() -> None:
    # The peer never receives discarded DATA, so it will never credit it back: the
    # sender must restore its session window itself, or every abortive reset with
    # queued data would shrink the session for good.
    client, server = pair(server_options={"initial_window": 64 * KiB, "session_window": 65536})
    a, b = open_stream(client, server), open_stream(client, server)
    assert client.their_session_window == 64 * KiB
    client.send_data(a, b"x" * 60 * KiB)
    assert client.sendable(b) == 4 * KiB
    client.reset_stream(a)
    assert client.their_session_window == 64 * KiB
    assert client.sendable(b) == 64 * KiB
    client.send_data(b, b"y" * 64 * KiB)
    assert received(deliver(client, server)) == 64 * KiB  # no FLOW_CONTROL_ERROR


def test_urgent_frames_never_split_a_data_frame_from_its_payload() -> None:
    """Regression: a batch limit that fell between a DATA header and its payload let
    the next batch put a PING echo in between, corrupting the stream (seen against Go)."""
    from muxstream.protocol import Connection, DataReceived, PingAcked, PingReceived, Role

    c = Connection(Role.CLIENT, announce=False)
    s = Connection(Role.SERVER, announce=False)
    sid = c.open_stream({"streamtype": "data"})
    s.receive_data(c.data_to_send())
    s.send_reply(sid)
    c.receive_data(s.data_to_send())
    c.send_data(sid, bytes(1 << 20))
    total = 0
    for limit in (1, 7, 8, 9, 8 + 131072 + 1, 8 + 131072 + 8):
        wire = b"".join(c.buffers_to_send(limit))
        pid = c.ping()
        wire += b"".join(c.buffers_to_send(limit))
        events = s.receive_data(wire)  # raised "DATA frame on stream 0" before the fix
        assert all(isinstance(e, DataReceived | PingReceived) for e in events)
        total += sum(len(e.data) for e in events if isinstance(e, DataReceived))
        assert PingAcked(pid) in c.receive_data(s.data_to_send())
    rest = s.receive_data(c.data_to_send())
    total += sum(len(e.data) for e in rest if isinstance(e, DataReceived))
    assert total == 1 << 20


def test_received_data_survives_the_reuse_of_the_read_buffer() -> None:
    # receive_data only borrows its argument: a reader that receives into one
    # buffer and passes memoryviews of it may overwrite it at once.
    client, server = pair()
    sid = open_stream(client, server)
    client.send_data(sid, b"first" * 1000)
    client.send_data(sid, b"second" * 1000)
    wire = client.data_to_send()
    buffer = bytearray(4096)
    events: list[Event] = []
    for start in range(0, len(wire), 4096):
        n = len(wire[start : start + 4096])
        buffer[:n] = wire[start : start + 4096]
        events += server.receive_data(memoryview(buffer)[:n])
        buffer[:] = b"\xff" * len(buffer)
    data = b"".join(e.data for e in events if isinstance(e, DataReceived))
    assert data == b"first" * 1000 + b"second" * 1000
    assert all(type(e.data) is bytes for e in events if isinstance(e, DataReceived))
