"""Shared pieces of the ``muxstream`` command: addresses, errors, output, progress.

Conventions every subcommand follows (docs/cli.md): exit 0 on success, 1 on an
error, the remote command's code for exec/attach; an expected failure (refused
connection, bad token, timeout, lost peer) is one readable line on stderr and
never a traceback; ``-v`` turns on debug logging (and tracebacks).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any

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
from ..protocol import RstStatus

#: The port ``serve`` listens on and clients connect to unless told otherwise.
DEFAULT_PORT = 7000
DEFAULT_HOST = "127.0.0.1"
ENV_ADDRESS = "MUXSTREAM_ADDRESS"
ENV_TOKEN = "MUXSTREAM_TOKEN"

logger = logging.getLogger("muxstream.cli")

MiB = 1024 * 1024


class CliError(Exception):
    """An expected failure: printed as one line on stderr, exit status 1."""


class BadToken(CliError):
    """The server refused our credentials."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_address(text: str, *, default_port: int = DEFAULT_PORT) -> Address:
    """``HOST:PORT``, ``HOST``, ``:PORT`` or ``PORT`` -> Address (IPv6 as ``[::1]:7000``)."""
    text = text.strip()
    if text.isdigit():
        return Address(DEFAULT_HOST, int(text))
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    try:
        number = int(port) if port else default_port
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad address {text!r}: the port must be a number"
        ) from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"bad address {text!r}: port out of range")
    return Address(host or DEFAULT_HOST, number)


def parse_size(text: str) -> int:
    """``256M``, ``1G``, ``64k``, ``1000`` -> bytes (binary units)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    suffix = t[-1:] if t[-1:] in units else ""
    try:
        value = float(t[: len(t) - len(suffix)] if suffix else t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (try 256M, 1G, 64K)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    return int(value * units[suffix])


def _number(text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (counts, stream numbers)."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0 (timeouts)."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a number of at least 0 (intervals)."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
    return value


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """--address/--token/--tls/--cacert/--timeout, shared by every client command."""
    group = parser.add_argument_group("connection")
    group.add_argument(
        "-a", "--address", type=parse_address,
        default=parse_address(os.environ.get(ENV_ADDRESS) or f"{DEFAULT_HOST}:{DEFAULT_PORT}"),
        help=f"server HOST:PORT (env {ENV_ADDRESS}; default {DEFAULT_HOST}:{DEFAULT_PORT})",
    )
    group.add_argument(
        "--token", default=os.environ.get(ENV_TOKEN),
        help=f"bearer token the server expects (env {ENV_TOKEN})",
    )
    group.add_argument("--tls", action="store_true", help="connect with TLS (system trust store)")
    group.add_argument(
        "--cacert", metavar="FILE", help="trust this CA (PEM) for TLS; implies --tls"
    )
    group.add_argument(
        "--timeout", type=positive_float, default=10.0, metavar="SECONDS",
        help="connect/handshake timeout (default 10)",
    )


def client_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.cacert:
        return ssl.create_default_context(cafile=args.cacert)
    if args.tls:
        return ssl.create_default_context()
    return None


def endpoint_url(args: argparse.Namespace) -> str:
    scheme = "https" if (args.tls or args.cacert) else "http"
    host = f"[{args.address.host}]" if ":" in args.address.host else args.address.host
    return f"{scheme}://{host}:{args.address.port}"


# --- errors -----------------------------------------------------------------------


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for sub in exc.exceptions:
            out.extend(_leaves(sub))
        return out
    return [exc]


def root_error(exc: BaseException) -> BaseException:
    """The exception that explains a failure, out of trio's exception groups."""
    leaves = [e for e in _leaves(exc) if not isinstance(e, trio.Cancelled)]
    return leaves[0] if leaves else exc


def _cause_text(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, StreamResetError) and cause.status == RstStatus.INVALID_CREDENTIALS:
        return "the server refused the token"
    if isinstance(cause, MuxstreamError | OSError):
        return str(cause) or type(cause).__name__
    return str(exc) or type(exc).__name__


