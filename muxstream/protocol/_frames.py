"""SPDY/3 frames: their layouts, encoders and an incremental decoder (2.2-2.6).

Every frame starts with 8 bytes::

    control: |1| version(15) | type(16) |  flags(8) | length(24) |
    data:    |0| stream id(31)          |  flags(8) | length(24) |

Theory of operation of :class:`FrameDecoder`: bytes arrive in arbitrary chunks
(one byte at a time included) and are only borrowed for the duration of
:meth:`FrameDecoder.receive`. Frame headers and control payloads that straddle
chunks are gathered in a small buffer; DATA payloads are never gathered: each
piece that arrives is copied exactly once, straight out of the caller's chunk,
into the ``bytes`` of a :class:`DataFrame` (``partial=True`` while the frame's
payload is still incomplete). So a 16 MiB DATA frame costs no 16 MiB buffer,
and a reader that receives into one reused buffer copies each payload byte once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._accel import speedups
from ._constants import (
    CONTROL_BIT,
    FRAME_HEADER_SIZE,
    MAX_FRAME_LENGTH,
    MAX_STREAM_ID,
    SPDY_VERSION,
    Flag,
    FrameType,
    GoAwayStatus,
    RstStatus,
    SettingsFlag,
    SettingsId,
)
from ._errors import LocalProtocolError, RemoteProtocolError
from ._header_block import HeaderCompressor, HeaderDecompressor
from ._headers import Headers

_HEADER = struct.Struct(">II")
_U32 = struct.Struct(">I")
_U32x2 = struct.Struct(">II")
_SYN_STREAM_FIXED = struct.Struct(">IIBB")

#: Control payloads bigger than this are refused before they are buffered.
#: A control frame's payload is at most a compressed header block plus 10 bytes.
DEFAULT_MAX_CONTROL_FRAME = 256 * 1024 + 1024


# --- frame objects ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataFrame:
    """A DATA frame, or (``partial``) a piece of one whose payload is still arriving."""

    stream_id: int
    data: bytes
    flags: Flag = Flag.NONE
    partial: bool = False


@dataclass(frozen=True, slots=True)
class SynStreamFrame:
    stream_id: int
    headers: Headers
    flags: Flag = Flag.NONE
    associated_stream_id: int = 0
    priority: int = 0
    slot: int = 0


@dataclass(frozen=True, slots=True)
class SynReplyFrame:
    stream_id: int
    headers: Headers
    flags: Flag = Flag.NONE


@dataclass(frozen=True, slots=True)
class RstStreamFrame:
    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class SettingsEntry:
    id: int
    value: int
    flags: SettingsFlag = SettingsFlag.NONE


@dataclass(frozen=True, slots=True)
class SettingsFrame:
    entries: tuple[SettingsEntry, ...] = ()
    flags: Flag = Flag.NONE

    def as_dict(self) -> dict[int, int]:
        return {e.id: e.value for e in self.entries}


@dataclass(frozen=True, slots=True)
class PingFrame:
    ping_id: int


@dataclass(frozen=True, slots=True)
class GoAwayFrame:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True, slots=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    flags: Flag = Flag.NONE


@dataclass(frozen=True, slots=True)
class WindowUpdateFrame:
    stream_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class UnknownControlFrame:
    """A control frame of a type SPDY/3 does not define; receivers ignore it."""

    type: int
    flags: int
    payload: bytes = field(repr=False)


Frame = (
    DataFrame
    | SynStreamFrame
    | SynReplyFrame
    | RstStreamFrame
    | SettingsFrame
    | PingFrame
    | GoAwayFrame
    | HeadersFrame
    | WindowUpdateFrame
    | UnknownControlFrame
)


# --- encoding -----------------------------------------------------------------


def _check_id(value: int, what: str, *, zero_ok: bool = False) -> None:
    if not (0 if zero_ok else 1) <= value <= MAX_STREAM_ID:
        raise LocalProtocolError(f"{what} {value} is out of range")


def _control(ftype: FrameType, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_LENGTH:
        raise LocalProtocolError("control frame payload exceeds 2**24-1 bytes")
    return (
        _HEADER.pack(CONTROL_BIT | (SPDY_VERSION << 16) | ftype, (flags << 24) | len(payload))
        + payload
    )


def encode_data_header(stream_id: int, length: int, flags: int = 0) -> bytes:
    """The 8-byte header of a DATA frame (for scatter-gather writes)."""
    _check_id(stream_id, "stream id")
    if not 0 <= length <= MAX_FRAME_LENGTH:
        raise LocalProtocolError(f"DATA length {length} exceeds 2**24-1")
    return _HEADER.pack(stream_id, (flags << 24) | length)


_PING = struct.Struct(">III")
_PING_WORD = CONTROL_BIT | (SPDY_VERSION << 16) | FrameType.PING


def encode_ping(ping_id: int) -> bytes:
    """A PING frame, built in one step (PINGs are on the round-trip path)."""
    # 0 is a valid (even, server-side) id: a peer may send it and we echo it.
    if not 0 <= ping_id <= 0xFFFFFFFF:
        raise LocalProtocolError("ping id must be 0..2**32-1")
    return _PING.pack(_PING_WORD, 4, ping_id)


def encode_frame(frame: Frame, compressor: HeaderCompressor | None = None) -> bytes:
    """Serialise ``frame``. Header-bearing frames need the connection's compressor,
    and must then be written in the order they were encoded."""
    if isinstance(frame, DataFrame):
        return encode_data_header(frame.stream_id, len(frame.data), frame.flags) + frame.data
    if isinstance(frame, SynStreamFrame | SynReplyFrame | HeadersFrame):
        if compressor is None:
            raise LocalProtocolError("header-bearing frames need a HeaderCompressor")
        _check_id(frame.stream_id, "stream id")
        block = compressor.compress(frame.headers)
        if isinstance(frame, SynStreamFrame):
            _check_id(frame.associated_stream_id, "associated stream id", zero_ok=True)
            if not 0 <= frame.priority <= 7:
                raise LocalProtocolError("priority must be 0..7")
            fixed = _SYN_STREAM_FIXED.pack(
                frame.stream_id, frame.associated_stream_id, frame.priority << 5, frame.slot
            )
            return _control(FrameType.SYN_STREAM, frame.flags, fixed + block)
        ftype = FrameType.SYN_REPLY if isinstance(frame, SynReplyFrame) else FrameType.HEADERS
        return _control(ftype, frame.flags, _U32.pack(frame.stream_id) + block)
    if isinstance(frame, RstStreamFrame):
        _check_id(frame.stream_id, "stream id")
        return _control(FrameType.RST_STREAM, 0, _U32x2.pack(frame.stream_id, frame.status))
    if isinstance(frame, SettingsFrame):
        body = [_U32.pack(len(frame.entries))]
        for e in frame.entries:
            body.append(_U32x2.pack((e.flags << 24) | (e.id & 0xFFFFFF), e.value))
        return _control(FrameType.SETTINGS, frame.flags, b"".join(body))
    if isinstance(frame, PingFrame):
        return encode_ping(frame.ping_id)
    if isinstance(frame, GoAwayFrame):
        _check_id(frame.last_good_stream_id, "last good stream id", zero_ok=True)
        return _control(
            FrameType.GOAWAY, 0, _U32x2.pack(frame.last_good_stream_id, frame.status)
        )
    if isinstance(frame, WindowUpdateFrame):
        _check_id(frame.stream_id, "stream id", zero_ok=True)
        if not 1 <= frame.delta <= MAX_STREAM_ID:
            raise LocalProtocolError("window delta must be 1..2**31-1")
        return _control(FrameType.WINDOW_UPDATE, 0, _U32x2.pack(frame.stream_id, frame.delta))
    if isinstance(frame, UnknownControlFrame):
        return _HEADER.pack(
            CONTROL_BIT | (SPDY_VERSION << 16) | frame.type,
            (frame.flags << 24) | len(frame.payload),
        ) + frame.payload
    raise LocalProtocolError(f"not a frame: {frame!r}")


# --- decoding -----------------------------------------------------------------

#: DATA payloads from this size on make :attr:`FrameDecoder.read_hint` suggest
#: reading the next frame's header alone (then its payload with no copy).
LARGE_DATA = 64 * 1024
#: Payload still due from which :attr:`FrameDecoder.read_hint` suggests receiving
#: it directly as one ``bytes`` object, whatever the frame's size.
DIRECT_READ = 32 * 1024
_S_HEADER = 0
_S_DATA = 1
_S_CONTROL = 2
_S_DISCARD = 3

_FIXED_LENGTH = {
    FrameType.RST_STREAM: 8,
    FrameType.PING: 4,
    FrameType.GOAWAY: 8,
    FrameType.WINDOW_UPDATE: 8,
}
_MIN_LENGTH = {FrameType.SYN_STREAM: 10, FrameType.SYN_REPLY: 4, FrameType.HEADERS: 4,
               FrameType.SETTINGS: 4}


#: Every 8-bit flags value as a Flag, built once: ``Flag(n)`` costs an enum
#: construction per frame (measured 11 enum calls per short stream).
_FLAGS: tuple[Flag, ...] = tuple(Flag(n) for n in range(256))
_FRAME_TYPES: dict[int, FrameType] = {t.value: t for t in FrameType}


class PyFrameDecoder:
    """Incremental SPDY/3 frame parser (pure Python; see :data:`FrameDecoder`).

    Call :meth:`receive` with each chunk, then :meth:`next_frame` until it returns
    None. Errors are :class:`RemoteProtocolError`; after a stream error (DATA
    frame over ``max_data_frame``: its payload is skipped) parsing can resume
    with :meth:`next_frame`.

    This class is the reference: ``muxstream/_csrc/decoder.c`` is its compiled
    twin, which must return equal frames and raise equal errors for every input.
    """

    def __init__(
        self,
        decompressor: HeaderDecompressor | None = None,
        *,
        max_control_frame: int = DEFAULT_MAX_CONTROL_FRAME,
        max_data_frame: int = MAX_FRAME_LENGTH,
    ) -> None:
        self.decompressor = decompressor or HeaderDecompressor()
        self.max_control_frame = max_control_frame
        self.max_data_frame = max_data_frame
        self._pending = bytearray()  # a partial frame header or control payload
        self._chunk: memoryview = memoryview(b"")
        self._whole: bytes | None = None  # the chunk itself when it is ``bytes``
        self._small_run = 2  # DATA frames under LARGE_DATA since the last large one (max 2)
        self._pos = 0
        self._state = _S_HEADER
        self._remaining = 0  # payload bytes still due (DATA, CONTROL, DISCARD)
        self._stream_id = 0
        self._flags = 0
        self._ctype = 0
        self._broken = False

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """Borrow ``data`` until the next call; read its frames with :meth:`next_frame`.

        Reading until :meth:`next_frame` returns None consumes the whole chunk;
        bytes a caller left unparsed are kept (copied) and parsed first.
        """
        rest = len(self._chunk) - self._pos
        if rest:
            data = bytes(self._chunk[self._pos :]) + bytes(data)
        self._whole = data if type(data) is bytes else None
        self._chunk = memoryview(data).cast("B") if data else memoryview(b"")
        self._pos = 0

    @property
    def data_due(self) -> int:
        """Payload bytes of the current DATA frame still to come, once the chunk is used up.

        0 unless the decoder has consumed its whole chunk in the middle of a DATA
        payload. A reader may then receive up to this many bytes as one ``bytes``
        object and pass it to :meth:`receive`: that piece is handed out as it is,
        with no copy (the zero-copy path for large frames).
        """
        if self._state == _S_DATA and self._pos == len(self._chunk):
            return self._remaining
        return 0

    @property
    def read_hint(self) -> int:
        """How a reader that wants to save copies should read next.

        ``n > 0``: :attr:`data_due` -- receive up to ``n`` bytes as one ``bytes``
        object (given when at least :data:`DIRECT_READ` bytes are due, or while
        large frames arrive, as below). ``-FRAME_HEADER_SIZE``:
        everything is parsed, at a frame boundary, and one of the last two DATA
        frames had at least :data:`LARGE_DATA` bytes -- the next frame is likely
        large too (one small frame in between, a sender's leftover, does not
        change that), so read just its header, then its payload directly.
        ``0``: no hint, read as much as is available.
        """
        due = self.data_due
        if due:
            # Among large frames, a small payload (a large frame's tail, or a
            # sender's leftover) comes directly too: read into a shared buffer,
            # it would bring the next frames along, and their payloads would be
            # copied (16 busy streams: 46 % of all bytes were).
            if due >= DIRECT_READ or self._small_run < 2:
                return due
            return 0
        if (self._state == _S_HEADER and self._pos == len(self._chunk) and not self._pending
                and self._small_run < 2):
            return -FRAME_HEADER_SIZE
        return 0

    def release(self) -> None:
        """Stop borrowing the current chunk (copying out whatever is not parsed yet)."""
        rest = len(self._chunk) - self._pos
        self._chunk = memoryview(bytes(self._chunk[self._pos :]) if rest else b"")
        self._whole = None
        self._pos = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._chunk) - self._pos + len(self._pending)

    def next_frame(self) -> Frame | None:
        """The next complete frame (or DATA piece), or None when more bytes are needed."""
        if self._broken:
            raise RemoteProtocolError.session("the frame stream is already broken")
        try:
            return self._next()
        except RemoteProtocolError as exc:
            if exc.fatal:
                self._broken = True
            raise

    def _take_pending(self, need: int) -> bool:
        """Fill ``_pending`` up to ``need`` bytes from the chunk; True when complete."""
        want = need - len(self._pending)
        avail = len(self._chunk) - self._pos
        n = want if want < avail else avail
        if n:
            self._pending += self._chunk[self._pos : self._pos + n]
            self._pos += n
        return len(self._pending) == need

    def _next(self) -> Frame | None:
        chunk = self._chunk
        while True:
            state = self._state
            if state == _S_HEADER:
                if not self._pending and len(chunk) - self._pos >= FRAME_HEADER_SIZE:
                    first, second = _HEADER.unpack_from(chunk, self._pos)
                    self._pos += FRAME_HEADER_SIZE
                elif self._take_pending(FRAME_HEADER_SIZE):
                    first, second = _HEADER.unpack_from(self._pending, 0)
                    self._pending.clear()
                else:
                    return None
                self._flags = second >> 24
                length = second & 0xFFFFFF
                if first & CONTROL_BIT:
                    version = (first >> 16) & 0x7FFF
                    if version != SPDY_VERSION:
                        raise RemoteProtocolError.session(f"unsupported SPDY version {version}")
                    if length > self.max_control_frame:
                        raise RemoteProtocolError.session(
                            f"control frame of {length} bytes (limit {self.max_control_frame})"
                        )
                    self._ctype = first & 0xFFFF
                    self._remaining = length
                    self._state = _S_CONTROL
                    continue
                stream_id = first & 0x7FFFFFFF
                if stream_id == 0:
                    raise RemoteProtocolError.session("DATA frame on stream 0")
                self._stream_id = stream_id
                self._remaining = length
                if length >= LARGE_DATA:
                    self._small_run = 0
                elif self._small_run < 2:
                    self._small_run += 1
                if length > self.max_data_frame:
                    self._state = _S_DISCARD
                    raise RemoteProtocolError.stream(
                        f"DATA frame of {length} bytes (limit {self.max_data_frame})",
                        stream_id,
                        RstStatus.FRAME_TOO_LARGE,
                    )
                if length == 0:
                    return DataFrame(stream_id, b"", _FLAGS[self._flags])
                self._state = _S_DATA
                continue
            if state == _S_DATA:
                avail = len(chunk) - self._pos
                if not avail:
                    return None
                take = self._remaining if self._remaining < avail else avail
                if take == avail and not self._pos and self._whole is not None:
                    piece = self._whole  # the whole chunk is payload: no copy
                else:
                    piece = bytes(chunk[self._pos : self._pos + take])
                self._pos += take
                self._remaining -= take
                if self._remaining:
                    return DataFrame(self._stream_id, piece, Flag.NONE, True)
                self._state = _S_HEADER
                return DataFrame(self._stream_id, piece, _FLAGS[self._flags])
            if state == _S_DISCARD:
                avail = len(chunk) - self._pos
                take = self._remaining if self._remaining < avail else avail
                self._pos += take
                self._remaining -= take
                if self._remaining:
                    return None
                self._state = _S_HEADER
                continue
            # _S_CONTROL
            need = self._remaining
            payload: bytes | bytearray | memoryview
            if not self._pending and len(chunk) - self._pos >= need:
                payload = chunk[self._pos : self._pos + need]
                self._pos += need
            elif self._take_pending(need):
                payload = bytes(self._pending)
                self._pending.clear()
            else:
                return None
            self._state = _S_HEADER
            return self._parse_control(self._ctype, self._flags, payload)

    def _parse_control(
        self, ctype: int, flags: int, payload: bytes | bytearray | memoryview
    ) -> Frame:
        length = len(payload)
        known = _FRAME_TYPES.get(ctype)
        if known is None:
            return UnknownControlFrame(ctype, flags, bytes(payload))
        fixed = _FIXED_LENGTH.get(known)
        if fixed is not None and length != fixed:
            raise RemoteProtocolError.session(f"{known.name} frame of {length} bytes")
        if length < _MIN_LENGTH.get(known, 0):
            raise RemoteProtocolError.session(f"{known.name} frame too short ({length} bytes)")
        fl = _FLAGS[flags]
        if known is FrameType.SYN_STREAM:
            sid, assoc, pri, slot = _SYN_STREAM_FIXED.unpack_from(payload, 0)
            headers = self.decompressor.decompress(payload[10:])
            return SynStreamFrame(sid & MAX_STREAM_ID, headers, fl, assoc & MAX_STREAM_ID,
                                  pri >> 5, slot)
        if known is FrameType.SYN_REPLY or known is FrameType.HEADERS:
            (sid,) = _U32.unpack_from(payload, 0)
            headers = self.decompressor.decompress(payload[4:])
            cls = SynReplyFrame if known is FrameType.SYN_REPLY else HeadersFrame
            return cls(sid & MAX_STREAM_ID, headers, fl)
        if known is FrameType.RST_STREAM:
            sid, status = _U32x2.unpack_from(payload, 0)
            return RstStreamFrame(sid & MAX_STREAM_ID, status)
        if known is FrameType.SETTINGS:
            (count,) = _U32.unpack_from(payload, 0)
            if length != 4 + 8 * count:
                raise RemoteProtocolError.session(
                    f"SETTINGS frame of {length} bytes for {count} entries"
                )
            entries = []
            for i in range(count):
                fid, value = _U32x2.unpack_from(payload, 4 + 8 * i)
                entries.append(SettingsEntry(fid & 0xFFFFFF, value, SettingsFlag(fid >> 24)))
            return SettingsFrame(tuple(entries), fl)
        if known is FrameType.PING:
            (pid,) = _U32.unpack_from(payload, 0)
            return PingFrame(pid)
        if known is FrameType.GOAWAY:
            last, status = _U32x2.unpack_from(payload, 0)
            return GoAwayFrame(last & MAX_STREAM_ID, status)
        # WINDOW_UPDATE
        sid, delta = _U32x2.unpack_from(payload, 0)
        return WindowUpdateFrame(sid & MAX_STREAM_ID, delta & MAX_STREAM_ID)


def setup_compiled(module: Any) -> None:
    """Hand the compiled decoder (``muxstream._speedups``) the classes it builds."""
    module.setup_frames(
        DataFrame=DataFrame,
        SynStreamFrame=SynStreamFrame,
        SynReplyFrame=SynReplyFrame,
        RstStreamFrame=RstStreamFrame,
        SettingsEntry=SettingsEntry,
        SettingsFrame=SettingsFrame,
        PingFrame=PingFrame,
        GoAwayFrame=GoAwayFrame,
        HeadersFrame=HeadersFrame,
        WindowUpdateFrame=WindowUpdateFrame,
        UnknownControlFrame=UnknownControlFrame,
        RemoteProtocolError=RemoteProtocolError,
        HeaderDecompressor=HeaderDecompressor,
        flags=_FLAGS,
        flag_none=Flag.NONE,
        settings_flag=SettingsFlag,
        frame_too_large=RstStatus.FRAME_TOO_LARGE,
        default_max_control_frame=DEFAULT_MAX_CONTROL_FRAME,
        max_frame_length=MAX_FRAME_LENGTH,
        large_data=LARGE_DATA,
        direct_read=DIRECT_READ,
    )


if speedups is not None:
    setup_compiled(speedups)

#: The frame decoder in use: the compiled twin of :class:`PyFrameDecoder` when
#: the accelerator is active (``muxstream._accel.ACCELERATED``), else that class.
if TYPE_CHECKING:
    FrameDecoder = PyFrameDecoder
else:
    FrameDecoder = PyFrameDecoder if speedups is None else speedups.FrameDecoder

__all__ = [
    "DEFAULT_MAX_CONTROL_FRAME",
    "DataFrame",
    "Frame",
    "FrameDecoder",
    "GoAwayFrame",
    "HeadersFrame",
    "PingFrame",
    "PyFrameDecoder",
    "RstStreamFrame",
    "SettingsEntry",
    "SettingsFrame",
    "SettingsId",
    "SynReplyFrame",
    "SynStreamFrame",
    "UnknownControlFrame",
    "WindowUpdateFrame",
    "encode_data_header",
    "encode_frame",
]
