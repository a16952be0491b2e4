"""The decoder's zero-copy path: the rest of a large DATA frame, received as one
``bytes`` object, is handed out as that very object."""

from __future__ import annotations

from muxstream.protocol import Connection, DataReceived, Role
from muxstream.protocol._frames import DataFrame, FrameDecoder, encode_data_header


def test_data_due_counts_the_rest_of_a_data_frame_once_the_chunk_is_used_up() -> None:
    dec = FrameDecoder()
    assert dec.data_due == 0
    frame = encode_data_header(1, 100_000) + bytes(range(256)) * 390 + bytes(160)
    dec.receive(memoryview(bytearray(frame[:30_000])))
    first = dec.next_frame()
    assert isinstance(first, DataFrame) and len(first.data) == 30_000 - 8
    assert dec.next_frame() is None
    assert dec.data_due == 100_000 - (30_000 - 8)
    rest = frame[30_000:]
    dec.receive(rest)
    second = dec.next_frame()
    assert isinstance(second, DataFrame)
    assert second.data is rest  # not copied
    assert first.data + second.data == frame[8:]
    assert dec.data_due == 0


def test_bytes_chunks_with_more_than_payload_are_still_copied_correctly() -> None:
    dec = FrameDecoder()
    frames = encode_data_header(1, 10) + b"0123456789" + encode_data_header(1, 5) + b"abcde"
    dec.receive(frames[:12])
    a = dec.next_frame()
    assert isinstance(a, DataFrame) and a.data == b"0123"
    assert dec.data_due == 6
    dec.receive(frames[12:])  # the rest, plus a whole second frame: no identity shortcut
    b = dec.next_frame()
    c = dec.next_frame()
    assert isinstance(b, DataFrame) and b.data == b"456789"
    assert isinstance(c, DataFrame) and c.data == b"abcde"
    assert dec.data_due == 0


def test_connection_read_hint_and_the_same_object_delivered() -> None:
    sender = Connection(Role.CLIENT)
    receiver = Connection(Role.SERVER)
    receiver.receive_data(sender.data_to_send())
    sid = sender.open_stream({"a": "b"})
    payload = bytes(range(256)) * 256
    sender.send_data(sid, payload)
    wire = sender.data_to_send()
    split = len(wire) - 40_000
    receiver.receive_data(bytearray(wire[:split]))
    assert receiver.read_hint == 40_000
    tail = wire[split:]
    events = receiver.receive_data(tail)
    pieces = [e for e in events if isinstance(e, DataReceived)]
    assert len(pieces) == 1 and pieces[0].data is tail
    assert receiver.read_hint == -8  # nothing due; after 64 KiB of DATA, a header alone


def test_read_hint_asks_for_a_header_alone_after_a_large_data_frame() -> None:
    from muxstream.protocol._frames import FRAME_HEADER_SIZE, LARGE_DATA

    dec = FrameDecoder()
    assert dec.read_hint == 0  # nothing seen yet: read all there is
    small = encode_data_header(1, 10) + bytes(10)
    dec.receive(small)
    assert dec.next_frame() is not None and dec.next_frame() is None
    assert dec.read_hint == 0  # after a small frame: read all there is
    big = encode_data_header(1, LARGE_DATA) + bytes(LARGE_DATA)
    dec.receive(big[:FRAME_HEADER_SIZE])
    assert dec.next_frame() is None
    assert dec.read_hint == LARGE_DATA  # its payload is due
    payload = big[FRAME_HEADER_SIZE:]
    dec.receive(payload)
    frame = dec.next_frame()
    assert isinstance(frame, DataFrame) and frame.data is payload
    assert dec.read_hint == -FRAME_HEADER_SIZE  # next: a header alone
    dec.receive(small[:3])  # a short read of that header
    assert dec.next_frame() is None
    assert dec.read_hint == 0  # partial header pending: read all there is
    dec.receive(small[3:])
    assert isinstance(dec.next_frame(), DataFrame)
    # one small frame among large ones (a sender's leftover) keeps the mode...
    assert dec.read_hint == -FRAME_HEADER_SIZE
    dec.receive(small)
    assert isinstance(dec.next_frame(), DataFrame)
    assert dec.read_hint == 0  # ...a second one in a row ends it: read all there is


def test_small_payloads_among_large_frames_are_read_directly() -> None:
    """A small payload due while large frames arrive (a large frame's tail, or a
    leftover frame) is asked for alone: read into the shared buffer, it would
    bring the next large frame along and that payload would be copied."""
    from muxstream.protocol._frames import DIRECT_READ, FRAME_HEADER_SIZE, LARGE_DATA

    dec = FrameDecoder()
    small = encode_data_header(1, 100) + bytes(100)
    dec.receive(small[:FRAME_HEADER_SIZE + 10])
    assert isinstance(dec.next_frame(), DataFrame) and dec.next_frame() is None
    assert dec.read_hint == 0  # small frames only: read all there is
    dec.receive(small[FRAME_HEADER_SIZE + 10:])
    assert isinstance(dec.next_frame(), DataFrame)
    big = encode_data_header(1, LARGE_DATA) + bytes(LARGE_DATA)
    dec.receive(big[: len(big) - 1000])  # a large frame, all but its last 1000 bytes
    while dec.next_frame() is not None:
        pass
    assert 1000 < DIRECT_READ and dec.read_hint == 1000  # its tail: alone
    tail = big[len(big) - 1000:]
    dec.receive(tail)
    frame = dec.next_frame()
    assert isinstance(frame, DataFrame) and frame.data is tail
    dec.receive(small[:FRAME_HEADER_SIZE])  # a leftover frame's header, read alone
    assert dec.next_frame() is None
    assert dec.read_hint == 100  # its payload: alone too
