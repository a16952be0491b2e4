"""Hostile input: whatever bytes arrive, the decoder and the connection produce
events or :class:`RemoteProtocolError` -- never IndexError, struct.error,
zlib.error, UnicodeDecodeError or MemoryError -- with bounded work and memory,
and what they queue in answer can always be encoded."""

from __future__ import annotations

import itertools
import struct
import tracemalloc
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muxstream.protocol import (
    SPDY3_DICTIONARY,
    Connection,
    DataFrame,
    DataReceived,
    Flag,
    Frame,
    FrameDecoder,
    GoAwayFrame,
    GoAwayStatus,
    HeaderCompressor,
    HeaderDecompressor,
    Headers,
    HeadersFrame,
    LocalProtocolError,
    PingFrame,
    RemoteProtocolError,
    Role,
    RstStreamFrame,
    SettingsEntry,
    SettingsFrame,
    StreamOpened,
    SynReplyFrame,
    SynStreamFrame,
    UnknownControlFrame,
    WindowUpdateFrame,
    encode_frame,
    encode_header_block,
)
from muxstream.testing import RawPeer

# --- drivers ------------------------------------------------------------------------------


def drive_decoder(chunks: list[bytes], decoder: FrameDecoder | None = None) -> list[Frame]:
    """Feed ``chunks``; resume after stream errors, stop at a session error."""
    dec = decoder or FrameDecoder()
    frames: list[Frame] = []
    for chunk in chunks:
        dec.receive(chunk)
        while True:
            try:
                frame = dec.next_frame()
            except RemoteProtocolError as exc:
                if exc.fatal:
                    with pytest.raises(RemoteProtocolError):
                        dec.next_frame()  # a broken stream stays broken
                    return frames
                continue
            if frame is None:
                break
            frames.append(frame)
    return frames


def drive_connection(conn: Connection, chunks: list[bytes]) -> None:
    """Feed ``chunks`` to ``conn`` acting like an application: accept every stream,
    answer it, consume what arrives. Everything ``conn`` queues must encode."""
    for chunk in chunks:
        data: bytes = chunk
        while True:
            try:
                events = conn.receive_data(data)
            except RemoteProtocolError as exc:
                assert exc.fatal or exc.stream_id is not None
                events, error = exc.events, exc
            else:
                error = None
            for ev in events:
                react(conn, ev)
            conn.data_to_send()  # raises if anything queued cannot be encoded
            if error is None:
                break
            if error.fatal:
                assert conn.terminated is error
                with pytest.raises(RemoteProtocolError):
                    conn.receive_data(b"")
                return
            data = b""  # a stream error: resume parsing what was already fed


def react(conn: Connection, ev: object) -> None:
    try:
        if isinstance(ev, StreamOpened):
            conn.send_reply(ev.stream_id, {"status": "ok"})
            conn.send_data(ev.stream_id, b"hello")
        elif isinstance(ev, DataReceived):
            conn.acknowledge_received_data(ev.stream_id, len(ev.data))
    except LocalProtocolError:
        pass  # e.g. a stream the peer opened half-closed: ours to refuse, not a crash


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# --- arbitrary bytes ------------------------------------------------------------------------

# Bytes that look like frames often enough to reach past the header checks.
frame_like = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [
                b"\x80\x03\x00\x01",
                b"\x80\x03\x00\x02",
                b"\x80\x03\x00\x04",
                b"\x80\x03\x00\x06\x00\x00\x00\x04",
                b"\x80\x03\x00\x09\x00\x00\x00\x08",
                b"\x00\x00\x00\x01\x00\x00\x00\x05",
                b"\x00\x00\x00\x02\x01\x00\x00\x00",
                b"\x78\xbb\xe3\xc6\xa7\xc2",
                b"\x00\x00\xff\xff",
            ]
        ),
    ),
    max_size=20,
).map(b"".join)


@given(st.one_of(st.binary(max_size=2000), frame_like), st.lists(st.integers(0, 4000)))
def test_random_bytes_only_make_frames_or_remote_errors(data: bytes, cuts: list[int]) -> None:
    drive_decoder(split(data, cuts))


@given(
    st.one_of(st.binary(max_size=2000), frame_like),
    st.lists(st.integers(0, 4000)),
    st.sampled_from([Role.CLIENT, Role.SERVER]),
)
def test_random_bytes_only_make_events_or_remote_errors(
    data: bytes, cuts: list[int], role: Role
) -> None:
    conn = Connection(role)
    conn.data_to_send()
    drive_connection(conn, split(data, cuts))


# --- plausible frames with hostile fields -------------------------------------------------------

