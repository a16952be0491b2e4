"""Frame-level interop: muxstream.protocol against spdystream's own Go framer.

Go -> Python: spdystream's framer writes a scripted sequence (every frame type,
Kubernetes-like and multi-valued headers, 300 consecutive header blocks through one
zlib context, blocks larger than Go's 4 KiB inflate buffer); muxstream decodes it,
under several chunkings, to exactly the frames Go says it wrote.

Python -> Go: muxstream encodes a sequence (scripted, then a large seeded random
one) with one compression context; spdystream's framer decodes it to exactly the
frames muxstream meant.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from muxstream.protocol._constants import Flag, GoAwayStatus, RstStatus, SettingsFlag, SettingsId
from muxstream.protocol._errors import LocalProtocolError
from muxstream.protocol._frames import (
    DataFrame,
    Frame,
    FrameDecoder,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsEntry,
    SettingsFrame,
    SynReplyFrame,
    SynStreamFrame,
    UnknownControlFrame,
    WindowUpdateFrame,
    encode_frame,
)
from muxstream.protocol._header_block import HeaderCompressor, HeaderDecompressor
from muxstream.protocol._headers import Headers

# --- muxstream frames in framer-read's JSON shape -----------------------------


def _headers_json(headers: Headers) -> dict[str, list[str]]:
    return {name: values for name, values in headers.items_all()}


def describe(frame: Frame) -> dict[str, Any]:
    """``frame`` as spdypeer's framer-read prints it (see framer.go, frameJSON)."""
    out: dict[str, Any]
    if isinstance(frame, SynStreamFrame):
        out = {
            "type": "SYN_STREAM",
            "stream_id": frame.stream_id,
            "flags": int(frame.flags),
            "associated_to": frame.associated_stream_id,
            "priority": frame.priority,
            "slot": frame.slot,
        }
    elif isinstance(frame, SynReplyFrame | HeadersFrame):
        kind = "SYN_REPLY" if isinstance(frame, SynReplyFrame) else "HEADERS"
        out = {"type": kind, "stream_id": frame.stream_id, "flags": int(frame.flags)}
    elif isinstance(frame, RstStreamFrame):
        return {"type": "RST_STREAM", "stream_id": frame.stream_id, "flags": 0,
                "status": frame.status}
    elif isinstance(frame, SettingsFrame):
        out = {"type": "SETTINGS", "flags": int(frame.flags)}
        if frame.entries:
            out["settings"] = [
                {"flag": int(e.flags), "id": e.id, "value": e.value} for e in frame.entries
            ]
        return out
    elif isinstance(frame, PingFrame):
        return {"type": "PING", "flags": 0, "ping_id": frame.ping_id}
    elif isinstance(frame, GoAwayFrame):
        return {"type": "GOAWAY", "flags": 0, "last_good_stream_id": frame.last_good_stream_id,
                "status": frame.status}
    elif isinstance(frame, WindowUpdateFrame):
        return {"type": "WINDOW_UPDATE", "stream_id": frame.stream_id, "flags": 0,
                "delta": frame.delta}
    elif isinstance(frame, DataFrame):
        out = {
            "type": "DATA",
            "stream_id": frame.stream_id,
            "flags": int(frame.flags),
            "length": len(frame.data),
            "sha256": hashlib.sha256(frame.data).hexdigest(),
        }
        if len(frame.data) <= 64:
            out["hex"] = frame.data.hex()
        return out
    else:
        raise AssertionError(f"unexpected frame {frame!r}")
    if len(frame.headers):
        out["headers"] = _headers_json(frame.headers)
    return out


def decode_all(data: bytes, chunks: Iterable[int]) -> list[Frame]:
    """Decode ``data`` fed in pieces of the given sizes (the last size repeats);
    DATA pieces are reassembled into whole frames."""
    decoder = FrameDecoder(HeaderDecompressor())
    frames: list[Frame] = []
    pieces: list[bytes] = []
    sizes = iter(chunks)
    size = 1
    pos = 0
    while pos < len(data):
        size = next(sizes, size)
        decoder.receive(data[pos : pos + size])
        pos += size
        while (frame := decoder.next_frame()) is not None:
            if isinstance(frame, DataFrame):
                pieces.append(frame.data)
                if frame.partial:
                    continue
                frame = DataFrame(frame.stream_id, b"".join(pieces), frame.flags)
                pieces.clear()
            frames.append(frame)
    assert decoder.buffered == 0 and not pieces, "trailing partial frame"
    return frames


