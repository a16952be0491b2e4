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


#: zlib window (2**9 bytes) and memory level of our compressor; see HeaderCompressor.
_WINDOW_BITS = 9
_MEM_LEVEL = 1
#: How far back zlib's deflate refers: its window less MIN_LOOKAHEAD (262 bytes),
#: so this much history is all a rebuilt compressor can use.
_REACH = (1 << _WINDOW_BITS) - 262
#: Ends every block a peer sync-flushes (an empty stored block): the inflater
#: is then at a block boundary, where it can be rebuilt from its history.
_SYNC_FLUSH_TAIL = b"\x00\x00\xff\xff"


class HeaderCompressor:
    """One direction's compression context; call in the order blocks hit the wire.

    The zlib state exists only between the first :meth:`compress` and the next
    :meth:`release`: releasing keeps the last plaintext that deflate can refer
    back to (250 bytes with a 512-byte window), and the next block continues
    the same zlib stream from it, with a raw deflate primed with that history.
    An idle connection so holds no zlib state (it was most of an idle
    session's memory), and a busy one rebuilds it once per batch (under 1 us
    each way; docs/performance.md).
    """

    __slots__ = ("_history", "_level", "_started", "_z")

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        self._level = level
        self._z: zlib._Compress | None = None
        self._started = False
        self._history = SPDY3_DICTIONARY[-_REACH:]

    @property
    def active(self) -> bool:
        """Whether zlib state is held now (between a block and :meth:`release`)."""
        return self._z is not None

    def compress(self, headers: Headers) -> bytes:
        """The compressed, sync-flushed block for ``headers``."""
        raw = encode_header_block(headers)
        z = self._z
        if z is None:
            # A 512-byte window and memLevel 1 instead of zlib's 32 KiB and 8:
            # header blocks are a few hundred bytes and compress within 1 % of
            # the defaults (docs/performance.md), for ~9 KiB of state instead of
            # ~260. Any inflater reads it (a smaller window is always allowed).
            if self._started:  # the stream goes on: no zlib header, primed with history
                z = zlib.compressobj(self._level, zlib.DEFLATED, -_WINDOW_BITS, _MEM_LEVEL,
                                     zlib.Z_DEFAULT_STRATEGY, zdict=self._history)
            else:
                z = zlib.compressobj(self._level, zlib.DEFLATED, _WINDOW_BITS, _MEM_LEVEL,
                                     zlib.Z_DEFAULT_STRATEGY, zdict=SPDY3_DICTIONARY)
                self._started = True
            self._z = z
        self._history = (self._history + raw)[-_REACH:]
        return z.compress(raw) + z.flush(zlib.Z_SYNC_FLUSH)

    def release(self) -> None:
        """Drop the zlib state until the next block (every block is sync-flushed,
        so the stream is at a block boundary)."""
        self._z = None


class HeaderDecompressor:
    """One direction's decompression context, bounded against zlib bombs.

    Like :class:`HeaderCompressor`, it holds zlib state only until
    :meth:`release`, keeping the last window of what it inflated (the window
    the peer's zlib header announced: 512 bytes from muxstream, 32 KiB from Go,
    but never more than the dictionary and the blocks so far) and rebuilding
    a raw inflater primed with it for the next block. It releases only at a
    block boundary, i.e. after a block that ended with a sync flush (as
    SPDY/3 asks of every block); after any other, it keeps its state.
    """

    __slots__ = ("_boundary", "_history", "_pending", "_pending_size", "_wbits", "_z",
                 "max_count", "max_size")

    def __init__(
        self,
        *,
        max_size: int = DEFAULT_MAX_HEADER_BLOCK,
        max_count: int = DEFAULT_MAX_HEADER_COUNT,
    ) -> None:
        self._z: zlib._Decompress | None = None
        self._wbits = 0  # the peer's window (bits), once its zlib header is read
        self._history = b""  # what the inflater could refer back to, up to _pending
        self._pending: list[bytes] = []  # inflated since _history was brought up to date
        self._pending_size = 0
        self._boundary = False  # the last block ended at a deflate block boundary
        self.max_size = max_size
        self.max_count = max_count

    @property
    def active(self) -> bool:
        """Whether zlib state is held now (between a block and :meth:`release`)."""
        return self._z is not None

    def release(self) -> None:
        """Drop the zlib state until the next block, if the stream is at a block
        boundary (else keep it: it cannot be rebuilt from history there)."""
        if self._boundary and self._z is not None:
            self._catch_up()
            self._z = None

    def _catch_up(self) -> None:
        """Bring the history up to date (one copy per release, not per block)."""
        self._history = (self._history + b"".join(self._pending))[-(1 << self._wbits):]
        self._pending = []
        self._pending_size = 0

    def _inflater(self) -> zlib._Decompress:
        if self._wbits:
            # The stream goes on: a raw inflater with the same history.
            return zlib.decompressobj(-self._wbits, zdict=self._history)
        # wbits=0: the window the peer's zlib header announces (512 bytes from
        # a muxstream peer, 32 KiB from Go's), not always 32 KiB.
        return zlib.decompressobj(wbits=0, zdict=SPDY3_DICTIONARY)

    def decompress(self, data: bytes | bytearray | memoryview) -> Headers:
        """Inflate and parse one block.

        Raises:
            RemoteProtocolError: (session error, GOAWAY PROTOCOL_ERROR) corrupt
                zlib data, a block over ``max_size`` once inflated, or a bad
                name/value block.
        """
        limit = self.max_size + 1
        self._boundary = False
        z = self._z
        try:
            if z is None:
                z = self._z = self._inflater()
            out = z.decompress(data, limit)
            while z.unconsumed_tail and len(out) < limit:
                out += z.decompress(z.unconsumed_tail, limit - len(out))
        except zlib.error as exc:
            raise RemoteProtocolError.session(
                f"header block does not decompress: {exc}", GoAwayStatus.PROTOCOL_ERROR
            ) from None
        if len(out) > self.max_size or z.unconsumed_tail:
            raise RemoteProtocolError.session(
                f"header block inflates past {self.max_size} bytes"
            )
        if not self._wbits:
            if not data:
                return decode_header_block(out, max_count=self.max_count)
            # The first block: its zlib header (which zlib accepted) says the window.
            self._wbits = (data[0] >> 4) + 8
            self._history = SPDY3_DICTIONARY
        self._pending.append(out)
        self._pending_size += len(out)
        if self._pending_size > 1 << self._wbits:
            self._catch_up()
        self._boundary = (not z.unused_data and not z.eof
                          and bytes(data[-4:]) == _SYNC_FLUSH_TAIL)
        return decode_header_block(out, max_count=self.max_count)
