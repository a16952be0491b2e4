"""FIN rides on the stream's last queued DATA frame when nothing follows it.

``send_data(x)`` then ``end_stream()`` is what ``send_all`` then ``send_eof``
do; while the DATA frame is still queued, the FIN flag is set on it instead of
queuing an empty DATA frame (one frame and one write fewer per short stream).
"""

from __future__ import annotations

from muxstream.protocol import Connection, DataReceived, Role, StreamEnded, StreamState
from muxstream.protocol._constants import Flag
from muxstream.protocol._frames import DataFrame, FrameDecoder


def _pair() -> tuple[Connection, Connection, int]:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    sid = client.open_stream({"x": "1"})
    server.receive_data(client.data_to_send())
    return client, server, sid


def _data_frames(wire: bytes) -> list[DataFrame]:
    dec = FrameDecoder()
    dec.receive(wire)
    frames = []
    while (frame := dec.next_frame()) is not None:
        if isinstance(frame, DataFrame):
            frames.append(frame)
    return frames


def test_fin_is_set_on_the_queued_data_frame() -> None:
    client, server, sid = _pair()
    client.send_data(sid, b"hello")
    client.end_stream(sid)
    wire = client.data_to_send()
    frames = _data_frames(wire)
    assert [(f.data, f.flags) for f in frames] == [(b"hello", Flag.FIN)]
    assert client.stream_state(sid) is StreamState.HALF_CLOSED_LOCAL
    events = server.receive_data(wire)
    assert [type(e) for e in events] == [DataReceived, StreamEnded]
    assert events[0].data == b"hello"  # type: ignore[attr-defined]


def test_fin_goes_alone_once_the_data_was_handed_out() -> None:
    client, _server, sid = _pair()
    client.send_data(sid, b"hello")
    first = client.data_to_send()
    client.end_stream(sid)
    frames = _data_frames(first + client.data_to_send())
    assert [(f.data, f.flags) for f in frames] == [(b"hello", Flag.NONE), (b"", Flag.FIN)]


def test_fin_goes_alone_when_another_frame_follows_the_data() -> None:
    client, server, sid = _pair()
    other = client.open_stream({"x": "2"})
    server.receive_data(client.data_to_send())  # the SYN_STREAM, out of the way
    client.send_data(sid, b"hello")
    client.send_data(other, b"world")
    client.end_stream(sid)
    frames = _data_frames(client.data_to_send())
    assert [(f.stream_id, f.data, f.flags) for f in frames] == [
        (sid, b"hello", Flag.NONE), (other, b"world", Flag.NONE), (sid, b"", Flag.FIN)]


def test_only_the_last_piece_of_a_split_send_carries_fin() -> None:
    client = Connection(Role.CLIENT, max_send_frame=4)
    server = Connection(Role.SERVER)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    sid = client.open_stream()
    client.send_data(sid, b"abcdefghij")
    client.end_stream(sid)
    frames = _data_frames(client.data_to_send())
    assert [(f.data, f.flags) for f in frames] == [
        (b"abcd", Flag.NONE), (b"efgh", Flag.NONE), (b"ij", Flag.FIN)]


def test_a_coalesced_fin_still_counts_window_and_bytes_once() -> None:
    client, server, sid = _pair()
    before = client.sendable(sid)
    client.send_data(sid, b"x" * 100)
    client.end_stream(sid)
    assert client.ordered_bytes == 8 + 100
    wire = client.data_to_send()
    assert len(_data_frames(wire)) == 1
    assert client.ordered_bytes == 0
    assert before - 100 >= 0
    events = server.receive_data(wire)
    assert sum(len(e.data) for e in events if isinstance(e, DataReceived)) == 100
