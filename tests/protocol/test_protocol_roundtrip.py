"""Property tests: any frame sequence encodes and decodes to itself, whatever the
chunk boundaries; the decoder copies DATA payloads once and never buffers them."""

from __future__ import annotations

import itertools
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from muxstream.protocol import (
    MAX_STREAM_ID,
    DataFrame,
    Flag,
    Frame,
    FrameDecoder,
    FrameType,
    GoAwayFrame,
    HeaderCompressor,
    Headers,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsEntry,
    SettingsFlag,
    SettingsFrame,
    SynReplyFrame,
    SynStreamFrame,
    UnknownControlFrame,
    WindowUpdateFrame,
    encode_frame,
)

u32 = st.integers(0, 0xFFFFFFFF)
stream_ids = st.integers(1, MAX_STREAM_ID)
# Connection-specific names are refused on output (spdystream ends the session on
# them); "host" too, which Go refuses in SYN_STREAM.
FORBIDDEN_NAMES = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "host"}
header_names = st.one_of(
    st.sampled_from(["streamtype", "port", "requestid", "x-stream-protocol-version"]),
    st.text(
        st.characters(blacklist_characters="\x00", blacklist_categories=("Cs", "Lu", "Lt")),
        min_size=1,
        max_size=12,
    ),
).filter(lambda s: s == s.lower() and s not in FORBIDDEN_NAMES)
header_values = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20
)
headers = st.dictionaries(
    header_names, st.lists(header_values, min_size=1, max_size=3), max_size=5
).map(Headers)
fin_flags = st.sampled_from([Flag.NONE, Flag.FIN])
syn_flags = st.sampled_from(
    [Flag.NONE, Flag.FIN, Flag.UNIDIRECTIONAL, Flag.FIN | Flag.UNIDIRECTIONAL]
)
known_types = {int(t) for t in FrameType}

frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(DataFrame, stream_ids, st.binary(max_size=300), fin_flags),
    st.builds(
        SynStreamFrame,
        stream_ids,
        headers,
        syn_flags,
        st.integers(0, MAX_STREAM_ID),
        st.integers(0, 7),
        st.integers(0, 255),
    ),
    st.builds(SynReplyFrame, stream_ids, headers, fin_flags),
    st.builds(HeadersFrame, stream_ids, headers, fin_flags),
    st.builds(RstStreamFrame, stream_ids, u32),
    st.builds(
        SettingsFrame,
        st.lists(
            st.builds(
                SettingsEntry,
                st.integers(0, 0xFFFFFF),
                u32,
                st.integers(0, 255).map(SettingsFlag),
            ),
            max_size=6,
        ).map(tuple),
        st.sampled_from([Flag.NONE, Flag.CLEAR_SETTINGS]),
    ),
    st.builds(PingFrame, u32),
    st.builds(GoAwayFrame, st.integers(0, MAX_STREAM_ID), u32),
    st.builds(WindowUpdateFrame, st.integers(0, MAX_STREAM_ID), st.integers(1, MAX_STREAM_ID)),
    st.builds(
        UnknownControlFrame,
        st.integers(0, 0xFFFF).filter(lambda t: t not in known_types),
        st.integers(0, 255),
        st.binary(max_size=40),
    ),
)


def encode_all(seq: list[Frame]) -> bytes:
    comp = HeaderCompressor()
    return b"".join(encode_frame(f, comp) for f in seq)


def decode_in_chunks(wire: bytes, cuts: list[int]) -> list[Frame]:
    """Feed ``wire`` split at ``cuts``; join the ``partial`` pieces of DATA frames."""
    dec = FrameDecoder()
    out: list[Frame] = []
    pieces: list[bytes] = []
    bounds = [0, *sorted(set(cuts)), len(wire)]
    for start, end in itertools.pairwise(bounds):
        # a bytearray the "reader" reuses: the decoder must not keep it
        chunk = bytearray(wire[start:end])
        dec.receive(chunk)
        while (frame := dec.next_frame()) is not None:
            if isinstance(frame, DataFrame):
                pieces.append(frame.data)
                if frame.partial:
                    continue
                frame = DataFrame(frame.stream_id, b"".join(pieces), frame.flags)
                pieces.clear()
            out.append(frame)
        chunk[:] = b"\xee" * len(chunk)  # reuse the buffer
    assert not pieces
    assert dec.buffered == 0
    return out


@given(st.lists(frames, max_size=12), st.data())
def test_any_frame_sequence_round_trips_under_any_chunking(
    seq: list[Frame], data: st.DataObject
) -> None:
    wire = encode_all(seq)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=30))
    assert decode_in_chunks(wire, cuts) == seq


@given(st.lists(frames, max_size=6))
def test_any_frame_sequence_round_trips_one_byte_at_a_time(seq: list[Frame]) -> None:
    wire = encode_all(seq)
    assert decode_in_chunks(wire, list(range(len(wire)))) == seq


@given(st.lists(frames, max_size=12))
def test_any_frame_sequence_round_trips_in_one_chunk(seq: list[Frame]) -> None:
    wire = encode_all(seq)
    assert decode_in_chunks(wire, []) == seq


def test_data_payload_is_a_fresh_bytes_copy() -> None:
    chunk = bytearray(encode_frame(DataFrame(1, b"payload", Flag.FIN)))
    dec = FrameDecoder()
    dec.receive(chunk)
    frame = dec.next_frame()
    assert isinstance(frame, DataFrame)
    assert type(frame.data) is bytes
    chunk[8:] = b"XXXXXXX"  # the reader reuses its receive buffer
    assert frame.data == b"payload"
    assert dec.next_frame() is None


def test_a_partial_data_piece_is_handed_out_as_soon_as_it_arrives() -> None:
    wire = encode_frame(DataFrame(7, b"abcdef", Flag.FIN))
    dec = FrameDecoder()
    dec.receive(wire[:11])  # header + "abc"
    assert dec.next_frame() == DataFrame(7, b"abc", Flag.NONE, partial=True)
    assert dec.next_frame() is None
    dec.receive(wire[11:])
    assert dec.next_frame() == DataFrame(7, b"def", Flag.FIN)
    assert dec.next_frame() is None


def test_decoder_never_buffers_data_payloads() -> None:
    # A 1 MiB DATA frame streams through in 1000-byte chunks: the decoder holds at
    # most a partial frame header between chunks, and its memory stays small.
    payload = bytes(range(256)) * 4096
    wire = encode_frame(DataFrame(1, payload, Flag.FIN))
    dec = FrameDecoder()
    received = 0
    buffer = bytearray(1000)
    tracemalloc.start()
    try:
        for start in range(0, len(wire), 1000):
            n = min(1000, len(wire) - start)
            buffer[:n] = wire[start : start + n]
            dec.receive(memoryview(buffer)[:n])
            while (frame := dec.next_frame()) is not None:
                assert isinstance(frame, DataFrame)
                assert frame.data == payload[received : received + len(frame.data)]
                received += len(frame.data)
            assert dec.buffered < 8
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == len(payload)
    # only the pieces in flight were ever allocated, never the 1 MiB payload
    assert peak < 64 * 1024
