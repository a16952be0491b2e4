"""The error-stream Status document and the resize message (sans-IO).

Theory of operation: after the command ends, the server writes exactly one
document on the error stream (SPDY) or error channel 3 (WebSocket) and closes
it. From protocol v4 on it is a JSON ``metav1.Status``; v2/v3 carry plain text
(an empty stream means success). client-go's ``errorDecoderV4``
(tools/remotecommand/v4.go) maps ``status: Success`` to success and
``status: Failure, reason: NonZeroExitCode`` with a cause of type ``ExitCode``
(JSON key ``reason``, value the decimal code, parsed as a uint8) to an exit
code; any other failure is an error whose text is ``message``.

The resize stream carries a sequence of JSON objects ``{"Width":w,"Height":h}``
(client-go tools/remotecommand/resize.go encodes ``TerminalSize`` with
``json.Encoder``, so each object ends with a newline).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

#: metav1.Status reasons and cause types (apimachinery util/remotecommand/constants.go).
NON_ZERO_EXIT_CODE_REASON = "NonZeroExitCode"
EXIT_CODE_CAUSE_TYPE = "ExitCode"


class RemoteStatusError(Exception):
    """The error stream reported a failure that is not an exit code."""


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a remote command ended.

    ``returncode`` is the exit code (0-255; a process killed by signal N is
    reported as 128+N, as container runtimes do). ``message`` is the
    human-readable text that travels with a failure.
    """

    returncode: int
    message: str = ""


def encode_status(returncode: int, message: str = "") -> bytes:
    """The v4/v5 error-stream document for a command that exited with ``returncode``."""
    if returncode == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    code = returncode & 0xFF or 1  # the client parses a uint8; never report 0 for a failure
    text = message or f"command terminated with non-zero exit code: exit status {code}"
    return json.dumps(
        {
            "metadata": {},
            "status": "Failure",
            "message": text,
            "reason": NON_ZERO_EXIT_CODE_REASON,
            "details": {"causes": [{"reason": EXIT_CODE_CAUSE_TYPE, "message": str(code)}]},
        }
    ).encode()


def encode_error(message: str, *, reason: str = "InternalError", code: int = 500) -> bytes:
    """A v4/v5 failure that is not an exit code (the command could not run)."""
    return json.dumps(
        {
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": {"causes": [{"message": message}]},
            "code": code,
        }
    ).encode()


def decode_status(document: bytes, *, version: int = 4) -> ExitStatus:
    """Decode what the error stream carried until EOF.

    Args:
      document: every byte received on the error stream.
      version: the negotiated remotecommand protocol version (2-5). Versions
        below 4 carry plain text: empty means success, anything else an error.

    Returns the exit status. Raises :class:`RemoteStatusError` for a failure that
    carries no exit code (the command did not run, or the document is malformed).
    """
    if version < 4:
        if document:
            raise RemoteStatusError(document.decode("utf-8", "replace"))
        return ExitStatus(0)
    if not document:
        # Kubernetes always writes a Status; an empty stream means the server went
        # away before the command finished.
        raise RemoteStatusError("error stream closed without a status")
    try:
        status = json.loads(document)
    except ValueError as exc:
        raise RemoteStatusError(f"error stream protocol error: {document!r}") from exc
    if not isinstance(status, dict):
        raise RemoteStatusError(f"error stream protocol error: {document!r}")
    if status.get("status") == "Success":
        return ExitStatus(0)
    message = str(status.get("message", ""))
    if status.get("status") == "Failure" and status.get("reason") == NON_ZERO_EXIT_CODE_REASON:
        details = status.get("details") or {}
        for cause in details.get("causes") or []:
            if isinstance(cause, dict) and cause.get("reason") == EXIT_CODE_CAUSE_TYPE:
                try:
                    code = int(cause.get("message", ""))
                except ValueError:
                    break
                if 0 <= code <= 255:
                    return ExitStatus(code, message)
                break
        raise RemoteStatusError(f"error stream protocol error: no exit code in {document!r}")
    raise RemoteStatusError(message or f"remote command failed: {document!r}")


@dataclass(frozen=True, slots=True)
class TerminalSize:
    """A terminal size in character cells."""

    width: int
    height: int


def encode_resize(width: int, height: int) -> bytes:
    """One resize message, as client-go's ``json.Encoder`` writes it."""
    return json.dumps({"Width": width, "Height": height}, separators=(",", ":")).encode() + b"\n"


class ResizeDecoder:
    """Incremental decoder for the resize stream (a sequence of JSON objects).

    Feed arbitrary chunks with :meth:`feed`; it yields every complete size.
    Malformed input raises ``ValueError``; a buffer over ``max_buffer`` bytes
    without a complete object raises too (a peer cannot make us buffer forever).
    """

    def __init__(self, max_buffer: int = 4096) -> None:
        self._buffer = ""
        self._max_buffer = max_buffer
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes | bytearray) -> Iterator[TerminalSize]:
        self._buffer += data.decode("utf-8")
        while True:
            text = self._buffer.lstrip()
            if not text:
                self._buffer = ""
                return
            try:
                obj, end = self._decoder.raw_decode(text)
            except ValueError:
                if len(text) > self._max_buffer:
                    raise ValueError("resize message too large") from None
                self._buffer = text
                return
            self._buffer = text[end:]
            if not isinstance(obj, dict):
                raise ValueError(f"bad resize message: {obj!r}")
            width, height = obj.get("Width", 0), obj.get("Height", 0)
            if not (isinstance(width, int) and isinstance(height, int)):
                raise ValueError(f"bad resize message: {obj!r}")
            if not (0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF):
                raise ValueError(f"bad resize message: {obj!r}")
            yield TerminalSize(width, height)
