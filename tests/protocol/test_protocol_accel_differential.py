"""The compiled frame decoder is a twin of the Python one: same frames, same errors.

``muxstream._speedups.FrameDecoder`` (C) and ``PyFrameDecoder`` (the reference)
are fed the same bytes -- well-formed frames, frames with wrong lengths, types,
versions and limits, corrupt header blocks, plain garbage -- cut into the same
arbitrary chunks of ``bytes``, ``bytearray`` or ``memoryview``, with the same
``release()`` calls in between. After every step both must agree on everything
observable: each frame (type and fields, and whether a DATA piece is the very
chunk object handed in), each error (message, fatal, stream id, RST/GOAWAY
status), and ``read_hint``, ``data_due`` and ``buffered``.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muxstream.protocol import HeaderCompressor, HeaderDecompressor, Headers, RemoteProtocolError
from muxstream.protocol._frames import DEFAULT_MAX_CONTROL_FRAME, PyFrameDecoder, setup_compiled

# Imported directly, so that this runs with MUXSTREAM_NO_ACCEL=1 too (CI's second pass).
speedups = pytest.importorskip(
    "muxstream._speedups", reason="the compiled accelerator is not built (no C compiler?)"
)
setup_compiled(speedups)
CFrameDecoder = speedups.FrameDecoder

_HEADER = struct.Struct(">II")

# --- wire material -----------------------------------------------------------------------

LENGTHS = st.one_of(
    st.integers(0, 40),
    st.sampled_from([100, 4095, 32767, 32768, 65535, 65536, 70000]),
)


def data_frame(sid: int, flags: int, length: int) -> bytes:
    return _HEADER.pack(sid & 0xFFFFFFFF, (flags << 24) | length) + bytes(
        (i * 7) & 0xFF for i in range(length)
    )


def control_frame(version: int, ctype: int, flags: int, payload: bytes,
                  length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return _HEADER.pack(0x80000000 | (version << 16) | ctype, (flags << 24) | n) + payload


@st.composite
def frames(draw: st.DrawFn, compressor: HeaderCompressor) -> bytes:
    # Fatal errors end a scenario, so the frames that cause them are the rarer draws.
    kind = draw(st.sampled_from(["data"] * 4 + ["control"] * 4 + ["headers"] * 2 + ["garbage"]))
    flags = draw(st.sampled_from([0, 1, 2, 3, 0xFF]))
    if kind == "data":
        sid = draw(st.one_of(st.integers(1, 9), st.sampled_from([0, 0x7FFFFFFF, 0x80000001])))
        return data_frame(sid, flags, draw(LENGTHS))
    if kind == "garbage":
        return draw(st.binary(max_size=24))
    version = 2 if draw(st.integers(0, 15)) == 0 else 3
    if kind == "headers":
        ctype = draw(st.sampled_from([1, 2, 8]))
        headers = Headers(draw(st.dictionaries(
            st.text("abcxyz-", min_size=1, max_size=6),
            st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]),
                    max_size=8), max_size=3)))
        block = compressor.compress(headers)
        if draw(st.integers(0, 5)) == 0:  # corrupt the zlib stream now and then
            block = block[:2] + draw(st.binary(min_size=1, max_size=6))
        sid = draw(st.integers(0, 0xFFFFFFFF))
        if ctype == 1:
            fixed = struct.pack(">IIBB", sid, draw(st.integers(0, 0xFFFFFFFF)),
                                draw(st.integers(0, 255)), draw(st.integers(0, 255)))
        else:
            fixed = struct.pack(">I", sid)
        return control_frame(version, ctype, flags, fixed + block)
    ctype = draw(st.sampled_from([3, 4, 5, 6, 7, 9, 10, 0, 0x7FFF, 1, 2, 8]))
    if ctype == 4 and draw(st.booleans()):
        entries = draw(st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
                                max_size=4))
        count = len(entries) if draw(st.booleans()) else draw(st.integers(0, 0xFFFFFFFF))
        payload = struct.pack(">I", count) + b"".join(struct.pack(">II", *e) for e in entries)
    else:
        size = draw(st.sampled_from([0, 3, 4, 5, 8, 9, 12]))
        payload = draw(st.binary(min_size=size, max_size=size))
    length = None
    if draw(st.integers(0, 9)) == 0:  # a length field that lies (or exceeds the limit)
        length = draw(st.sampled_from([len(payload) + 1, 0xFFFFFF, DEFAULT_MAX_CONTROL_FRAME + 1]))
    return control_frame(version, ctype, flags, payload, length)


# --- the two decoders, driven identically ---------------------------------------------------


def observe(dec: Any) -> tuple[int, int, int]:
    return (dec.read_hint, dec.data_due, dec.buffered)


def drive(cls: Any, steps: list[tuple[bytes, str, bool]], limits: dict[str, int]) -> list[Any]:
    """Feed every chunk, read every frame; record everything observable."""
    dec = cls(HeaderDecompressor(max_size=4096, max_count=8), **limits)
    trace: list[Any] = [observe(dec)]
    for raw, kind, release in steps:
        chunk: bytes | bytearray | memoryview = (
            raw if kind == "bytes" else bytearray(raw) if kind == "bytearray"
            else memoryview(bytearray(raw))
        )
        dec.receive(chunk)
        trace.append(("received", observe(dec)))
        for _ in range(10_000):
            try:
                frame = dec.next_frame()
            except RemoteProtocolError as exc:
                trace.append(("error", str(exc), exc.fatal, exc.stream_id, exc.rst_status,
                              exc.goaway_status, observe(dec)))
                if exc.fatal:
                    dec.release()
                    break
                continue
            if frame is None:
                break
            same = getattr(frame, "data", None) is chunk
            trace.append(("frame", type(frame).__name__, frame, same, observe(dec)))
        if release:
            dec.release()
            trace.append(("released", observe(dec)))
    return trace


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[tuple[bytes, str, bool]], dict[str, int]]:
    compressor = HeaderCompressor()
    wire = b"".join(draw(st.lists(frames(compressor), min_size=1, max_size=8)))
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    steps = [(p, draw(st.sampled_from(["bytes", "bytearray", "memoryview"])),
              draw(st.integers(0, 4)) == 0) for p in pieces]
    limits = draw(st.sampled_from([
        {}, {"max_data_frame": 30}, {"max_control_frame": 12},
        {"max_data_frame": 65536, "max_control_frame": 4096},
    ]))
    return steps, limits


@settings(max_examples=300)
@given(scenarios())
def test_compiled_decoder_matches_python_on_any_input(
    scenario: tuple[list[tuple[bytes, str, bool]], dict[str, int]],
) -> None:
    steps, limits = scenario
    assert drive(CFrameDecoder, steps, limits) == drive(PyFrameDecoder, steps, limits)


@settings(max_examples=100)
@given(st.lists(st.binary(max_size=40), max_size=6))
def test_compiled_decoder_matches_python_on_garbage(chunks: list[bytes]) -> None:
    steps = [(c, "bytes", False) for c in chunks]
    assert drive(CFrameDecoder, steps, {}) == drive(PyFrameDecoder, steps, {})


def test_compiled_decoder_hands_out_a_whole_bytes_chunk_without_copying() -> None:
    # The zero-copy path the TCP reader relies on: a DATA payload received as
    # its own ``bytes`` object is the very object in the frame.
    for cls in (CFrameDecoder, PyFrameDecoder):
        dec = cls()
        dec.receive(_HEADER.pack(1, 100_000))
        assert dec.next_frame() is None and dec.read_hint == 100_000
        payload = bytes(100_000)
        dec.receive(payload)
        frame = dec.next_frame()
        assert frame is not None and frame.data is payload  # type: ignore[union-attr]


def test_compiled_decoder_stays_broken_after_a_session_error() -> None:
    for cls in (CFrameDecoder, PyFrameDecoder):
        dec = cls()
        dec.receive(control_frame(2, 6, 0, b"\0\0\0\1"))
        with pytest.raises(RemoteProtocolError, match="unsupported SPDY version 2"):
            dec.next_frame()
        dec.receive(control_frame(3, 6, 0, b"\0\0\0\1"))
        with pytest.raises(RemoteProtocolError, match="already broken"):
            dec.next_frame()


def test_compiled_decoder_keeps_public_attributes() -> None:
    decompressor = HeaderDecompressor()
    dec = CFrameDecoder(decompressor, max_control_frame=100, max_data_frame=200)
    assert (dec.decompressor, dec.max_control_frame, dec.max_data_frame) == (
        decompressor, 100, 200)
    dec.max_data_frame = 10
    dec.receive(data_frame(1, 0, 11))
    with pytest.raises(RemoteProtocolError) as info:
        dec.next_frame()
    assert info.value.stream_id == 1 and not info.value.fatal
    assert isinstance(CFrameDecoder().decompressor, HeaderDecompressor)
