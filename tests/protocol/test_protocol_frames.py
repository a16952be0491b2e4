"""Golden bytes for every SPDY/3 frame type, in both directions.

Every expected byte string below is written out by hand from the layouts in
draft-mbelshe-httpbis-spdy-00 section 2 (and docs/protocol.md), not produced by
the encoder under test:

    control: |1| version(15)=3 | type(16) | flags(8) | length(24) | payload
    data:    |0| stream id(31)            | flags(8) | length(24) | payload

Header blocks are compressed, and zlib's compressed output is not a fact of the
wire format (any valid deflate stream will do), so for header-bearing frames the
encode direction checks the fixed fields and inflates the block with an
independent zlib context; the decode direction feeds hand-made deflate *stored*
blocks, which are fully specified bytes.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest

from muxstream.protocol import (
    SPDY3_DICTIONARY,
    SPDY3_DICTIONARY_ADLER32,
    DataFrame,
    Flag,
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
    RstStatus,
    RstStreamFrame,
    SettingsEntry,
    SettingsFlag,
    SettingsFrame,
    SettingsId,
    SynReplyFrame,
    SynStreamFrame,
    UnknownControlFrame,
    WindowUpdateFrame,
    decode_header_block,
    encode_data_header,
    encode_frame,
    encode_header_block,
)


def h(text: str) -> bytes:
    """Hex with spaces and '|' separators, for readable golden bytes."""
    return bytes.fromhex(text.replace("|", " "))


def decode_all(data: bytes, decoder: FrameDecoder | None = None) -> list[object]:
    dec = decoder or FrameDecoder()
    dec.receive(data)
    frames = []
    while (frame := dec.next_frame()) is not None:
        frames.append(frame)
    assert dec.buffered == 0
    return frames


# --- the dictionary -------------------------------------------------------------


def test_dictionary_is_1423_bytes_with_the_spec_checksum() -> None:
    assert len(SPDY3_DICTIONARY) == 1423
    assert zlib.adler32(SPDY3_DICTIONARY) == 0xE3C6A7C2 == SPDY3_DICTIONARY_ADLER32


def test_dictionary_starts_and_ends_like_the_spec() -> None:
    # 2.6.10.1: it opens with the length-prefixed method names and closes with
    # the charset/q-value tail.
    assert SPDY3_DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert SPDY3_DICTIONARY.endswith(b"charset=utf-8charset=iso-8859-1,utf-,*,enq=0.")


GO_DICTIONARY = Path("/usr/share/gocode/src/github.com/moby/spdystream/spdy/dictionary.go")


@pytest.mark.skipif(not GO_DICTIONARY.exists(), reason="Go spdystream source not installed")
def test_dictionary_matches_go_spdystream_byte_for_byte() -> None:
    source = GO_DICTIONARY.read_text()
    body = source[source.index("headerDictionary = []byte{") :]
    body = body[: body.index("}")]
    go_bytes = bytes(int(x, 16) for x in re.findall(r"0x([0-9a-fA-F]{2})", body))
    assert go_bytes == SPDY3_DICTIONARY


# --- DATA -----------------------------------------------------------------------

DATA_CASES = [
    # stream 1, FIN, "hello"
    (DataFrame(1, b"hello", Flag.FIN), h("00 00 00 01 | 01 00 00 05 | 68 65 6c 6c 6f")),
    # the largest stream id, no flags, empty
    (DataFrame(0x7FFFFFFF, b""), h("7f ff ff ff | 00 00 00 00")),
    # a 24-bit length: 0x010203 bytes
    (DataFrame(3, b"\xaa" * 0x010203), h("00 00 00 03 | 00 01 02 03") + b"\xaa" * 0x010203),
]


@pytest.mark.parametrize(("frame", "wire"), DATA_CASES)
def test_data_frame_encodes_to_golden_bytes(frame: DataFrame, wire: bytes) -> None:
    assert encode_frame(frame) == wire


@pytest.mark.parametrize(("frame", "wire"), DATA_CASES)
def test_data_frame_decodes_from_golden_bytes(frame: DataFrame, wire: bytes) -> None:
    assert decode_all(wire) == [frame]


def test_data_header_for_scatter_gather_writes() -> None:
    assert encode_data_header(5, 0xFFFFFF, Flag.FIN) == h("00 00 00 05 | 01 ff ff ff")
    with pytest.raises(LocalProtocolError):
        encode_data_header(5, 1 << 24)
    with pytest.raises(LocalProtocolError):
        encode_data_header(0, 1)
    with pytest.raises(LocalProtocolError):
        encode_data_header(1 << 31, 1)


# --- fixed-size control frames ----------------------------------------------------

CONTROL_CASES = [
    (
        RstStreamFrame(5, RstStatus.CANCEL),
        h("80 03 00 03 | 00 00 00 08 | 00 00 00 05 | 00 00 00 05"),
    ),
    (
        RstStreamFrame(0x7FFFFFFF, RstStatus.FRAME_TOO_LARGE),
        h("80 03 00 03 | 00 00 00 08 | 7f ff ff ff | 00 00 00 0b"),
    ),
    (
        RstStreamFrame(2, RstStatus.STREAM_ALREADY_CLOSED),
        h("80 03 00 03 | 00 00 00 08 | 00 00 00 02 | 00 00 00 09"),
    ),
    (PingFrame(1), h("80 03 00 06 | 00 00 00 04 | 00 00 00 01")),
    (PingFrame(0xFFFFFFFE), h("80 03 00 06 | 00 00 00 04 | ff ff ff fe")),
    (GoAwayFrame(0), h("80 03 00 07 | 00 00 00 08 | 00 00 00 00 | 00 00 00 00")),
    (
        GoAwayFrame(7, GoAwayStatus.PROTOCOL_ERROR),
        h("80 03 00 07 | 00 00 00 08 | 00 00 00 07 | 00 00 00 01"),
    ),
    (
        GoAwayFrame(0x7FFFFFFF, GoAwayStatus.INTERNAL_ERROR),
        h("80 03 00 07 | 00 00 00 08 | 7f ff ff ff | 00 00 00 02"),
    ),
    (WindowUpdateFrame(0, 0x3F0000), h("80 03 00 09 | 00 00 00 08 | 00 00 00 00 | 00 3f 00 00")),
    (
        WindowUpdateFrame(3, 0x7FFFFFFF),
        h("80 03 00 09 | 00 00 00 08 | 00 00 00 03 | 7f ff ff ff"),
    ),
    (
        # an announcement: INITIAL_WINDOW_SIZE 1 MiB, MAX_CONCURRENT_STREAMS 1000
        SettingsFrame(
            (
                SettingsEntry(SettingsId.INITIAL_WINDOW_SIZE, 1 << 20),
                SettingsEntry(SettingsId.MAX_CONCURRENT_STREAMS, 1000),
            )
        ),
        h(
            "80 03 00 04 | 00 00 00 14 | 00 00 00 02"
            "| 00 00 00 07 | 00 10 00 00"
            "| 00 00 00 04 | 00 00 03 e8"
        ),
    ),
    (
        # FLAG_SETTINGS_CLEAR_SETTINGS, no entries
        SettingsFrame((), Flag.CLEAR_SETTINGS),
        h("80 03 00 04 | 01 00 00 04 | 00 00 00 00"),
    ),
    (
        # per-entry flags live in the top byte of the id word: PERSIST_VALUE, PERSISTED
        SettingsFrame(
            (
                SettingsEntry(SettingsId.ROUND_TRIP_TIME, 0xFFFFFFFF, SettingsFlag.PERSIST_VALUE),
                SettingsEntry(0xABCDEF, 0, SettingsFlag.PERSISTED),
            )
        ),
        h(
            "80 03 00 04 | 00 00 00 14 | 00 00 00 02"
            "| 01 00 00 03 | ff ff ff ff"
            "| 02 ab cd ef | 00 00 00 00"
        ),
    ),
    (
        # a control type SPDY/3 does not define (receivers must ignore it)
        UnknownControlFrame(0x0A, 0x55, b"xyz"),
        h("80 03 00 0a | 55 00 00 03 | 78 79 7a"),
    ),
]


@pytest.mark.parametrize(("frame", "wire"), CONTROL_CASES)
def test_control_frame_encodes_to_golden_bytes(frame: object, wire: bytes) -> None:
    assert encode_frame(frame) == wire  # type: ignore[arg-type]


@pytest.mark.parametrize(("frame", "wire"), CONTROL_CASES)
def test_control_frame_decodes_from_golden_bytes(frame: object, wire: bytes) -> None:
    assert decode_all(wire) == [frame]


def test_reserved_bits_are_ignored_on_input() -> None:
    # The top bit of 31-bit ids and deltas is reserved: receivers mask it.
    wire = (
        h("80 03 00 03 | 00 00 00 08 | 80 00 00 05 | 00 00 00 01")
        + h("80 03 00 09 | 00 00 00 08 | 80 00 00 03 | 80 00 00 10")
        + h("80 03 00 07 | 00 00 00 08 | 80 00 00 07 | 00 00 00 00")
    )
    assert decode_all(wire) == [
        RstStreamFrame(5, RstStatus.PROTOCOL_ERROR),
        WindowUpdateFrame(3, 0x10),
        GoAwayFrame(7, GoAwayStatus.OK),
    ]


def test_encoders_refuse_out_of_range_fields() -> None:
    for bad in (
        RstStreamFrame(0, 1),
        RstStreamFrame(1 << 31, 1),
        WindowUpdateFrame(1, 0),
        WindowUpdateFrame(1, 1 << 31),
        WindowUpdateFrame(-1, 1),
        GoAwayFrame(1 << 31),
        PingFrame(1 << 32),
    ):
        with pytest.raises(LocalProtocolError):
            encode_frame(bad)


# --- header blocks ---------------------------------------------------------------


def test_header_block_layout_is_count_then_length_prefixed_pairs() -> None:
    headers = Headers([("StreamType", "stdin"), ("port", "80"), ("port", "81")])
    assert encode_header_block(headers) == h(
        "00 00 00 02"
        "| 00 00 00 0a 73 74 72 65 61 6d 74 79 70 65"  # "streamtype" (lower-cased)
        "| 00 00 00 05 73 74 64 69 6e"  # "stdin"
        "| 00 00 00 04 70 6f 72 74"  # "port"
        "| 00 00 00 05 38 30 00 38 31"  # "80" NUL "81": multi-values joined by NUL
    )


def test_header_block_decodes_nul_joined_values_and_lower_cases_names() -> None:
    raw = h(
        "00 00 00 02"
        "| 00 00 00 04 50 6f 52 54 | 00 00 00 05 38 30 00 38 31"  # "PoRT": "80\0" "81"
        "| 00 00 00 01 78 | 00 00 00 00"  # "x": ""
    )
    headers = decode_header_block(raw)
    assert list(headers) == ["port", "x"]
    assert headers["port"] == "80"
    assert headers["PORT"] == "80"
    assert headers.get_all("port") == ["80", "81"]
    assert headers.get_all("x") == [""]
    assert headers.get_all("missing") == []


def test_headers_accept_mappings_with_lists_and_pairs() -> None:
    a = Headers({"A": ["1", "2"], "b": "3"})
    b = Headers([("a", "1"), ("b", "3"), ("A", "2")])
    assert a == b
    assert dict(a) == {"a": "1", "b": "3"}
    assert list(a.items_all()) == [("a", ["1", "2"]), ("b", ["3"])]


@pytest.mark.parametrize(
    "headers",
    [
        Headers({"ok": "a\x00b"}),
        Headers({"": "empty name"}),
        Headers({"a\x00b": "nul in name"}),
        Headers({"ok": ["fine", "not\x00fine"]}),
        Headers({"ok": "lone surrogate \ud800"}),  # not encodable as UTF-8
        Headers({"bad\udfffname": "x"}),
    ],
)
def test_header_block_refuses_nul_in_values_and_bad_names(headers: Headers) -> None:
    with pytest.raises(LocalProtocolError):
        encode_header_block(headers)


def zlib_stored_stream(*blocks: bytes) -> list[bytes]:
    """Hand-made compressed header blocks: a zlib header announcing the SPDY
    dictionary, then each block as one non-final deflate *stored* block.

    zlib header: CMF 0x78 (deflate, 32 KiB window); FLG 0x20 (FDICT set,
    FLEVEL 0, and 0x7820 % 31 == 0 so FCHECK is 0); then DICTID = the
    dictionary's Adler-32. A stored block is 0x00 (BFINAL 0, BTYPE 00), then
    LEN and ~LEN as little-endian 16-bit words, then the raw bytes.
    """
    out = []
    for i, raw in enumerate(blocks):
        stored = b"\x00" + struct.pack("<HH", len(raw), len(raw) ^ 0xFFFF) + raw
        out.append((h("78 20 e3 c6 a7 c2") if i == 0 else b"") + stored)
    return out


def test_hand_made_stored_blocks_decode_through_one_context() -> None:
    raws = [
        encode_header_block(Headers({"streamtype": "error"})),
        encode_header_block(Headers({"streamtype": "stdout", "x": ["1", "2"]})),
        encode_header_block(Headers()),
    ]
    dec = HeaderDecompressor()
    decoded = [dec.decompress(block) for block in zlib_stored_stream(*raws)]
    assert decoded == [
        Headers({"streamtype": "error"}),
        Headers({"streamtype": "stdout", "x": ["1", "2"]}),
        Headers(),
    ]


def test_compressed_blocks_announce_the_spdy_dictionary() -> None:
    block = HeaderCompressor().compress(Headers({"streamtype": "stdin"}))
    cmf, flg = block[0], block[1]
    assert cmf & 0x0F == 8  # deflate
    assert flg & 0x20  # FDICT
    assert (cmf << 8 | flg) % 31 == 0
    assert block[2:6] == h("e3 c6 a7 c2")
    # sync-flushed: the block ends with an empty stored block
    assert block.endswith(h("00 00 ff ff"))


def test_compressor_uses_a_small_window() -> None:
    # CINFO (the top 4 bits of CMF) is log2(window) - 8: a 512-byte window, not
    # zlib's 32 KiB, whose state costs ~260 KiB per connection for blocks of a few
    # hundred bytes. Every block still inflates with the standard 32 KiB inflater.
    compressor = HeaderCompressor()
    first = compressor.compress(Headers({"streamtype": "stdin"}))
    assert first[0] >> 4 == 1
    inflater = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
    blocks = [first] + [compressor.compress(Headers({"n": str(i) * 300})) for i in range(40)]
    assert b"".join(inflater.decompress(b) for b in blocks)


def test_header_blocks_round_trip_through_persistent_contexts() -> None:
    # One compressor and one decompressor for the whole connection: block N
    # depends on blocks 0..N-1 (later blocks refer back into earlier ones), and
    # an independent zlib context decodes the same stream.
    comp, dec = HeaderCompressor(), HeaderDecompressor()
    independent = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
    sizes = []
    for i in range(500):
        headers = Headers(
            {
                "streamtype": ["stdin", "stdout", "stderr", "error", "resize"][i % 5],
                "port": [str(8000 + i % 7), str(9000 + i % 3)],
                "requestid": str(i),
            }
        )
        block = comp.compress(headers)
        sizes.append(len(block))
        assert dec.decompress(block) == headers
        assert independent.decompress(block) == encode_header_block(headers)
    # the shared context is what makes repeated headers cheap
    assert sum(sizes[-100:]) / 100 < sizes[0]


def test_a_block_out_of_order_does_not_decode() -> None:
    comp = HeaderCompressor()
    first = comp.compress(Headers({"streamtype": "stdin"}))
    second = comp.compress(Headers({"streamtype": "stdin"}))
    with pytest.raises(RemoteProtocolError) as exc:
        HeaderDecompressor().decompress(second)  # the context of the first block is missing
    assert exc.value.fatal
    assert HeaderDecompressor().decompress(first) == Headers({"streamtype": "stdin"})


# --- header-bearing frames -----------------------------------------------------------


def split_syn_stream(wire: bytes) -> tuple[bytes, bytes]:
    return wire[:18], wire[18:]


def test_syn_stream_fixed_fields_are_golden() -> None:
    comp = HeaderCompressor()
    frame = SynStreamFrame(
        0x7FFFFFFF,
        Headers({"streamtype": "stdin"}),
        Flag.FIN | Flag.UNIDIRECTIONAL,
        associated_stream_id=2,
        priority=7,
        slot=0x42,
    )
    wire = encode_frame(frame, comp)
    fixed, block = split_syn_stream(wire)
    length = len(wire) - 8
    assert fixed == (
        h("80 03 00 01 | 03")  # SYN_STREAM, FIN|UNIDIRECTIONAL
        + length.to_bytes(3, "big")
        + h("7f ff ff ff | 00 00 00 02 | e0 | 42")  # id, assoc, priority 7 << 5, slot
    )
    inflated = zlib.decompressobj(zdict=SPDY3_DICTIONARY).decompress(block)
    assert inflated == encode_header_block(Headers({"streamtype": "stdin"}))


@pytest.mark.parametrize(("priority", "byte"), [(0, 0x00), (1, 0x20), (3, 0x60), (7, 0xE0)])
def test_syn_stream_priority_is_the_top_three_bits(priority: int, byte: int) -> None:
    wire = encode_frame(SynStreamFrame(1, Headers(), priority=priority), HeaderCompressor())
    assert wire[16] == byte
    assert decode_all(wire) == [SynStreamFrame(1, Headers(), priority=priority)]


def test_syn_stream_refuses_bad_priority_and_ids() -> None:
    for bad in (
        SynStreamFrame(1, Headers(), priority=8),
        SynStreamFrame(0, Headers()),
        SynStreamFrame(1, Headers(), associated_stream_id=1 << 31),
    ):
        with pytest.raises(LocalProtocolError):
            encode_frame(bad, HeaderCompressor())
    with pytest.raises(LocalProtocolError):
        encode_frame(SynStreamFrame(1, Headers()))  # no compressor


@pytest.mark.parametrize(("cls", "type_byte"), [(SynReplyFrame, 0x02), (HeadersFrame, 0x08)])
def test_reply_and_headers_fixed_fields_are_golden(cls: type, type_byte: int) -> None:
    comp = HeaderCompressor()
    wire = encode_frame(cls(6, Headers({"a": "b"}), Flag.FIN), comp)
    length = len(wire) - 8
    assert wire[:12] == (
        bytes([0x80, 0x03, 0x00, type_byte, 0x01]) + length.to_bytes(3, "big") + h("00 00 00 06")
    )
    inflated = zlib.decompressobj(zdict=SPDY3_DICTIONARY).decompress(wire[12:])
    assert inflated == encode_header_block(Headers({"a": "b"}))


def test_header_bearing_frames_decode_from_golden_bytes() -> None:
    # Three frames sharing one hand-made zlib stream (see zlib_stored_stream).
    b1, b2, b3 = zlib_stored_stream(
        encode_header_block(Headers({"streamtype": "stdin"})),
        encode_header_block(Headers({"status": "ok"})),
        encode_header_block(Headers({"trailer": ["1", "2"]})),
    )
    syn = h("00 00 00 05 | 00 00 00 03 | a0 | 07") + b1  # id 5, assoc 3, priority 5, slot 7
    reply = h("00 00 00 05") + b2
    headers = h("00 00 00 05") + b3
    wire = (
        h("80 03 00 01 | 02")
        + len(syn).to_bytes(3, "big")
        + syn
        + h("80 03 00 02 | 00")
        + len(reply).to_bytes(3, "big")
        + reply
        + h("80 03 00 08 | 01")
        + len(headers).to_bytes(3, "big")
        + headers
    )
    assert decode_all(wire) == [
        SynStreamFrame(
            5,
            Headers({"streamtype": "stdin"}),
            Flag.UNIDIRECTIONAL,
            associated_stream_id=3,
            priority=5,
            slot=7,
        ),
        SynReplyFrame(5, Headers({"status": "ok"})),
        HeadersFrame(5, Headers({"trailer": ["1", "2"]}), Flag.FIN),
    ]


def test_encoded_frames_decode_in_both_directions() -> None:
    # Each direction has its own pair of contexts: a client's compressor feeds the
    # server's decompressor and vice versa, interleaved.
    c_comp, s_comp = HeaderCompressor(), HeaderCompressor()
    c_dec, s_dec = FrameDecoder(), FrameDecoder()
    for i in range(50):
        up = SynStreamFrame(2 * i + 1, Headers({"streamtype": "stdin", "n": str(i)}))
        down = SynReplyFrame(2 * i + 1, Headers({"n": str(i)}))
        assert decode_all(encode_frame(up, c_comp), s_dec) == [up]
        assert decode_all(encode_frame(down, s_comp), c_dec) == [down]


def test_decodes_header_blocks_written_by_go_spdystream() -> None:
    # Captured once from github.com/moby/spdystream/spdy's Framer (Go 1.19,
    # compress/zlib at BestCompression, hence the 0x78 0xF9 header): two
    # SYN_STREAMs and a SYN_REPLY in one connection's zlib stream. A second,
    # independent deflate implementation keeps us honest about the dictionary
    # and the sync-flush framing.
    wire = h(
        "80030001000000350000000100000000000078f9e3c6a7c202e50e703a2b294a4dcc851625acc5"
        "252999799062b9089484592d0c182c0c01000000ffff"
        "800300010100001d0000000300000000000062606060c450cb565c92925f5a02000000ffff"
        "800300020000000e000000016260606000000000ffff"
    )
    assert decode_all(wire) == [
        SynStreamFrame(1, Headers({"streamtype": "stdin", "port": ["80", "81"]})),
        SynStreamFrame(3, Headers({"streamtype": "stdout"}), Flag.FIN),
        SynReplyFrame(1, Headers()),
    ]


def test_a_name_with_no_values_is_absent() -> None:
    # (it used to be present, with headers[name] raising IndexError, and to travel
    # as an empty value)
    headers = Headers({"a": [], "b": "1"})
    assert "a" not in headers
    assert dict(headers) == {"b": "1"}
    assert headers == Headers({"b": "1"})
