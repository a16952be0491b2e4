"""Header blocks: the name/value block and its zlib contexts (SPDY/3 2.6.10).

Theory of operation: each direction of a connection has exactly one zlib stream,
primed with the SPDY/3 dictionary and sync-flushed after every block, so a block
can only be decoded by the decompressor that decoded every block before it. A
decompression failure therefore desynchronises the whole connection and is
always a session error.

The decompressor inflates with an output bound, so a "zlib bomb" (a few KiB that
would inflate to hundreds of MiB) fails after ``max_size`` bytes, not after
allocating them. What a block holds is a ``Headers`` (``_headers``).
"""

from __future__ import annotations

import struct
import zlib

from ._constants import GoAwayStatus
from ._dictionary import SPDY3_DICTIONARY
from ._errors import LocalProtocolError, RemoteProtocolError
from ._headers import Headers

#: Decompressed header block limit. Kubernetes' blocks are well under 1 KiB;
#: 256 KiB leaves room for large auth headers while bounding a bomb.
DEFAULT_MAX_HEADER_BLOCK = 256 * 1024
#: Most name/value pairs accepted in one block.
DEFAULT_MAX_HEADER_COUNT = 256

_U32 = struct.Struct(">I")

#: Connection-specific HTTP headers SPDY/3 forbids in any header block (3.2.1);
#: Go's framer fails the frame, and spdystream then the whole session.
HOP_BY_HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection",
                                "transfer-encoding"})


def encode_header_block(headers: Headers) -> bytes:
    """The uncompressed name/value block: count, then length-prefixed names and values."""
    try:
        return _encode_header_block(headers)
    except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 for it
        raise LocalProtocolError(f"header {exc.object!r} is not valid UTF-8 text") from None


def _encode_header_block(headers: Headers) -> bytes:
    parts = [_U32.pack(len(headers))]
    for name, values in headers.items_all():
        name_b = name.encode("utf-8")
        if not name_b:
            raise LocalProtocolError("header names must not be empty")
        if b"\x00" in name_b:
            raise LocalProtocolError(f"header name {name!r} contains NUL")
        if name in HOP_BY_HOP_HEADERS:
            raise LocalProtocolError(
                f"header {name!r} is connection-specific: SPDY forbids it and "
                "spdystream ends the session on it (SPDY/3 3.2.1)"
            )
        for v in values:
            if "\x00" in v:
                raise LocalProtocolError(f"header {name!r} has a value containing NUL")
        value_b = "\x00".join(values).encode("utf-8")
        parts += [_U32.pack(len(name_b)), name_b, _U32.pack(len(value_b)), value_b]
    return b"".join(parts)


def decode_header_block(block: bytes, *, max_count: int = DEFAULT_MAX_HEADER_COUNT) -> Headers:
    """Parse an uncompressed name/value block.

    Raises:
        RemoteProtocolError: (session error) the block is truncated, has trailing
            bytes, an empty name, or more than ``max_count`` entries.
    """
    size = len(block)
    if size < 4:
        raise RemoteProtocolError.session("header block shorter than its count")
    (count,) = _U32.unpack_from(block, 0)
    if count > max_count:
        raise RemoteProtocolError.session(f"header block has {count} entries (limit {max_count})")
    pos = 4
    merged: dict[str, list[str]] = {}
    for _ in range(count):
        fields: list[bytes] = []
        for _what in ("name", "value"):
            if pos + 4 > size:
                raise RemoteProtocolError.session("header block truncated")
            (length,) = _U32.unpack_from(block, pos)
            pos += 4
            if length > size - pos:
                raise RemoteProtocolError.session("header block length runs past its end")
            fields.append(block[pos : pos + length])
            pos += length
        raw_name, raw_value = fields
        if not raw_name:
            raise RemoteProtocolError.session("empty header name")
        try:
            name = raw_name.decode("utf-8").lower()
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError.session("header block is not UTF-8") from None
        # A repeated name is a spec violation that Go's framer merely reports;
        # merging keeps every value and stays interoperable.
        merged.setdefault(name, []).extend(value.split("\x00"))
    if pos != size:
        raise RemoteProtocolError.session("trailing bytes after the header block")
    return Headers(merged)


#: zlib window (2**12 bytes) and memory level of our compressor; see HeaderCompressor.
_WINDOW_BITS = 12
_MEM_LEVEL = 2


class HeaderCompressor:
    """One direction's compression context; call in the order blocks hit the wire."""

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        # A 4 KiB window (the dictionary is 1,423 bytes) and memLevel 2 instead of
        # zlib's 32 KiB and 8: header blocks are a few hundred bytes, and measured
        # the same compressed sizes, while the default state costs ~85 KiB of RSS
        # per connection, and an idle session is mostly that (docs/performance.md).
        # Any inflater reads it (a smaller window is always allowed).
        self._z = zlib.compressobj(level, zlib.DEFLATED, _WINDOW_BITS, _MEM_LEVEL,
                                   zlib.Z_DEFAULT_STRATEGY, zdict=SPDY3_DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        """The compressed, sync-flushed block for ``headers``."""
        raw = encode_header_block(headers)
        return self._z.compress(raw) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """One direction's decompression context, bounded against zlib bombs."""

    def __init__(
        self,
        *,
        max_size: int = DEFAULT_MAX_HEADER_BLOCK,
        max_count: int = DEFAULT_MAX_HEADER_COUNT,
    ) -> None:
        # wbits=0: the window the peer's zlib header announces (4 KiB from a
        # muxstream peer, 32 KiB from Go's), not always 32 KiB -- the window is
        # most of an idle connection's inflater.
        self._z = zlib.decompressobj(wbits=0, zdict=SPDY3_DICTIONARY)
        self.max_size = max_size
        self.max_count = max_count

    def decompress(self, data: bytes | bytearray | memoryview) -> Headers:
        """Inflate and parse one block.

        Raises:
            RemoteProtocolError: (session error, GOAWAY PROTOCOL_ERROR) corrupt
                zlib data, a block over ``max_size`` once inflated, or a bad
                name/value block.
        """
        limit = self.max_size + 1
        try:
            out = self._z.decompress(data, limit)
            while self._z.unconsumed_tail and len(out) < limit:
                out += self._z.decompress(self._z.unconsumed_tail, limit - len(out))
        except zlib.error as exc:
            raise RemoteProtocolError.session(
                f"header block does not decompress: {exc}", GoAwayStatus.PROTOCOL_ERROR
            ) from None
        if len(out) > self.max_size or self._z.unconsumed_tail:
            raise RemoteProtocolError.session(
                f"header block inflates past {self.max_size} bytes"
            )
        return decode_header_block(out, max_count=self.max_count)
