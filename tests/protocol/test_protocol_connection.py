"""The connection state machine: local verbs, peer frames, ids, pings, GOAWAY.

Two kinds of peer appear here: another :class:`Connection` (a muxstream peer),
and a hand-driven "raw" peer that writes frames with its own header compressor
and reads ours with a :class:`FrameDecoder` (a stand-in for Go spdystream, and a
way to send frames a well-behaved Connection never would).
"""

from __future__ import annotations

import pytest

from muxstream.protocol import (
    MAX_STREAM_ID,
    Connection,
    DataFrame,
    DataReceived,
    Event,
    Flag,
    Frame,
    GoAwayFrame,
    GoAwayReceived,
    GoAwayStatus,
    HeaderCompressor,
    Headers,
    HeadersFrame,
    HeadersReceived,
    LocalProtocolError,
    PingAcked,
    PingFrame,
    PingReceived,
    RemoteProtocolError,
    ReplyReceived,
    Role,
    RstStatus,
    RstStreamFrame,
    SettingsFrame,
    SettingsReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamState,
    SynReplyFrame,
    SynStreamFrame,
    UnknownControlFrame,
    WindowUpdateFrame,
)
from muxstream.testing import RawPeer

# --- helpers -------------------------------------------------------------------


def client_with_raw_server(**options: object) -> tuple[Connection, RawPeer]:
    conn = Connection(Role.CLIENT, **options)  # type: ignore[arg-type]
    peer = RawPeer()
    peer.receive_from(conn)  # the announcement
    return conn, peer


def server_with_raw_client(**options: object) -> tuple[Connection, RawPeer]:
    conn = Connection(Role.SERVER, **options)  # type: ignore[arg-type]
    peer = RawPeer()
    peer.receive_from(conn)
    return conn, peer


def deliver(src: Connection, dst: Connection) -> list[Event]:
    return dst.receive_data(src.data_to_send())


def connected_pair(**options: object) -> tuple[Connection, Connection]:
    """A client and a server that have exchanged their announcements."""
    client = Connection(Role.CLIENT, **options)  # type: ignore[arg-type]
    server = Connection(Role.SERVER, **options)  # type: ignore[arg-type]
    deliver(client, server)
    deliver(server, client)
    return client, server


def open_replied_stream(client: Connection, server: Connection, **kw: object) -> int:
    sid = client.open_stream({"streamtype": "stdin"}, **kw)  # type: ignore[arg-type]
    (opened, *_) = deliver(client, server)
    assert isinstance(opened, StreamOpened)
    server.send_reply(sid)
    (reply,) = deliver(server, client)
    assert isinstance(reply, ReplyReceived)
    return sid


def peer_stream(conn: Connection, peer: RawPeer, sid: int = 1, flags: Flag = Flag.NONE) -> int:
    """The raw client opens stream ``sid`` on the server ``conn``, which replies."""
    events = peer.send_to(conn, SynStreamFrame(sid, Headers({"a": "b"}), flags))
    assert isinstance(events[0], StreamOpened)
    conn.send_reply(sid)
    peer.receive_from(conn)
    return sid


# --- ids ---------------------------------------------------------------------------


def test_client_stream_ids_are_odd_and_server_ids_even() -> None:
    client, server = connected_pair()
    assert [client.open_stream() for _ in range(3)] == [1, 3, 5]
    assert [server.open_stream() for _ in range(3)] == [2, 4, 6]


def test_client_ping_ids_are_odd_and_server_ping_ids_even() -> None:
    client, server = connected_pair()
    assert [client.ping() for _ in range(3)] == [1, 3, 5]
    assert [server.ping() for _ in range(3)] == [2, 4, 6]


def test_stream_ids_run_out_at_2_to_the_31() -> None:
    client, _ = connected_pair()
    client._next_stream_id = MAX_STREAM_ID  # skip ahead: 2**30 streams take too long
    assert client.open_stream() == MAX_STREAM_ID
    with pytest.raises(LocalProtocolError):
        client.open_stream()


def test_ping_ids_wrap_within_32_bits_keeping_parity() -> None:
    client, server = connected_pair()
    client._next_ping_id = 0xFFFFFFFF
    server._next_ping_id = 0xFFFFFFFE
    assert client.ping() == 0xFFFFFFFF
    assert client.ping() == 1
    assert server.ping() == 0xFFFFFFFE
    assert server.ping() == 2


# --- the stream state table ---------------------------------------------------------