def random_sizes(seed: int, low: int, high: int) -> Iterator[int]:
    rng = random.Random(seed)
    while True:
        yield rng.randint(low, high)


def encode_all(frames: Iterable[Frame]) -> bytes:
    compressor = HeaderCompressor()
    return b"".join(encode_frame(f, compressor) for f in frames)


# --- Go -> muxstream ------------------------------------------------------------


@pytest.fixture(scope="module")
def go_dump(spdypeer: Any) -> tuple[bytes, list[dict[str, Any]]]:
    """spdystream's encoding of the scripted sequence, and Go's description of it."""
    out, err, rc = spdypeer.run_framer("framer-dump")
    assert rc == 0, err
    described = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert len(described) > 300
    return out, described


@pytest.mark.parametrize(
    "chunking",
    [
        pytest.param([1 << 30], id="whole"),
        pytest.param([1], id="byte-at-a-time"),
        pytest.param(random_sizes(1, 1, 9000), id="random-1-9000"),
        pytest.param([8, 4096, 3, 65536], id="mixed"),
    ],
)
def test_muxstream_decodes_spdystream_frames(
    go_dump: tuple[bytes, list[dict[str, Any]]], chunking: Iterable[int]
) -> None:
    data, expected = go_dump
    got = [describe(f) for f in decode_all(data, chunking)]
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"frame {i} differs"


def test_spdystream_dump_covers_every_frame_type(
    go_dump: tuple[bytes, list[dict[str, Any]]],
) -> None:
    _, expected = go_dump
    kinds = {d["type"] for d in expected}
    assert kinds == {"SYN_STREAM", "SYN_REPLY", "HEADERS", "DATA", "RST_STREAM", "SETTINGS",
                     "PING", "GOAWAY", "WINDOW_UPDATE"}
    first = expected[0]
    # spdystream lower-cases names it is given in mixed case; values keep their case.
    assert first["headers"]["x-mixed-case"] == ["Value Keeps Its Case"]
    assert first["headers"]["x-stream-protocol-version"] == [
        "v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"]


def test_spdystream_dump_survives_muxstream_reencoding(
    spdypeer: Any, go_dump: tuple[bytes, list[dict[str, Any]]]
) -> None:
    """Go bytes -> muxstream frames -> muxstream bytes -> Go frames: nothing changes."""
    data, expected = go_dump
    frames = decode_all(data, [1 << 30])
    assert spdypeer.read_frames(encode_all(frames)) == expected


# --- muxstream -> Go ------------------------------------------------------------


