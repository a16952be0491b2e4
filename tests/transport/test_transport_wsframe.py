"""WebSocket data frames of our own (_wsframe): what wsproto reads, and what it would refuse.

The builder's frames are parsed by wsproto, the parser reads wsproto's frames
(fragmented messages with control frames in between, cut anywhere), every
framing violation wsproto refuses is refused with the same close code, and the
compiled masking and builder equal their Python twins byte for byte.
"""

from __future__ import annotations

import itertools
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Ping
from wsproto.frame_protocol import FrameProtocol

from muxstream.transport._wsframe import (
    FIN,
    OP_BINARY,
    FrameParseError,
    FrameReader,
    Item,
    mask,
    py_mask,
    py_ws_frame,
    ws_frame,
)

KEYS = st.binary(min_size=4, max_size=4)


def frame(first: int, payload: bytes, *, masked: bool, length_bytes: int | None = None) -> bytes:
    """A frame built by hand, optionally with a (too) long length encoding."""
    n = len(payload)
    bit = 0x80 if masked else 0
    size = length_bytes if length_bytes is not None else (0 if n < 126 else 2 if n < 65536 else 8)
    if size == 0:
        head = bytes([first, bit | n])
    elif size == 2:
        head = bytes([first, bit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + py_mask(payload, key)


def parse_all(
    reader: FrameReader, chunks: list[bytes]
) -> tuple[list[Item], FrameParseError | None]:
    items: list[Item] = []
    for chunk in chunks:
        got, error = reader.parse(chunk)
        items += got
        if error is not None:
            return items, error
    return items, None


def cut(data: bytes, points: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# -- building ------------------------------------------------------------------------------


@settings(max_examples=80)
@given(payload=st.one_of(st.binary(max_size=300), st.sampled_from([b"x" * 65535, b"y" * 65536])),
       key=st.one_of(st.none(), KEYS))
def test_our_frames_are_what_wsproto_reads(payload: bytes, key: bytes | None) -> None:
    wire = ws_frame(FIN | OP_BINARY, payload, key)
    peer = Connection(ConnectionType.SERVER if key is not None else ConnectionType.CLIENT)
    peer.receive_data(wire)
    events = list(peer.events())
    assert len(events) == 1 and isinstance(events[0], BytesMessage)
    assert events[0].data == payload and events[0].message_finished


@settings(max_examples=200)
@given(data=st.binary(max_size=200), key=KEYS, phase=st.integers(-9, 9),
       first=st.integers(0, 255), masked=st.booleans())
def test_compiled_masking_and_framing_equal_python(
    data: bytes, key: bytes, phase: int, first: int, masked: bool
) -> None:
    # Imported directly: runs with MUXSTREAM_NO_ACCEL=1 too, whenever it is built.
    speedups = pytest.importorskip("muxstream._speedups")
    for buffer in (data, bytearray(data), memoryview(data)):
        assert speedups.mask(buffer, key, phase) == py_mask(buffer, key, phase)
    k = key if masked else None
    assert speedups.ws_frame(first, data, k) == py_ws_frame(first, data, k)
    big = data * 400  # past both length encodings
    assert speedups.ws_frame(first, big, k) == py_ws_frame(first, big, k)
    with pytest.raises(ValueError):
        speedups.mask(data, key[:3])
    with pytest.raises(ValueError):
        speedups.ws_frame(256, data)


def test_masking_is_its_own_inverse_at_any_offset() -> None:
    data, key = os.urandom(1001), os.urandom(4)
    masked = mask(data, key)
    # Unmasking in two pieces: the second starts at key byte 333 % 4.
    assert mask(masked[:333], key) + mask(masked[333:], key, 333) == data


# -- parsing -------------------------------------------------------------------------------


@settings(max_examples=80)
@given(
    messages=st.lists(st.lists(st.binary(max_size=200), min_size=1, max_size=3), max_size=5),
    pings=st.lists(st.binary(max_size=125), max_size=3),
    points=st.lists(st.integers(0, 10_000), max_size=10),
    client=st.booleans(),
)
def test_reader_reads_fragmented_messages_with_control_frames_between(
    messages: list[list[bytes]], pings: list[bytes], points: list[int], client: bool
) -> None:
    # The peer is wsproto (masking iff it is a client, i.e. iff we are not).
    peer = FrameProtocol(not client, [])
    wire = b""
    controls: list[bytes] = []
    for i, fragments in enumerate(messages):
        for j, fragment in enumerate(fragments):
            wire += bytes(peer.send_data(fragment, fin=j == len(fragments) - 1))
            if i < len(pings) and j == 0:  # a control frame inside a fragmented message
                control = bytes(peer.ping(pings[i]))
                controls.append(control)
                wire += control
    items, error = parse_all(FrameReader(client=client), cut(wire, points))
    assert error is None
    got, current, done = [], b"", []
    for kind, payload, ends in items:
        if kind == "control":
            done.append(payload)
            continue
        current += payload
        if ends:
            got.append(current)
            current = b""
    assert got == [b"".join(m) for m in messages]
    assert done == controls
    # wsproto reads the control frames the reader hands back.
    conn = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
    for control in done:
        conn.receive_data(control)
    assert [e.payload for e in conn.events() if isinstance(e, Ping)] == pings[: len(done)]


def test_reader_hands_out_an_unmasked_chunk_that_is_all_payload_as_is() -> None:
    reader = FrameReader(client=True)
    payload = os.urandom(100_000)
    wire = frame(FIN | OP_BINARY, payload, masked=False)
    items, _ = reader.parse(wire[:10])
    assert items == []
    rest = wire[10:]
    items, _ = reader.parse(rest)
    assert items == [("data", payload, True)] and items[0][1] is rest


@pytest.mark.parametrize(
    ("wire", "code", "reason"),
    [
        (frame(0x82, b"x" * 10, masked=True, length_bytes=2), 1002, "used 2 bytes"),
        (frame(0x82, b"x" * 300, masked=True, length_bytes=8), 1002, "used 8 bytes"),
        (bytes([0x82, 0xFF]) + b"\x80" + bytes(7) + bytes(4), 1002, "non-zero MSB"),
        (frame(0xC2, b"rsv1", masked=True), 1002, "Reserved bit"),
        (frame(0x02, b"a", masked=True) + frame(0x82, b"b", masked=True), 1002,
         "expected CONTINUATION"),
        (frame(0x80, b"orphan", masked=True), 1002, "unexpected CONTINUATION"),
        (bytes([0x89, 0x80 | 126, 0, 200]) + bytes(4), 1002, "Control frame with payload"),
        (frame(0x09, b"p", masked=True), 1002, "fragment control frame"),
        (frame(0x83, b"?", masked=True), 1002, "Invalid opcode 0x3"),
        (frame(0x82, b"unmasked", masked=False), 1002, "unexpected unmasked frame"),
        (frame(0x81, b"text", masked=True), 1003, "text message"),
    ],
)
def test_reader_refuses_what_wsproto_refuses(wire: bytes, code: int, reason: str) -> None:
    for chunks in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        _, error = parse_all(FrameReader(client=False), chunks)
        assert error is not None
        assert (error.code, reason in error.reason) == (code, True)
        # wsproto agrees that it is a violation, with the same code.
        if code == 1002:
            conn = Connection(ConnectionType.SERVER)
            conn.receive_data(wire)
            closes = [e.code for e in conn.events() if not isinstance(e, BytesMessage)]
            assert closes == [1002]


def test_reader_delivers_what_came_before_an_error_and_nothing_after() -> None:
    reader = FrameReader(client=False)
    good = frame(0x82, b"good", masked=True)
    items, error = reader.parse(good + frame(0x83, b"bad", masked=True) + good)
    assert items == [("data", b"good", True)] and error is not None
    assert reader.done and reader.parse(good) == ([], None)


def test_reader_ignores_everything_after_a_close_frame() -> None:
    reader = FrameReader(client=True)
    close = frame(0x88, b"\x03\xe8", masked=False)
    items, error = reader.parse(close + frame(0x82, b"late", masked=False))
    assert (items, error) == ([("control", close, False)], None)
    assert reader.done