def test_stream_states_through_a_full_exchange() -> None:
    client, server = connected_pair()
    sid = open_replied_stream(client, server)
    assert client.stream_state(sid) is StreamState.OPEN
    assert server.stream_state(sid) is StreamState.OPEN

    client.send_data(sid, b"up", end_stream=True)
    assert client.stream_state(sid) is StreamState.HALF_CLOSED_LOCAL
    assert deliver(client, server) == [DataReceived(sid, b"up"), StreamEnded(sid)]
    assert server.stream_state(sid) is StreamState.HALF_CLOSED_REMOTE

    server.send_data(sid, b"down", end_stream=True)
    assert server.stream_state(sid) is StreamState.CLOSED
    assert deliver(server, client) == [DataReceived(sid, b"down"), StreamEnded(sid)]
    assert client.stream_state(sid) is StreamState.CLOSED
    assert client.open_streams == server.open_streams == 0


def test_opening_with_fin_starts_half_closed() -> None:
    client, server = connected_pair()
    sid = client.open_stream({"a": "b"}, end_stream=True)
    assert client.stream_state(sid) is StreamState.HALF_CLOSED_LOCAL
    events = deliver(client, server)
    assert events == [StreamOpened(sid, Headers({"a": "b"}), ended=True), StreamEnded(sid)]
    assert server.stream_state(sid) is StreamState.HALF_CLOSED_REMOTE


def test_unidirectional_streams_start_half_closed_for_the_side_that_may_not_send() -> None:
    client, server = connected_pair()
    sid = client.open_stream(unidirectional=True)
    assert client.stream_state(sid) is StreamState.HALF_CLOSED_REMOTE
    (opened,) = deliver(client, server)
    assert isinstance(opened, StreamOpened) and opened.unidirectional
    assert server.stream_state(sid) is StreamState.HALF_CLOSED_LOCAL
    with pytest.raises(LocalProtocolError):
        server.send_data(sid, b"x")


def test_reply_with_fin_half_closes_the_replier() -> None:
    client, server = connected_pair()
    sid = client.open_stream()
    deliver(client, server)
    server.send_reply(sid, {"status": "done"}, end_stream=True)
    assert server.stream_state(sid) is StreamState.HALF_CLOSED_LOCAL
    assert deliver(server, client) == [
        ReplyReceived(sid, Headers({"status": "done"}), ended=True),
        StreamEnded(sid),
    ]
    assert client.stream_state(sid) is StreamState.HALF_CLOSED_REMOTE


def test_headers_travel_in_order_and_can_end_the_stream() -> None:
    client, server = connected_pair()
    sid = open_replied_stream(client, server)
    client.send_data(sid, b"body")
    client.send_headers(sid, {"trailer": ["1", "2"]}, end_stream=True)
    assert deliver(client, server) == [
        DataReceived(sid, b"body"),
        HeadersReceived(sid, Headers({"trailer": ["1", "2"]}), ended=True),
        StreamEnded(sid),
    ]


def test_reset_by_us_removes_the_stream_and_tells_the_peer() -> None:
    client, server = connected_pair()
    sid = open_replied_stream(client, server)
    client.reset_stream(sid, RstStatus.CANCEL)
    assert client.stream_state(sid) is StreamState.CLOSED
    assert client.sendable(sid) == 0
    assert deliver(client, server) == [StreamReset(sid, RstStatus.CANCEL, remote=True)]
    assert server.open_streams == 0
    with pytest.raises(LocalProtocolError):
        server.send_data(sid, b"too late")
    client.reset_stream(sid)  # a second reset is a no-op
    assert client.data_to_send() == b""


def test_frames_crossing_our_reset_are_dropped_silently() -> None:
    client, server = connected_pair()
    sid = open_replied_stream(client, server)
    server.send_data(sid, b"in flight", end_stream=True)
    client.reset_stream(sid)
    # the server's DATA was already on the wire when our RST left
    assert deliver(server, client) == []
    # only our own RST goes out: the late DATA is not answered with another one
    assert RawPeer().receive_from(client) == [RstStreamFrame(sid, RstStatus.CANCEL)]


# --- illegal local actions ------------------------------------------------------------


def assert_unchanged_after(conn: Connection, action: object) -> None:
    """The action raises LocalProtocolError and queues nothing (call with nothing queued)."""
    conn.data_to_send()
    with pytest.raises(LocalProtocolError):
        action()  # type: ignore[operator]
    assert conn.data_to_send() == b""