small_ids = st.integers(0, 9)
any_ids = st.one_of(small_ids, st.integers(0, 2**31 - 1))
hostile_frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(
        DataFrame,
        small_ids.map(lambda i: max(i, 1)),
        st.binary(max_size=100) | st.just(b"x" * 70000),
        st.sampled_from([Flag.NONE, Flag.FIN]),
    ),
    st.builds(
        SynStreamFrame,
        any_ids.map(lambda i: max(i, 1)),
        st.just(Headers({"streamtype": "stdin"})),
        st.sampled_from([Flag.NONE, Flag.FIN, Flag.UNIDIRECTIONAL, Flag(3)]),
        any_ids,
    ),
    st.builds(
        SynReplyFrame,
        small_ids.map(lambda i: max(i, 1)),
        st.just(Headers()),
        st.sampled_from([Flag.NONE, Flag.FIN]),
    ),
    st.builds(
        HeadersFrame,
        small_ids.map(lambda i: max(i, 1)),
        st.just(Headers({"a": "b"})),
        st.sampled_from([Flag.NONE, Flag.FIN]),
    ),
    st.builds(RstStreamFrame, small_ids.map(lambda i: max(i, 1)), st.integers(0, 20)),
    st.builds(
        SettingsFrame,
        st.lists(
            st.builds(
                SettingsEntry,
                st.integers(0, 9),
                st.sampled_from([0, 1, 1000, 65535, 2**31 - 1, 2**31, 2**32 - 1]),
            ),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(PingFrame, st.integers(0, 12)),
    st.builds(GoAwayFrame, any_ids, st.integers(0, 3)),
    st.builds(WindowUpdateFrame, small_ids, st.sampled_from([1, 1000, 2**30, 2**31 - 1])),
    st.builds(UnknownControlFrame, st.integers(10, 20), st.integers(0, 255), st.binary(max_size=9)),
)


@settings(max_examples=150)
@given(
    st.lists(hostile_frames, max_size=25),
    st.lists(st.integers(0, 100_000), max_size=10),
    st.sampled_from([Role.CLIENT, Role.SERVER]),
    st.booleans(),
)
def test_hostile_frame_sequences_only_make_events_or_remote_errors(
    seq: list[Frame], cuts: list[int], role: Role, small_limits: bool
) -> None:
    options = (
        {"initial_window": 1000, "session_window": 1, "max_concurrent_streams": 2}
        if small_limits
        else {}
    )
    conn = Connection(role, **options)  # type: ignore[arg-type]
    conn.data_to_send()
    comp = HeaderCompressor()
    wire = b"".join(encode_frame(f, comp) for f in seq)
    drive_connection(conn, split(wire, cuts))


def transcript() -> bytes:
    """What a client writes in a typical session (announcement, streams, data, pings)."""
    client = Connection(Role.CLIENT)
    server = RawPeer()
    out = [client.data_to_send()]
    for i in range(3):
        sid = client.open_stream({"streamtype": ["stdin", "stdout", "error"][i], "n": str(i)})
        out.append(client.data_to_send())
        server.send_to(client, SynReplyFrame(sid, Headers()))  # only the client's bytes count
        client.send_data(sid, bytes(range(200)), end_stream=i == 2)
        client.ping()
        out.append(client.data_to_send())
    client.go_away()
    out.append(client.data_to_send())
    return b"".join(out)


TRANSCRIPT = transcript()


@settings(max_examples=150)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "set", "insert", "delete"]),
            st.integers(0, len(TRANSCRIPT) - 1),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, len(TRANSCRIPT)),
    st.lists(st.integers(0, 4000), max_size=8),
)
def test_mutated_transcripts_only_make_events_or_remote_errors(
    edits: list[tuple[str, int, int]], truncate: int, cuts: list[int]
) -> None:
    data = bytearray(TRANSCRIPT)
    for kind, pos, value in edits:
        pos %= len(data) or 1
        if kind == "flip" and data:
            data[pos] ^= 1 << (value % 8)
        elif kind == "set" and data:
            data[pos] = value
        elif kind == "insert":
            data[pos:pos] = bytes([value])
        elif kind == "delete" and data:
            del data[pos]
    wire = bytes(data[: max(truncate, len(data) // 2)])
    conn = Connection(Role.SERVER)
    conn.data_to_send()
    drive_connection(conn, split(wire, cuts))
    drive_decoder(split(wire, cuts))


def test_the_unmutated_transcript_is_accepted() -> None:
    # (so the mutation test starts from something valid)
    conn = Connection(Role.SERVER)
    events = conn.receive_data(TRANSCRIPT)
    assert sum(isinstance(e, StreamOpened) for e in events) == 3


# --- bounded memory ------------------------------------------------------------------------------


def peak_memory(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "header",
    [
        "80030001 00ffffff",  # SYN_STREAM of 16 MiB
        "80030004 00ffffff",  # SETTINGS of 16 MiB
        "8003ffff 00ffffff",  # an unknown control type of 16 MiB
        "00000001 00ffffff",  # DATA of 16 MiB
    ],
)
def test_length_fields_allocate_nothing_up_front(header: str) -> None:
    dec = FrameDecoder()

    def feed() -> None:
        for _ in range(100):
            dec.receive(bytes.fromhex(header) + bytes(1000))
            try:
                while dec.next_frame() is not None:
                    pass
            except RemoteProtocolError:
                return

    assert peak_memory(feed) < 512 * 1024


def test_settings_with_a_huge_count_is_rejected_without_work() -> None:
    wire = bytes.fromhex("80030004 00000004 ffffffff")
    with pytest.raises(RemoteProtocolError) as info:
        list(drive_decoder_strict(wire))
    assert info.value.fatal


def drive_decoder_strict(wire: bytes) -> list[Frame]:
    dec = FrameDecoder()
    dec.receive(wire)
    out = []
    while (frame := dec.next_frame()) is not None:
        out.append(frame)
    return out


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(struct.pack(">I", 2**32 - 1), id="count-2**32-1"),
        pytest.param(struct.pack(">I", 257) + bytes(257 * 8), id="count-over-limit"),
        pytest.param(struct.pack(">II", 1, 2**32 - 1), id="name-length-2**32-1"),
        pytest.param(struct.pack(">II", 1, 1) + b"x" + struct.pack(">I", 99), id="value-past-end"),
        pytest.param(struct.pack(">II", 1, 0) + struct.pack(">I", 0), id="empty-name"),
        pytest.param(struct.pack(">II", 1, 1) + b"\xff" + struct.pack(">I", 0), id="not-utf8"),
        pytest.param(struct.pack(">II", 1, 1) + b"x" + struct.pack(">I", 0) + b"!", id="trailing"),
        pytest.param(b"\x00\x00", id="short"),
    ],
)
def test_bad_header_blocks_are_session_errors(raw: bytes) -> None:
    block = zlib.compressobj(zdict=SPDY3_DICTIONARY)
    compressed = block.compress(raw) + block.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(RemoteProtocolError) as info:
        HeaderDecompressor().decompress(compressed)
    assert info.value.fatal
    assert info.value.goaway_status == GoAwayStatus.PROTOCOL_ERROR


# --- header-block bombs ---------------------------------------------------------------------------


def bomb(inflated_size: int) -> bytes:
    """One compressed header block that inflates to ``inflated_size`` bytes (a
    single header whose value is that long), primed with the SPDY dictionary
    like any real block. Deflate tops out near 1032:1, so 8 KiB inflate to 8 MiB
    and 256 KiB -- about the largest control frame we accept -- to 256 MiB."""
    # Z_RLE reaches the same ratio on a run as level 9, several times faster.
    comp = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_RLE, zdict=SPDY3_DICTIONARY)
    parts = [comp.compress(struct.pack(">II", 1, 1) + b"x" + struct.pack(">I", inflated_size))]
    chunk = b"a" * (1 << 20)
    for _ in range(inflated_size >> 20):
        parts.append(comp.compress(chunk))
    parts.append(comp.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(parts)


@pytest.fixture(scope="module")
def big_bomb() -> bytes:
    return bomb(250 << 20)


def test_a_small_bomb_fails_fast_without_being_inflated() -> None:
    block = bomb(8 << 20)
    assert len(block) < 10 * 1024
    dec = HeaderDecompressor()  # limit: 256 KiB

    def inflate() -> None:
        with pytest.raises(RemoteProtocolError) as info:
            dec.decompress(block)
        assert info.value.fatal

    assert peak_memory(inflate) < 2 * 1024 * 1024


def test_a_bomb_in_a_syn_stream_is_a_session_error_within_small_memory(big_bomb: bytes) -> None:
    # ~250 KiB on the wire that would inflate to 250 MiB: it fits in one control
    # frame, so only the inflation bound stops it.
    assert len(big_bomb) < 256 * 1024
    syn = struct.pack(">IIBB", 1, 0, 0, 0) + big_bomb
    wire = struct.pack(">II", 0x80030001, len(syn)) + syn
    conn = Connection(Role.SERVER)
    conn.data_to_send()

    def receive() -> None:
        with pytest.raises(RemoteProtocolError) as info:
            conn.receive_data(wire)
        assert info.value.fatal
        assert info.value.goaway_status == GoAwayStatus.PROTOCOL_ERROR

    assert peak_memory(receive) < 4 * 1024 * 1024
    frames = drive_decoder_strict(conn.data_to_send())
    assert frames == [GoAwayFrame(0, GoAwayStatus.PROTOCOL_ERROR)]


def test_a_bomb_in_small_chunks_is_bounded_too(big_bomb: bytes) -> None:
    syn = struct.pack(">IIBB", 1, 0, 0, 0) + big_bomb
    wire = struct.pack(">II", 0x80030001, len(syn)) + syn
    conn = Connection(Role.SERVER, max_header_block=4096, max_control_frame=len(syn))

    def receive() -> None:
        with pytest.raises(RemoteProtocolError):
            for start in range(0, len(wire), 4096):
                conn.receive_data(wire[start : start + 4096])

    assert peak_memory(receive) < 4 * 1024 * 1024


def test_legitimate_blocks_up_to_the_limit_still_decode() -> None:
    headers = Headers({"authorization": "b" * 200_000})
    assert len(encode_header_block(headers)) < 256 * 1024
    dec = HeaderDecompressor()
    assert dec.decompress(HeaderCompressor().compress(headers)) == headers
