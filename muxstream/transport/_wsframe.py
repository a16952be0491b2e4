"""WebSocket frames on the data path (RFC 6455 section 5): parse incoming, build outgoing.

Theory of operation
-------------------
wsproto parses and builds frames in Python and copies each payload several
times; its client-side masking alone costs about 2 CPU seconds per GiB on each
side. :class:`WebSocketStream` therefore moves binary data itself and leaves
wsproto what wsproto is good at -- the close handshake and the control frames:

* :class:`FrameReader` parses what the peer sends. Data frames (binary and
  continuation) become payload pieces as they arrive -- unmasked in one pass,
  or, unmasked already, handed out as the chunk itself when the chunk is all
  payload -- without ever buffering a whole frame. A control frame (close, ping,
  pong) is gathered whole (at most 131 bytes) and handed back raw, for the
  caller to feed to wsproto's ``Connection``; wsproto thus only ever sees
  control frames, which do not take part in message fragmentation. Everything
  after a close frame is ignored, as the peer may send nothing after it.
* :func:`ws_frame` builds one frame (header and, for a client, the masked
  payload) in one allocation.

Every header rule wsproto enforces is enforced here first, with its close code
(1002 for framing, 1003 for a text message on this binary stream), so the
stream's error handling is unchanged. :func:`mask` and :func:`ws_frame` run
compiled (``muxstream._speedups``) when the accelerator is active; the
functions below are their pure-Python twins and the reference.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Literal

from .._accel import speedups

__all__ = [
    "OP_BINARY",
    "FrameParseError",
    "FrameReader",
    "mask",
    "py_mask",
    "py_ws_frame",
    "ws_frame",
]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_OPCODES = frozenset({OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG})
FIN = 0x80
_PROTOCOL_ERROR = 1002
_UNSUPPORTED_DATA = 1003
_MAX_CONTROL_PAYLOAD = 125
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


#: _XOR[k] maps every byte b to b ^ k, for bytes.translate.
_XOR = [bytes(b ^ k for b in range(256)) for k in range(256)]


def py_mask(data: bytes | bytearray | memoryview, key: bytes, phase: int = 0) -> bytes:
    """``data`` XOR the 4-byte ``key``, starting at key byte ``phase % 4`` (RFC 6455 5.3)."""
    if len(key) != 4:
        raise ValueError("a masking key is 4 bytes")
    # Every 4th byte shares a key byte: one translate per key byte (measured ~2x
    # faster than XOR-ing the payload as one big integer).
    out = bytearray(data)
    for i in range(4):
        out[i::4] = out[i::4].translate(_XOR[key[(phase + i) % 4]])
    return bytes(out)


def py_ws_frame(
    first_byte: int, payload: bytes | bytearray | memoryview, key: bytes | None = None
) -> bytes:
    """One frame: ``first_byte`` (FIN, RSV, opcode), the shortest length encoding,
    then ``payload`` -- masked with ``key`` (sent first) when given, as a client must."""
    if not 0 <= first_byte <= 255:
        raise ValueError("first_byte must be 0..255")
    if key is not None and len(key) != 4:
        raise ValueError("a masking key is 4 bytes")
    n = len(payload)
    mask_bit = 0x80 if key is not None else 0
    if n > 0xFFFF:
        head = bytes((first_byte, mask_bit | 127)) + _U64.pack(n)
    elif n > _MAX_CONTROL_PAYLOAD:
        head = bytes((first_byte, mask_bit | 126)) + _U16.pack(n)
    else:
        head = bytes((first_byte, mask_bit | n))
    if key is None:
        return head + bytes(payload)
    return head + bytes(key) + py_mask(payload, key)


if TYPE_CHECKING or speedups is None:
    mask = py_mask
    ws_frame = py_ws_frame
else:
    mask = speedups.mask
    ws_frame = speedups.ws_frame


class FrameParseError(Exception):
    """The peer broke RFC 6455 framing; ``code`` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


#: What :meth:`FrameReader.parse` returns, in wire order: a data piece
#: ``("data", payload, ends_message)`` or a whole raw control frame
#: ``("control", frame_bytes, False)``.
Item = tuple[Literal["data", "control"], bytes, bool]

_S_HEADER = 0
_S_DATA = 1
_S_CONTROL = 2
_S_DONE = 3  # after a close frame or a framing error: the rest is ignored