def test_data_on_an_unknown_stream_is_refused() -> None:
    client, _ = connected_pair()
    assert_unchanged_after(client, lambda: client.send_data(1, b"x"))
    assert_unchanged_after(client, lambda: client.send_data(2, b"x"))


def test_data_on_a_closed_stream_is_refused() -> None:
    client, server = connected_pair()
    sid = open_replied_stream(client, server)
    client.end_stream(sid)
    server.end_stream(sid)
    deliver(client, server)
    deliver(server, client)
    assert client.stream_state(sid) is StreamState.CLOSED
    assert_unchanged_after(client, lambda: client.send_data(sid, b"x"))
    assert_unchanged_after(client, lambda: client.end_stream(sid))


def test_data_after_our_fin_is_refused() -> None:
    client, server = connected_pair()
    sid = open_replied_stream(client, server)
    client.send_data(sid, b"last", end_stream=True)
    client.data_to_send()
    assert_unchanged_after(client, lambda: client.send_data(sid, b"more"))
    assert_unchanged_after(client, lambda: client.send_headers(sid, {"a": "b"}))


def test_data_on_a_peer_stream_needs_a_reply_first() -> None:
    client, server = connected_pair()
    sid = client.open_stream()
    deliver(client, server)
    assert_unchanged_after(server, lambda: server.send_data(sid, b"early"))
    server.send_reply(sid)
    server.send_data(sid, b"now")
    assert deliver(server, client)[-1] == DataReceived(sid, b"now")


def test_no_new_streams_after_goaway_either_way() -> None:
    client, server = connected_pair()
    client.go_away()
    deliver(client, server)
    assert_unchanged_after(client, lambda: client.open_stream())
    assert server.goaway_received
    assert_unchanged_after(server, lambda: server.open_stream())


def test_a_stream_is_replied_at_most_once_and_only_by_its_acceptor() -> None:
    client, server = connected_pair()
    sid = client.open_stream()
    deliver(client, server)
    server.send_reply(sid)
    server.data_to_send()
    assert_unchanged_after(server, lambda: server.send_reply(sid))
    assert_unchanged_after(client, lambda: client.send_reply(sid))


@pytest.mark.parametrize("priority", [-1, 8, 100])
def test_priority_must_be_0_to_7(priority: int) -> None:
    client, _ = connected_pair()
    assert_unchanged_after(client, lambda: client.open_stream(priority=priority))
    assert client.open_stream(priority=7) == 1  # no id was consumed by the failures


def test_nul_in_a_header_value_is_refused_before_anything_is_queued() -> None:
    client, server = connected_pair()
    assert_unchanged_after(client, lambda: client.open_stream({"a": "x\x00y"}))
    sid = client.open_stream({"a": "fine"})
    assert sid == 1
    deliver(client, server)
    assert_unchanged_after(server, lambda: server.send_reply(sid, {"a": ["ok", "n\x00o"]}))
    server.send_reply(sid)
    deliver(server, client)
    assert_unchanged_after(client, lambda: client.send_headers(sid, {"b": "\x00"}))


def test_verbs_on_a_terminated_connection_raise() -> None:
    conn, peer = client_with_raw_server()
    sid = conn.open_stream()
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"\x80\x02\x00\x01\x00\x00\x00\x00")  # SPDY/2: session error
    conn.data_to_send()
    for action in (
        lambda: conn.open_stream(),
        lambda: conn.send_data(sid, b"x"),
        lambda: conn.ping(),
        lambda: conn.reset_stream(sid),
    ):
        assert_unchanged_after(conn, action)
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"")
    del peer


# --- illegal peer frames ----------------------------------------------------------------


def expect_stream_error(
    conn: Connection, peer: RawPeer, frames: list[Frame], sid: int, status: RstStatus
) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        peer.send_to(conn, *frames)
    exc = info.value
    assert not exc.fatal
    assert exc.stream_id == sid
    assert exc.rst_status == status
    assert exc.goaway_status is None
    assert RstStreamFrame(sid, status) in peer.receive_from(conn)
    assert conn.terminated is None
    return exc


def expect_session_error(
    conn: Connection,
    peer: RawPeer,
    wire: bytes,
    *,
    last_good: int = 0,
    status: GoAwayStatus = GoAwayStatus.PROTOCOL_ERROR,
) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(wire)
    exc = info.value
    assert exc.fatal
    assert exc.goaway_status == status
    assert conn.terminated is exc
    frames = peer.receive_from(conn)
    assert frames[-1] == GoAwayFrame(last_good, status)
    # nothing more is accepted
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"")
    return exc


