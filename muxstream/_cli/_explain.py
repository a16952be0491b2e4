"""One line that names the fact, for every expected failure of a CLI command.

:func:`describe` turns an exception (the root one, out of trio's groups) into
the text after ``muxstream COMMAND: error:``; None means a bug (then the CLI
says ``internal error`` and offers ``-v``). The command's arguments, when
given, let it name what the user typed: the address and where it came from,
whether a token or TLS was asked for. Each line says what failed, where, and
the likely cause when one is likely (docs/cli.md, "Errors").
"""

from __future__ import annotations

import argparse
import errno
import re
import socket
import ssl

import trio

from .._errors import (
    ConnectionLost,
    MuxstreamError,
    PingTimeout,
    SessionClosed,
    SessionGoneAway,
    StreamOpenTimeout,
    StreamResetError,
)
from .._failures import leaves
from ..protocol import GoAwayStatus, RstStatus
from ._common import DEFAULT_POD, ENV_ADDRESS, ENV_TOKEN, BadToken, CliError

__all__ = ["HelloTimeout", "describe", "root_error"]

class HelloTimeout(CliError):
    """The server did not answer the session's first stream (``_service.hello``)."""


ADD_TLS = "add --tls, or --cacert FILE for a private CA"
NO_TOKEN = f"no token given: set {ENV_TOKEN} or --token (the server requires one)"
#: OpenSSL reasons a TLS client gets from a server that answered in plain text.
_PLAIN_TEXT_ANSWERS = ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE",
                       "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL")
#: Stream resets, as a user reads them.
_RESETS: dict[int, str] = {
    RstStatus.REFUSED_STREAM: (
        "the server refused a new stream: it has as many streams open as its limit "
        "allows (open fewer at once)"
    ),
    RstStatus.CANCEL: "the server cancelled the stream (CANCEL)",
    RstStatus.INTERNAL_ERROR: "the server failed on the stream (INTERNAL_ERROR)",
}


def root_error(exc: BaseException) -> BaseException:
    """The exception that explains a failure, out of trio's exception groups."""
    found = [e for e in leaves(exc) if not isinstance(e, trio.Cancelled)]
    return found[0] if found else exc


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``'s causes, nearest first (``__cause__``, else ``__context__``)."""
    out: list[BaseException] = []
    current = exc.__cause__ or exc.__context__
    while current is not None and current not in out:
        out.extend(leaves(current))
        current = current.__cause__ or current.__context__
    return out


def _to(args: argparse.Namespace | None) -> str:
    """The address the command used, or "the server"."""
    address = getattr(args, "address", None)
    return str(address) if address is not None else "the server"


def _at(args: argparse.Namespace | None) -> str:
    address = getattr(args, "address", None)
    return f" at {address}" if address is not None else ""


def _after(args: argparse.Namespace | None) -> str:
    timeout = getattr(args, "timeout", None)
    return f" after {timeout:g} s" if timeout is not None else ""


def hello_timeout_text(args: argparse.Namespace | None) -> str:
    """The raw session's hello went unanswered (a TLS server waits for a ClientHello)."""
    hint = f"; if the server speaks TLS, {ADD_TLS}" if _plain(args) else ""
    return f"timed out{_after(args)} waiting for the server{_at(args)} to answer the hello{hint}"


def _plain(args: argparse.Namespace | None) -> bool:
    """Whether the command connected without TLS (a likely cause of silence)."""
    return args is not None and not (getattr(args, "tls", False) or getattr(args, "cacert", None))


def _token_text(args: argparse.Namespace | None) -> str:
    if args is not None and not getattr(args, "token", None):
        return NO_TOKEN
    return f"bad token: the server refused it (check --token or {ENV_TOKEN})"


def _resolve_text(exc: socket.gaierror, args: argparse.Namespace | None) -> str:
    address = getattr(args, "address", None)
    if address is None:
        return f"cannot resolve the host name: {exc.strerror or exc}"
    text = f"cannot resolve the host name {address.host!r}: {exc.strerror or exc}"
    source = getattr(args, "address_source", None)
    if source == ENV_ADDRESS:
        text += f" (it came from {ENV_ADDRESS}={getattr(args, 'address_text', address)})"
    if "/" in address.host or address.host.lower() in ("http", "https", "ws", "wss"):
        text += "; it looks like a URL: give HOST:PORT, e.g. -a localhost:7000"
    return text