def describe(exc: BaseException) -> str | None:
    """One line for an expected failure, or None if ``exc`` is a bug."""
    from ..remote import CopyError, RemoteError, RemoteStatusError
    from ..transport import HandshakeError, TransportError, UpgradeRefused

    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, RemoteError | UpgradeRefused):
        status = getattr(exc, "status", 0)
        if status == 401:
            return "bad token: the server answered 401 Unauthorized"
        if isinstance(exc, RemoteError) and status == 404:
            return f"{exc.message} (HTTP 404)"  # the server's words name what is missing
        if isinstance(exc, RemoteError):
            return f"the server refused: {exc.message} (HTTP {status})"
        return f"the server refused the upgrade: HTTP {status}"
    if isinstance(exc, CopyError | RemoteStatusError):
        return str(exc)
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLError | HandshakeError):
        return f"TLS/handshake failed: {exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is `muxstream serve` running there?)"
    if isinstance(exc, OSError):
        text = str(exc)
        if "connect" in text and "failed" in text:
            return f"cannot connect: {text} (is `muxstream serve` running there?)"
        return f"{exc.strerror or text}" + (f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, PingTimeout | StreamOpenTimeout):
        return f"timed out: {exc}"
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, trio.BrokenResourceError):
        if isinstance(exc.__cause__, ssl.SSLError):
            return f"TLS handshake failed: {exc.__cause__}"
        if isinstance(exc.__cause__, SessionClosed | SessionGoneAway):
            return f"the peer closed the session: {exc.__cause__}"
        return f"connection lost: {_cause_text(exc)}"
    if isinstance(exc, ConnectionLost | SessionClosed | SessionGoneAway | TransportError):
        return f"connection lost: {exc}"
    if isinstance(exc, StreamResetError):
        return str(exc)
    return None


def run_command(
    name: str, main: Callable[[], Awaitable[int]], *, verbose: bool
) -> int:
    """Run ``main`` under trio; map its failures to an exit status and one line."""
    try:
        return trio.run(main)
    except KeyboardInterrupt:
        print(f"muxstream {name}: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        root = root_error(exc)
        if isinstance(root, KeyboardInterrupt):
            print(f"muxstream {name}: interrupted", file=sys.stderr)
            return 130
        line = describe(root)
        if line is None or verbose:
            logger.debug("failure", exc_info=exc)
        if line is None:
            line = f"internal error: {type(root).__name__}: {root}"
            if not verbose:
                line += " (run with -v for the traceback)"
        print(f"muxstream {name}: error: {line}", file=sys.stderr)
        return 1


def emit_json(obj: Any, stream: IO[str] | None = None) -> None:
    out = stream or sys.stdout
    out.write(json.dumps(obj, sort_keys=True) + "\n")
    out.flush()


# --- progress ---------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """A progress display on stderr.

    On a terminal: one line redrawn in place (bar, percent, rate, ETA), at most
    10 times a second. Elsewhere: ``mode="lines"`` prints a plain line per ~10 %
    (done of total, percent, rate, ETA), ``mode="quiet"`` prints nothing (scripts
    and logs stay clean). The clock starts at the first ``update(0)`` (the caller's
    start of the transfer, so the rate agrees with its summary) or else at
    creation. ``end_line()`` ends a half-drawn line before another message.
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        mode: str = "lines",
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.mode = "tty" if self.tty else mode
        self.clock = clock
        self.start = clock()
        self._last_draw = 0.0
        self._next_decile = 1
        self._drawn = False  # a tty line is on screen without its newline
        self.done = 0

    def update(self, done: int, total: int | None = None) -> None:
        if done == 0 and self.done == 0:
            self.start = self.clock()  # the transfer starts now
        self.done = done
        if total is not None:
            self.total = total
        if self.mode == "tty":
            now = self.clock()
            if now - self._last_draw >= 0.1 or (self.total and done >= self.total):
                self._last_draw = now
                self._draw(now)
        elif self.mode == "lines" and self.total:
            while self._next_decile <= 10 and done * 10 >= self._next_decile * self.total:
                rate, eta = self._rate_and_eta(self.clock())
                self.stream.write(
                    f"{self.label}: {self._next_decile * 10:3d}%  {fmt_bytes(done)} of "
                    f"{fmt_bytes(self.total)}  {rate / MiB:.0f} MiB/s  ETA {fmt_duration(eta)}\n"
                )
                self.stream.flush()
                self._next_decile += 1

    def _rate_and_eta(self, now: float) -> tuple[float, float]:
        rate = self.done / max(now - self.start, 1e-9)
        remaining = max((self.total or 0) - self.done, 0)
        return rate, (remaining / rate if rate > 0 else 0.0)

    def _draw(self, now: float) -> None:
        rate, eta = self._rate_and_eta(now)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 24)
            text = (
                f"\r{self.label} [{bar:<24}] {frac * 100:5.1f}%  {fmt_bytes(self.done)}"
                f"/{fmt_bytes(self.total)}  {rate / MiB:7.1f} MiB/s  ETA {fmt_duration(eta)} "
            )
        else:
            text = f"\r{self.label} {fmt_bytes(self.done)}  {rate / MiB:7.1f} MiB/s "
        self.stream.write(text)
        self.stream.flush()
        self._drawn = True

    def end_line(self) -> None:
        """End a half-drawn terminal line, so the next message starts on its own."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def finish(self) -> None:
        if self.mode == "tty":
            self._draw(self.clock())
            self.end_line()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(
        level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr
    )


def stdout_write(data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` to fd 1 (blocking; a closed pipe ends the program)."""
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]