def test_data_on_an_unknown_stream_is_invalid_stream() -> None:
    conn, peer = server_with_raw_client()
    expect_stream_error(conn, peer, [DataFrame(1, b"x")], 1, RstStatus.INVALID_STREAM)
    conn, peer = client_with_raw_server()
    expect_stream_error(conn, peer, [DataFrame(1, b"x")], 1, RstStatus.INVALID_STREAM)


def test_data_on_a_closed_stream_is_stream_already_closed() -> None:
    conn, peer = server_with_raw_client()
    sid = peer_stream(conn, peer, 1, Flag.FIN)
    conn.end_stream(sid)
    peer.receive_from(conn)
    assert conn.stream_state(sid) is StreamState.CLOSED
    expect_stream_error(conn, peer, [DataFrame(sid, b"x")], sid, RstStatus.STREAM_ALREADY_CLOSED)


def test_data_after_the_peers_fin_is_stream_already_closed() -> None:
    conn, peer = server_with_raw_client()
    sid = peer_stream(conn, peer)
    assert peer.send_to(conn, DataFrame(sid, b"end", Flag.FIN)) == [
        DataReceived(sid, b"end"),
        StreamEnded(sid),
    ]
    expect_stream_error(conn, peer, [DataFrame(sid, b"x")], sid, RstStatus.STREAM_ALREADY_CLOSED)
    assert conn.stream_state(sid) is StreamState.CLOSED


def test_headers_after_the_peers_fin_is_stream_already_closed() -> None:
    conn, peer = server_with_raw_client()
    sid = peer_stream(conn, peer, 1, Flag.FIN)
    expect_stream_error(
        conn, peer, [HeadersFrame(sid, Headers())], sid, RstStatus.STREAM_ALREADY_CLOSED
    )


def test_duplicate_syn_stream_is_stream_in_use() -> None:
    conn, peer = server_with_raw_client()
    sid = peer_stream(conn, peer)
    expect_stream_error(conn, peer, [SynStreamFrame(sid, Headers())], sid, RstStatus.STREAM_IN_USE)


def test_syn_stream_with_a_decreasing_id_is_a_session_error() -> None:
    conn, peer = server_with_raw_client()
    peer_stream(conn, peer, 5)
    conn.reset_stream(5)
    peer.receive_from(conn)
    expect_session_error(conn, peer, peer.encode(SynStreamFrame(3, Headers())), last_good=5)


@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_syn_stream_with_our_parity_is_a_session_error(role: Role) -> None:
    conn = Connection(role)
    peer = RawPeer()
    peer.receive_from(conn)
    own_parity = 1 if role is Role.CLIENT else 2
    expect_session_error(conn, peer, peer.encode(SynStreamFrame(own_parity, Headers())))


def test_duplicate_or_misdirected_syn_reply_is_stream_in_use() -> None:
    conn, peer = client_with_raw_server()
    sid = conn.open_stream()
    peer.receive_from(conn)
    assert peer.send_to(conn, SynReplyFrame(sid, Headers())) == [ReplyReceived(sid, Headers())]
    expect_stream_error(conn, peer, [SynReplyFrame(sid, Headers())], sid, RstStatus.STREAM_IN_USE)

    conn, peer = server_with_raw_client()
    sid = peer_stream(conn, peer)
    # a SYN_REPLY for a stream the *peer* opened
    expect_stream_error(conn, peer, [SynReplyFrame(sid, Headers())], sid, RstStatus.STREAM_IN_USE)


def test_syn_reply_for_a_stream_we_never_opened_is_invalid_stream() -> None:
    conn, peer = client_with_raw_server()
    expect_stream_error(conn, peer, [SynReplyFrame(9, Headers())], 9, RstStatus.INVALID_STREAM)


def test_data_beyond_the_stream_window_from_a_flow_controlled_peer() -> None:
    conn, peer = server_with_raw_client(initial_window=1000)
    peer.send_to(conn, SettingsFrame())  # any frame; flow control is announced by the next one
    peer.send_to(conn, WindowUpdateFrame(0, 1))
    assert conn.peer_flow_control
    sid = peer_stream(conn, peer)
    assert peer.send_to(conn, DataFrame(sid, b"x" * 1000)) == [DataReceived(sid, b"x" * 1000)]
    expect_stream_error(conn, peer, [DataFrame(sid, b"y")], sid, RstStatus.FLOW_CONTROL_ERROR)