def _tls_text(error: ssl.SSLError, args: argparse.Namespace | None) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"the TLS certificate of {_to(args)} is not trusted: {error.verify_message} "
                "(give --cacert FILE with the CA that signed it)")
    reason = (error.reason or "").upper()
    if reason in _PLAIN_TEXT_ANSWERS:
        return f"the server{_at(args)} does not speak TLS: drop --tls/--cacert"
    if isinstance(error, ssl.SSLEOFError) or "EOF" in reason:
        return (f"the server{_at(args)} closed the connection during the TLS handshake "
                "(does it speak TLS?)")
    return f"the TLS handshake with {_to(args)} failed: {error.reason or error}"


def _oserror_text(exc: OSError, args: argparse.Namespace | None) -> str:
    if isinstance(exc, socket.gaierror):
        return _resolve_text(exc, args)
    if isinstance(exc, ssl.SSLError):
        return _tls_text(exc, args)
    # trio.open_tcp_stream: "all attempts to connect to H:P failed", from a group
    # of the real errors.
    inner = [e for e in _chain(exc) if isinstance(e, OSError)]
    first = inner[0] if inner else exc
    if isinstance(first, ConnectionRefusedError):
        return (f"cannot connect to {_to(args)}: connection refused "
                "(is `muxstream serve` running there?)")
    if "attempts to connect" in str(exc) or inner:
        reason = first.strerror or str(first)
        return f"cannot connect to {_to(args)}: {reason} (is `muxstream serve` running there?)"
    if exc.errno == errno.EADDRINUSE:
        return f"address already in use{': ' + str(exc.filename) if exc.filename else ''}"
    text = exc.strerror or str(exc)
    return f"{exc.filename}: {text}" if exc.filename else text


def _fact(exc: BaseException, args: argparse.Namespace | None) -> tuple[str, bool] | None:
    """What broke a connection or stream, from its cause chain: (text, whole), where
    ``whole`` means the text is a reason on its own (the server closed, reset,
    refused), else a detail of a lost connection. None if nothing says."""
    for cause in _chain(exc):
        if isinstance(cause, SessionGoneAway):
            return _goaway_text(cause), True
        if isinstance(cause, SessionClosed):
            return "the server closed the session", True
        if isinstance(cause, StreamResetError):
            if cause.status == RstStatus.INVALID_CREDENTIALS:
                return _token_text(args), True
            return _reset_text(cause), True
        if isinstance(cause, ssl.SSLError):
            return _tls_text(cause, args), True
        if isinstance(cause, MuxstreamError):
            return _humanize(str(cause)) or type(cause).__name__, False
        if isinstance(cause, OSError):
            return cause.strerror or str(cause), False
    return None


def _goaway_text(exc: SessionGoneAway) -> str:
    # GOAWAY: the server ends the session (shutting down, or done with this client).
    if exc.status == GoAwayStatus.PROTOCOL_ERROR:
        return "the server closed the session: it says we broke the protocol"
    if exc.status == GoAwayStatus.INTERNAL_ERROR:
        return "the server closed the session after an internal error"
    return "the server closed the session"


#: ``ConnectionResetError(104, 'Connection reset by peer')`` inside a message.
_ERROR_REPR = re.compile(r"\b[A-Z]\w*(?:Error|Exception)\((?:-?\d+, )?'([^']*)'\)")
_BARE_REPR = re.compile(r"\b[A-Z]\w*(?:Error|Exception)\(\)")


def _humanize(text: str) -> str:
    """An exception's repr inside a message, reduced to its words."""
    text = _ERROR_REPR.sub(lambda m: m.group(1), text)
    return _BARE_REPR.sub("the connection broke", text)


def _reset_text(exc: StreamResetError) -> str:
    if not exc.remote:
        return str(exc)
    return _RESETS.get(exc.status) or f"the server reset the stream ({_status_name(exc.status)})"


def _status_name(status: int) -> str:
    try:
        return RstStatus(status).name
    except ValueError:
        return str(status)