class FrameReader:
    """Incremental parser of the frames the peer sends (see the module docs).

    Args:
        client: True on the client side, which must receive unmasked frames
            (a server must receive masked ones).
    """

    def __init__(self, *, client: bool) -> None:
        self._client = client
        self._state = _S_HEADER
        self._head = b""  # a partial frame header, or the control frame gathered so far
        self._need = 0  # control: total frame bytes; data: payload bytes still due
        self._key: bytes | None = None
        self._phase = 0  # payload bytes of the current frame so far, mod 4
        self._fin = False
        self._in_message = False  # a binary message's final frame is still to come

    @property
    def done(self) -> bool:
        """True after a close frame or a framing error: nothing more is parsed."""
        return self._state == _S_DONE

    def parse(self, data: bytes) -> tuple[list[Item], FrameParseError | None]:
        """Parse ``data``; return the items it completed and the error it hit (if any).

        Items before the error are valid and must be processed first. After an
        error or a close frame, further input is ignored.
        """
        items: list[Item] = []
        view = memoryview(data)
        end = len(data)
        pos = 0
        try:
            while pos < end:
                state = self._state
                if state == _S_DATA:
                    take = self._need if self._need < end - pos else end - pos
                    if self._key is not None:
                        piece = mask(view[pos : pos + take], self._key, self._phase)
                        self._phase = (self._phase + take) & 3
                    elif take == end and type(data) is bytes:
                        piece = data  # the whole chunk is payload: no copy
                    else:
                        piece = bytes(view[pos : pos + take])
                    pos += take
                    self._need -= take
                    if self._need:
                        items.append(("data", piece, False))
                    else:
                        self._state = _S_HEADER
                        items.append(("data", piece, self._fin))
                elif state == _S_HEADER:
                    pos = self._parse_header(view, pos, items)
                elif state == _S_CONTROL:
                    take = self._need - len(self._head)
                    if take > end - pos:
                        take = end - pos
                    self._head += view[pos : pos + take]
                    pos += take
                    if len(self._head) == self._need:
                        self._control_done(items)
                else:
                    break
        except FrameParseError as exc:
            self._state = _S_DONE
            self._head = b""
            return items, exc
        return items, None

    def _parse_header(self, view: memoryview, pos: int, items: list[Item]) -> int:
        """Parse one frame header at ``pos`` (or keep the partial one); return the new pos."""
        buf: bytes | memoryview
        if self._head:
            take = 14 - len(self._head)
            buf = self._head + view[pos : pos + take]
            base = -len(self._head)  # buf[i] is view[pos + base + i]
        else:
            buf = view[pos : pos + 14]
            base = 0
        avail = len(buf)
        if avail < 2:
            self._head = bytes(buf)
            return pos + avail + base
        b0, b1 = buf[0], buf[1]
        opcode = b0 & 0x0F
        fin = bool(b0 & FIN)
        masked = bool(b1 & 0x80)
        length = b1 & 0x7F
        if opcode not in _OPCODES:
            raise FrameParseError(_PROTOCOL_ERROR, f"Invalid opcode {opcode:#x}")
        control = opcode >= OP_CLOSE
        if control and not fin:
            raise FrameParseError(_PROTOCOL_ERROR, "Invalid attempt to fragment control frame")
        if control and length > _MAX_CONTROL_PAYLOAD:
            raise FrameParseError(_PROTOCOL_ERROR, "Control frame with payload len > 125")
        size = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if masked else 0)
        if avail < size:
            self._head = bytes(buf)
            return pos + avail + base
        at = 2
        if length == 126:
            (length,) = _U16.unpack_from(buf, 2)
            at = 4
            if length <= _MAX_CONTROL_PAYLOAD:
                raise FrameParseError(
                    _PROTOCOL_ERROR, "Payload length used 2 bytes when 1 would have sufficed"
                )
        elif length == 127:
            (length,) = _U64.unpack_from(buf, 2)
            at = 10
            if length <= 0xFFFF:
                raise FrameParseError(
                    _PROTOCOL_ERROR, "Payload length used 8 bytes when 2 would have sufficed"
                )
            if length >> 63:
                raise FrameParseError(_PROTOCOL_ERROR, "8-byte payload length with non-zero MSB")
        if b0 & 0x70:
            raise FrameParseError(_PROTOCOL_ERROR, "Reserved bit set unexpectedly")
        if masked and self._client:
            raise FrameParseError(_PROTOCOL_ERROR, "client received unexpected masked frame")
        if not masked and not self._client:
            raise FrameParseError(_PROTOCOL_ERROR, "server received unexpected unmasked frame")
        consumed = pos + base + size
        if control:
            # Gathered whole, header included, for wsproto.
            self._head = bytes(buf[:size])
            self._need = size + length
            self._state = _S_CONTROL
            if not length:
                self._control_done(items)
            return consumed
        if opcode == OP_CONTINUATION:
            if not self._in_message:
                raise FrameParseError(_PROTOCOL_ERROR, "unexpected CONTINUATION")
        elif self._in_message:
            raise FrameParseError(_PROTOCOL_ERROR, f"expected CONTINUATION, got {opcode:#x}")
        elif opcode == OP_TEXT:
            raise FrameParseError(_UNSUPPORTED_DATA, "text message on a binary stream")
        self._head = b""
        self._in_message = not fin
        self._fin = fin
        self._key = bytes(buf[at : at + 4]) if masked else None
        self._phase = 0
        self._need = length
        if length:
            self._state = _S_DATA
        elif fin:
            items.append(("data", b"", True))
        return consumed

    def _control_done(self, items: list[Item]) -> None:
        frame = self._head
        self._head = b""
        items.append(("control", frame, False))
        self._state = _S_DONE if frame[0] & 0x0F == OP_CLOSE else _S_HEADER