def test_data_beyond_the_session_window_from_a_flow_controlled_peer() -> None:
    # A session window below the SPDY default is not announced (it cannot shrink),
    # so the limit is the 64 KiB default; two streams share it.
    conn, peer = server_with_raw_client(initial_window=1 << 20, session_window=65536)
    peer.send_to(conn, WindowUpdateFrame(0, 1))
    a = peer_stream(conn, peer, 1)
    b = peer_stream(conn, peer, 3)
    peer.send_to(conn, DataFrame(a, b"x" * 40000))
    peer.send_to(conn, DataFrame(b, b"x" * 25536))
    assert conn.our_session_window == 0
    expect_session_error(conn, peer, peer.encode(DataFrame(a, b"!")), last_good=3)


def test_stream_window_overflow_is_flow_control_error() -> None:
    conn, peer = server_with_raw_client()
    sid = peer_stream(conn, peer)
    expect_stream_error(
        conn, peer, [WindowUpdateFrame(sid, MAX_STREAM_ID)], sid, RstStatus.FLOW_CONTROL_ERROR
    )


def test_session_window_overflow_is_a_session_error() -> None:
    conn, peer = server_with_raw_client()
    expect_session_error(conn, peer, peer.encode(WindowUpdateFrame(0, MAX_STREAM_ID)))


def test_zero_window_update_is_an_error() -> None:
    # WINDOW_UPDATE with a zero delta cannot be *encoded* by us; write it by hand.
    conn, peer = server_with_raw_client()
    sid = peer_stream(conn, peer)
    zero = b"\x80\x03\x00\x09\x00\x00\x00\x08" + sid.to_bytes(4, "big") + b"\x00\x00\x00\x00"
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(zero)
    assert info.value.rst_status == RstStatus.PROTOCOL_ERROR
    zero_session = b"\x80\x03\x00\x09\x00\x00\x00\x08" + bytes(8)
    expect_session_error(conn, peer, zero_session, last_good=sid)


def test_settings_window_above_2_to_the_31_is_a_session_error() -> None:
    conn, peer = server_with_raw_client()
    wire = bytes.fromhex("80030004 0000000c 00000001 00000007 80000000")
    expect_session_error(conn, peer, wire)


def control(ftype: int, payload: bytes, flags: int = 0, version: int = 3) -> bytes:
    head = bytes.fromhex(f"{0x8000 | version:04x}{ftype:04x}{flags:02x}{len(payload):06x}")
    return head + payload


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(control(3, bytes(12)), id="RST_STREAM-12"),
        pytest.param(control(3, bytes(4)), id="RST_STREAM-4"),
        pytest.param(control(6, bytes(8)), id="PING-8"),
        pytest.param(control(6, b""), id="PING-0"),
        pytest.param(control(7, bytes(4)), id="GOAWAY-4"),
        pytest.param(control(7, bytes(12)), id="GOAWAY-12"),
        pytest.param(control(9, bytes(7)), id="WINDOW_UPDATE-7"),
        pytest.param(control(1, bytes(9)), id="SYN_STREAM-short"),
        pytest.param(control(2, bytes(3)), id="SYN_REPLY-short"),
        pytest.param(control(8, bytes(3)), id="HEADERS-short"),
        pytest.param(control(4, bytes(3)), id="SETTINGS-short"),
        pytest.param(control(4, bytes.fromhex("00000002") + bytes(8)), id="SETTINGS-count"),
        pytest.param(control(6, bytes(4), version=2), id="version-2"),
        pytest.param(control(6, bytes(4), version=4), id="version-4"),
        pytest.param(bytes(8), id="DATA-stream-0"),
        pytest.param(
            control(2, b"\x00\x00\x00\x01" + b"not zlib at all"), id="corrupt-header-block"
        ),
    ],
)
def test_malformed_frames_are_session_errors(wire: bytes) -> None:
    conn, peer = client_with_raw_server()
    expect_session_error(conn, peer, wire)


def test_oversized_control_frame_is_refused_before_it_is_buffered() -> None:
    conn, peer = client_with_raw_server(max_header_block=4096)
    # the header alone announces 5 KiB + 1: refused at once, nothing buffered
    head = bytes.fromhex("80030002 00001401")
    expect_session_error(conn, peer, head)
    assert conn._decoder.buffered == 0