def _lost_text(exc: BaseException, args: argparse.Namespace | None) -> str:
    """A broken connection or stream: our own wrapper's words (``connection lost
    before the exit status``), then the fact, each said once."""
    own = str(exc) if str(exc).startswith("connection lost") else None
    fact = _fact(exc, args)
    if fact is None:
        return own or "connection lost"
    text, whole = fact
    if whole and own is None:
        return text
    text = text.removeprefix("connection lost").lstrip(": ")
    head = own or "connection lost"
    return f"{head}: {text}" if text else head


def _handshake_text(exc: Exception, args: argparse.Namespace | None) -> str | None:
    from ..transport import (
        ConnectTimeout,
        HandshakeError,
        HandshakeNoAnswer,
        HandshakeTimeout,
        TLSHandshakeTimeout,
    )

    if isinstance(exc, ConnectTimeout):
        return (f"timed out{_after(args)} connecting to {_to(args)} (TCP): is the address "
                "right? a firewall may be dropping the packets")
    if isinstance(exc, TLSHandshakeTimeout):
        return (f"timed out{_after(args)} in the TLS handshake with {_to(args)}: "
                "does the server speak TLS?")
    if isinstance(exc, HandshakeTimeout):
        hint = f"; if the server speaks TLS, {ADD_TLS}" if _plain(args) else ""
        return (f"timed out{_after(args)} waiting for the server{_at(args)} to answer the "
                f"upgrade request{hint}")
    if isinstance(exc, HandshakeNoAnswer):
        if exc.tls:
            return f"the server{_at(args)} speaks TLS: {ADD_TLS}"
        text = f"the server{_at(args)} closed the connection without answering the upgrade"
        return f"{text}: it probably speaks TLS: {ADD_TLS}" if _plain(args) else text
    if isinstance(exc, HandshakeError):
        return f"the upgrade failed: {exc}"
    return None


def describe(exc: BaseException, args: argparse.Namespace | None = None) -> str | None:
    """One line for an expected failure, or None if ``exc`` is a bug.

    ``args`` (the command's parsed arguments) lets the line name what the user
    gave: the address and its source, whether a token or TLS was asked for.
    """
    from ..remote import CopyError, RemoteError, RemoteStatusError
    from ..transport import TransportError, UpgradeRefused

    if isinstance(exc, HelloTimeout):
        return hello_timeout_text(args)
    if isinstance(exc, BadToken):
        return _token_text(args) if args is not None and not args.token else str(exc)
    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, RemoteError | UpgradeRefused):
        status = getattr(exc, "status", 0)
        if status == 401:
            return _token_text(args) + " (HTTP 401)"
        if isinstance(exc, RemoteError) and status == 404:
            # The server's words name what is missing; ours, what `serve` offers.
            served = f'; `muxstream serve` serves one pod, "{DEFAULT_POD}"'
            return f"{exc.message} (HTTP 404){served if 'pods' in exc.message else ''}"
        if isinstance(exc, RemoteError):
            return f"the server refused: {exc.message} (HTTP {status})"
        body = exc.body.decode("utf-8", "replace")
        if "HTTPS server" in body:  # Go's answer to plain HTTP on a TLS port
            return f"the server{_at(args)} speaks TLS: {ADD_TLS}"
        return f"the server refused the upgrade: HTTP {status} {exc.reason}".rstrip()
    if isinstance(exc, CopyError | RemoteStatusError):
        return str(exc)
    if isinstance(exc, Exception) and (text := _handshake_text(exc, args)) is not None:
        return text
    if isinstance(exc, OSError):
        return _oserror_text(exc, args)
    if isinstance(exc, PingTimeout | StreamOpenTimeout):
        return f"timed out: {exc}"
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, trio.BrokenResourceError):
        return _lost_text(exc, args)
    if isinstance(exc, SessionGoneAway):
        return _goaway_text(exc)
    if isinstance(exc, SessionClosed):
        return "the server closed the session"
    if isinstance(exc, ConnectionLost | TransportError):
        text = str(exc)
        return text if text.startswith("connection lost") else f"connection lost: {text}"
    if isinstance(exc, StreamResetError):
        return _reset_text(exc)
    return None