def scripted_frames() -> list[Frame]:
    rng = random.Random(5)
    frames: list[Frame] = [
        SynStreamFrame(1, Headers({
            "streamtype": "stdin",
            "port": "8080",
            "requestid": "0",
            "X-Mixed-Case": "Value Keeps Case",  # muxstream must lower-case the name
            "x-multi": ["a", "b", "c"],
            "x-stream-protocol-version": ["v4.channel.k8s.io", "channel.k8s.io"],
        }), priority=3),
        SynStreamFrame(3, Headers(), Flag.FIN | Flag.UNIDIRECTIONAL, associated_stream_id=1,
                       priority=7),
        SynReplyFrame(1, Headers({"x-reply": "ok"})),
        SynReplyFrame(2, Headers(), Flag.FIN),
        HeadersFrame(1, Headers({"x-trailer": "t1"})),
        HeadersFrame(1, Headers([("x-trailer", "t2"), ("x-trailer", "t3")]), Flag.FIN),
        DataFrame(1, b"hello"),
        DataFrame(1, b""),
        DataFrame(1, rng.randbytes(70000)),
        DataFrame(1, rng.randbytes(1 << 20)),
        DataFrame(1, b"bye", Flag.FIN),
        DataFrame(0x7FFFFFFF, b"", Flag.FIN),
        *(RstStreamFrame(5, status) for status in RstStatus),
        SettingsFrame((
            SettingsEntry(SettingsId.INITIAL_WINDOW_SIZE, 65536),
            SettingsEntry(SettingsId.MAX_CONCURRENT_STREAMS, 100, SettingsFlag.PERSIST_VALUE),
        )),
        SettingsFrame((), Flag.CLEAR_SETTINGS),
        PingFrame(1),
        PingFrame(2),
        PingFrame(0xFFFFFFFF),
        WindowUpdateFrame(1, 65536),
        WindowUpdateFrame(0, 0x7FFFFFFF),
    ]
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
    kinds = ["error", "stdin", "stdout", "stderr", "resize", "data"]
    for i in range(300):
        headers: dict[str, str | list[str]] = {
            "streamtype": kinds[i % len(kinds)],
            "port": str(8000 + i % 50),
            "requestid": str(i // 2),
        }
        if i % 7 == 0:
            headers["x-multi"] = [str(i), "second", str(i * i)]
        if i % 50 == 25:  # bigger than the 4 KiB buffer Go's inflater reads through
            headers["x-big"] = "".join(rng.choice(alphabet) for _ in range(20000))
        sid = 7 + 2 * i
        if i % 3 == 0:
            frames.append(SynStreamFrame(sid, Headers(headers), priority=i % 8))
        elif i % 3 == 1:
            frames.append(SynReplyFrame(sid, Headers(headers)))
        else:
            frames.append(HeadersFrame(sid, Headers(headers)))
    frames += [
        GoAwayFrame(601, GoAwayStatus.OK),
        GoAwayFrame(0, GoAwayStatus.PROTOCOL_ERROR),
        GoAwayFrame(0x7FFFFFFF, GoAwayStatus.INTERNAL_ERROR),
    ]
    return frames


def test_spdystream_decodes_muxstream_frames(spdypeer: Any) -> None:
    frames = scripted_frames()
    got = spdypeer.read_frames(encode_all(frames))
    assert [d["type"] for d in got if d["type"] == "ERROR"] == []
    assert got == [describe(f) for f in frames]
    assert got[0]["headers"]["x-mixed-case"] == ["Value Keeps Case"]


def random_frames(seed: int, count: int) -> list[Frame]:
    """A seeded jumble of valid frames with random ids, flags, headers and payloads."""
    rng = random.Random(seed)

    def token(n: int) -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-._") for _ in range(n))

    def headers() -> Headers:
        pairs: list[tuple[str, str]] = []
        for _ in range(rng.randint(0, 8)):
            name = token(rng.randint(1, 20))
            for _ in range(rng.randint(1, 3)):
                pairs.append((name, token(rng.randint(1, 60))))
        return Headers(pairs)

    def sid(zero_ok: bool = False) -> int:
        return rng.choice([0 if zero_ok else 1, 1, 2, 0x7FFFFFFF, rng.randint(1, 0x7FFFFFFF)])

    makers: list[Callable[[], Frame]] = [
        lambda: SynStreamFrame(sid(), headers(), Flag(rng.randint(0, 3)), sid(True),
                               rng.randint(0, 7), rng.randint(0, 255)),
        lambda: SynReplyFrame(sid(), headers(), Flag(rng.randint(0, 1))),
        lambda: HeadersFrame(sid(), headers(), Flag(rng.randint(0, 1))),
        lambda: DataFrame(sid(), rng.randbytes(rng.choice([0, 1, 100, 5000, 70000])),
                          Flag(rng.randint(0, 1))),
        lambda: RstStreamFrame(sid(), rng.randint(1, 11)),
        lambda: SettingsFrame(tuple(
            SettingsEntry(rng.randint(1, 8), rng.randint(0, 0xFFFFFFFF),
                          SettingsFlag(rng.randint(0, 3)))
            for _ in range(rng.randint(0, 5))), Flag(rng.randint(0, 1))),
        lambda: PingFrame(rng.randint(1, 0xFFFFFFFF)),
        lambda: GoAwayFrame(sid(True), rng.randint(0, 2)),
        lambda: WindowUpdateFrame(sid(True), rng.randint(1, 0x7FFFFFFF)),
    ]
    return [rng.choice(makers)() for _ in range(count)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_spdystream_decodes_random_muxstream_frames(spdypeer: Any, seed: int) -> None:
    frames = random_frames(seed, 1500)
    got = spdypeer.read_frames(encode_all(frames))
    assert got == [describe(f) for f in frames]


# --- what spdystream's framer refuses (facts muxstream's encoder must respect) -----


def test_spdystream_rejects_unknown_control_frame_types(spdypeer: Any) -> None:
    """A control type spdystream does not know ends its read loop (and the session),
    so muxstream must never send one (no NOOP, no CREDENTIAL)."""
    data = encode_all([PingFrame(1), UnknownControlFrame(5, 0, b""), PingFrame(3)])
    got = spdypeer.read_frames(data)
    assert [d["type"] for d in got] == ["PING", "ERROR"]
    assert "invalid control frame" in got[-1]["error"]


def raw_syn_reply(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A SYN_REPLY for stream 1 with a hand-made name/value block (no Headers
    normalisation), compressed with a fresh context."""
    import zlib

    from muxstream.protocol._dictionary import SPDY3_DICTIONARY

    parts = [len(entries).to_bytes(4, "big")]
    for name, value in entries:
        parts += [len(name).to_bytes(4, "big"), name, len(value).to_bytes(4, "big"), value]
    z = zlib.compressobj(zdict=SPDY3_DICTIONARY)
    compressed = z.compress(b"".join(parts)) + z.flush(zlib.Z_SYNC_FLUSH)
    payload = (1).to_bytes(4, "big") + compressed
    return (0x80030002).to_bytes(4, "big") + len(payload).to_bytes(4, "big") + payload


def test_spdystream_rejects_upper_case_header_names_on_the_wire(spdypeer: Any) -> None:
    """Go's framer fails a block with an upper-case name, hence muxstream lower-cases."""
    got = spdypeer.read_frames(raw_syn_reply([(b"Port", b"80")]))
    assert got == [{"type": "ERROR", "error": "header was not lowercased"}]


def test_spdystream_merges_repeated_header_names(spdypeer: Any) -> None:
    """Its DuplicateHeaders check never fires (it looks up the lower-case name in a
    map keyed by canonical names): a repeated name is merged, like muxstream does."""
    got = spdypeer.read_frames(raw_syn_reply([(b"port", b"80"), (b"port", b"81\x0082")]))
    assert got == [{"type": "SYN_REPLY", "stream_id": 1, "flags": 0,
                    "headers": {"port": ["80", "81", "82"]}}]
    mux = decode_all(raw_syn_reply([(b"port", b"80"), (b"port", b"81\x0082")]), [1 << 30])
    assert isinstance(mux[0], SynReplyFrame)
    assert mux[0].headers.get_all("port") == ["80", "81", "82"]


@pytest.mark.parametrize(
    ("frame", "name"),
    [
        (SynStreamFrame(1, Headers({"connection": "close"})), "connection"),
        (SynStreamFrame(1, Headers({"host": "example"})), "host"),
        (SynReplyFrame(1, Headers({"transfer-encoding": "chunked"})), "transfer-encoding"),
        (SynReplyFrame(1, Headers({"keep-alive": "1"})), "keep-alive"),
        (HeadersFrame(2, Headers({"proxy-connection": "x"})), "proxy-connection"),
    ],
)
def test_spdystream_rejects_hop_by_hop_headers(
    spdypeer: Any, frame: Frame, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """spdystream fails a frame carrying an HTTP/1 hop-by-hop header (and with it the
    session), so such names must never reach the wire towards it."""
    import muxstream.protocol._header_block as headers_module

    if name != "host":
        # muxstream's encoder refuses them; lift that to show what spdystream does.
        with pytest.raises(LocalProtocolError, match="connection-specific"):
            encode_all([frame])
        monkeypatch.setattr(headers_module, "HOP_BY_HOP_HEADERS", frozenset())
    got = spdypeer.read_frames(encode_all([PingFrame(1), frame]))
    assert got[0]["type"] == "PING"
    assert got[1:] == [{"type": "ERROR", "error": "frame contained invalid header"}], name


def test_spdystream_allows_host_in_syn_reply(spdypeer: Any) -> None:
    got = spdypeer.read_frames(encode_all([SynReplyFrame(1, Headers({"host": "h"}))]))
    assert got == [{"type": "SYN_REPLY", "stream_id": 1, "flags": 0, "headers": {"host": ["h"]}}]