def test_oversized_data_frame_is_frame_too_large_and_skipped() -> None:
    conn, peer = server_with_raw_client(max_data_frame=1024)
    sid = peer_stream(conn, peer)
    wire = peer.encode(DataFrame(sid, b"x" * 2000), PingFrame(9))
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(wire)
    assert info.value.rst_status == RstStatus.FRAME_TOO_LARGE
    assert not info.value.fatal
    # the payload is skipped, and parsing resumes with the next frame
    assert conn.receive_data(b"") == [PingReceived(9)]
    assert RstStreamFrame(sid, RstStatus.FRAME_TOO_LARGE) in peer.receive_from(conn)


def test_unknown_control_frames_are_ignored() -> None:
    conn, peer = client_with_raw_server()
    assert peer.send_to(conn, UnknownControlFrame(0xFF, 0, b"?" * 10), PingFrame(2)) == [
        PingReceived(2)
    ]


def test_rst_and_window_update_for_closed_streams_are_ignored() -> None:
    conn, peer = server_with_raw_client()
    assert peer.send_to(conn, RstStreamFrame(7, RstStatus.CANCEL), WindowUpdateFrame(7, 5)) == []
    assert peer.receive_from(conn) == []


def test_a_fatal_error_drops_queued_data_and_sends_goaway_with_the_last_good_id() -> None:
    conn, peer = server_with_raw_client()
    sid = peer_stream(conn, peer, 3)
    conn.send_data(sid, b"x" * 1000)
    exc = expect_session_error(conn, peer, control(6, bytes(5)), last_good=3)
    assert exc.events == []
    assert conn.open_streams == 0


# --- the resume-after-stream-error contract ------------------------------------------------


def test_events_before_a_stream_error_ride_on_the_exception_and_parsing_resumes() -> None:
    conn, peer = server_with_raw_client()
    sid = peer_stream(conn, peer)
    wire = peer.encode(
        DataFrame(sid, b"before"),
        DataFrame(99, b"nobody"),  # unknown stream: RST INVALID_STREAM
        DataFrame(sid, b"after"),
        PingFrame(5),
        DataFrame(101, b"again"),  # a second error in the same chunk
        DataFrame(sid, b"end", Flag.FIN),
    )
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(wire)
    assert info.value.events == [DataReceived(sid, b"before")]
    assert info.value.stream_id == 99
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(b"")
    assert info.value.events == [DataReceived(sid, b"after"), PingReceived(5)]
    assert info.value.stream_id == 101
    assert conn.receive_data(b"") == [DataReceived(sid, b"end"), StreamEnded(sid)]
    assert conn.receive_data(b"") == []
    frames = peer.receive_from(conn)
    assert RstStreamFrame(99, RstStatus.INVALID_STREAM) in frames
    assert RstStreamFrame(101, RstStatus.INVALID_STREAM) in frames
    assert PingFrame(5) in frames


def test_the_rest_of_a_bad_data_frame_is_dropped_quietly() -> None:
    # A DATA frame on an unknown stream arriving in pieces: one RST, one error.
    conn, peer = server_with_raw_client()
    wire = peer.encode(DataFrame(5, b"z" * 100), PingFrame(3))
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(wire[:20])
    assert conn.receive_data(b"") == []
    assert conn.receive_data(wire[20:]) == [PingReceived(3)]
    assert [f for f in peer.receive_from(conn) if isinstance(f, RstStreamFrame)] == [
        RstStreamFrame(5, RstStatus.INVALID_STREAM)
    ]


def test_new_bytes_may_follow_an_error_without_an_empty_call() -> None:
    conn, peer = server_with_raw_client()
    wire = peer.encode(DataFrame(5, b"z"), PingFrame(3))
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(wire)
    assert conn.receive_data(peer.encode(PingFrame(5))) == [PingReceived(3), PingReceived(5)]


# --- pings -----------------------------------------------------------------------------------


def test_peer_pings_are_echoed_and_ours_matched() -> None:
    client, server = connected_pair()
    pid = server.ping()
    assert pid == 2
    assert deliver(server, client) == [PingReceived(2)]
    assert client.data_to_send() == bytes.fromhex("80030006 00000004 00000002")
    client.receive_data(b"")  # nothing pending
    pid = client.ping()
    assert deliver(client, server) == [PingReceived(pid)]
    assert deliver(server, client) == [PingAcked(pid)]


def test_unsolicited_echoes_of_our_parity_are_ignored() -> None:
    conn, peer = client_with_raw_server()
    assert peer.send_to(conn, PingFrame(7)) == []  # odd: ours, but we never sent 7
    assert peer.receive_from(conn) == []
    pid = conn.ping()
    peer.receive_from(conn)
    assert peer.send_to(conn, PingFrame(pid), PingFrame(pid)) == [PingAcked(pid)]


def test_server_ignores_even_pings_it_did_not_send() -> None:
    conn, peer = server_with_raw_client()
    assert peer.send_to(conn, PingFrame(2), PingFrame(3)) == [PingReceived(3)]
    assert peer.receive_from(conn) == [PingFrame(3)]


# --- GOAWAY ------------------------------------------------------------------------------------


def test_goaway_carries_the_last_stream_we_accepted() -> None:
    client, server = connected_pair()
    a = open_replied_stream(client, server)
    b = open_replied_stream(client, server)
    server.go_away()
    assert RawPeer().receive_from(server) == [GoAwayFrame(b, GoAwayStatus.OK)]
    assert server.goaway_sent
    del a


def test_goaway_resets_our_unreplied_streams_above_the_last_good_id() -> None:
    conn, peer = client_with_raw_server()
    s1, s3, s5, s7 = (conn.open_stream() for _ in range(4))
    peer.receive_from(conn)
    peer.send_to(conn, SynReplyFrame(s1, Headers()), SynReplyFrame(s7, Headers()))
    events = peer.send_to(conn, GoAwayFrame(s3, GoAwayStatus.OK))
    assert events == [
        GoAwayReceived(s3, GoAwayStatus.OK),
        StreamReset(s5, RstStatus.REFUSED_STREAM, remote=True),
    ]
    assert conn.peer_last_good_stream_id == s3
    assert conn.stream_state(s1) is StreamState.OPEN
    assert conn.stream_state(s3) is StreamState.OPEN  # processed, reply still to come
    assert conn.stream_state(s5) is StreamState.CLOSED
    assert conn.stream_state(s7) is StreamState.OPEN  # replied: the peer is handling it
    with pytest.raises(LocalProtocolError):
        conn.open_stream()


def test_streams_opened_after_our_goaway_are_refused() -> None:
    conn, peer = server_with_raw_client()
    peer_stream(conn, peer, 1)
    conn.go_away()
    assert peer.receive_from(conn) == [GoAwayFrame(1, GoAwayStatus.OK)]
    assert peer.send_to(conn, SynStreamFrame(3, Headers())) == []
    assert peer.receive_from(conn) == [RstStreamFrame(3, RstStatus.REFUSED_STREAM)]
    assert conn.last_good_peer_stream_id == 1
    # frames on the refused stream that were in flight are dropped quietly
    assert peer.send_to(conn, DataFrame(3, b"late")) == []
    # the stream that was accepted goes on
    assert peer.send_to(conn, DataFrame(1, b"ok")) == [DataReceived(1, b"ok")]


def test_go_away_is_idempotent() -> None:
    conn, peer = server_with_raw_client()
    conn.go_away()
    conn.go_away(GoAwayStatus.INTERNAL_ERROR)
    assert peer.receive_from(conn) == [GoAwayFrame(0, GoAwayStatus.OK)]


def test_streams_beyond_max_concurrent_streams_are_refused() -> None:
    conn, peer = server_with_raw_client(max_concurrent_streams=2)
    peer_stream(conn, peer, 1)
    peer_stream(conn, peer, 3)
    assert peer.send_to(conn, SynStreamFrame(5, Headers())) == []
    assert peer.receive_from(conn) == [RstStreamFrame(5, RstStatus.REFUSED_STREAM)]
    conn.reset_stream(1)
    peer.receive_from(conn)
    assert isinstance(peer.send_to(conn, SynStreamFrame(7, Headers()))[0], StreamOpened)


def test_peer_max_concurrent_streams_is_reported() -> None:
    client, _server = connected_pair(max_concurrent_streams=1)
    assert client.can_open_stream
    client.open_stream()
    assert not client.can_open_stream


def test_settings_are_reported_and_remembered() -> None:
    conn, peer = client_with_raw_server()
    assert peer.send_to(conn, SettingsFrame()) == [SettingsReceived({})]
    assert not conn.peer_flow_control  # SETTINGS without a window announce nothing


# --- regressions: frames from the peer must never make *our* output unencodable ------------


def test_a_peer_ping_with_id_0_is_echoed() -> None:
    # 0 is even, so it is a server's ping; a client echoes it. (The echo used to be
    # queued and then refused by the encoder, raising out of data_to_send.)
    conn, _peer = client_with_raw_server()
    assert conn.receive_data(control(6, bytes(4))) == [PingReceived(0)]
    assert conn.data_to_send() == control(6, bytes(4))


@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
@pytest.mark.parametrize("ftype", [2, 8], ids=["SYN_REPLY", "HEADERS"])
def test_reply_or_headers_on_stream_0_is_a_session_error(role: Role, ftype: int) -> None:
    # There is no RST_STREAM for stream 0. (One used to be queued, and then the
    # encoder refused it, raising LocalProtocolError out of data_to_send.)
    conn = Connection(role)
    peer = RawPeer()
    peer.receive_from(conn)
    block = HeaderCompressor().compress(Headers())
    expect_session_error(conn, peer, control(ftype, bytes(4) + block))


@pytest.mark.parametrize("status", [-1, 1 << 32])
def test_out_of_range_statuses_are_refused_when_queued_not_when_written(status: int) -> None:
    # (they used to be accepted, and then struct.error escaped from data_to_send)
    client, server = connected_pair()
    sid = open_replied_stream(client, server)
    assert_unchanged_after(client, lambda: client.reset_stream(sid, status))
    assert client.stream_state(sid) is StreamState.OPEN
    assert_unchanged_after(client, lambda: client.go_away(status))
    assert not client.goaway_sent


@pytest.mark.parametrize("assoc", [-1, 1 << 31])
def test_out_of_range_associated_stream_ids_are_refused_when_queued(assoc: int) -> None:
    client, _ = connected_pair()
    assert_unchanged_after(client, lambda: client.open_stream(associated_stream_id=assoc))
    assert client.open_stream(associated_stream_id=0) == 1


@pytest.mark.parametrize(
    "name", ["Connection", "keep-alive", "proxy-connection", "Transfer-Encoding"]
)
def test_connection_specific_headers_are_refused_locally(name: str) -> None:
    # spdystream ends the whole session on these (seen in tests/interop); refuse to send.
    from muxstream.protocol import Connection, LocalProtocolError, Role

    conn = Connection(Role.CLIENT)
    with pytest.raises(LocalProtocolError, match="connection-specific"):
        conn.open_stream({name: "x"})
    assert conn.open_streams == 0


# --- answers a peer can make us queue ------------------------------------------------------------


def test_ping_echoes_queued_beyond_the_limit_are_a_session_error() -> None:
    conn, peer = server_with_raw_client(max_queued_answers=10)
    flood = peer.encode(*(PingFrame(2 * i + 1) for i in range(11)))
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(flood)
    assert info.value.fatal
    assert len(info.value.events) == 11
    assert peer.receive_from(conn)[-1] == GoAwayFrame(0, GoAwayStatus.PROTOCOL_ERROR)


def test_handing_out_the_answers_resets_the_count() -> None:
    conn, peer = server_with_raw_client(max_queued_answers=10)
    for round_ in range(5):
        pings = [PingFrame(2 * (10 * round_ + i) + 1) for i in range(10)]
        assert len(peer.send_to(conn, *pings)) == 10
        assert conn.queued_answers == 10
        assert peer.receive_from(conn) == pings
        assert conn.queued_answers == 0


def test_resets_answering_the_peer_count_as_answers() -> None:
    conn, peer = server_with_raw_client(max_queued_answers=3)
    for sid in (1, 3, 5):
        with pytest.raises(RemoteProtocolError):
            peer.send_to(conn, DataFrame(sid, b"?"))
    assert conn.queued_answers == 3
    with pytest.raises(RemoteProtocolError) as info:
        peer.send_to(conn, DataFrame(7, b"?"))
    assert info.value.fatal


def test_headers_on_a_peer_stream_need_a_reply_first() -> None:
    # (HEADERS used to be accepted before send_reply)
    client, server = connected_pair()
    sid = client.open_stream()
    deliver(client, server)
    assert_unchanged_after(server, lambda: server.send_headers(sid, {"a": "b"}))
    server.send_reply(sid)
    server.send_headers(sid, {"a": "b"})
    assert deliver(server, client)[-1] == HeadersReceived(sid, Headers({"a": "b"}))
