"""Shared pieces of the ``muxstream`` command: addresses, errors, output, progress.

Conventions every subcommand follows (docs/cli.md): exit 0 on success, 1 on an
error, 2 on a usage error, the remote command's code for exec/attach; an expected
failure (refused connection, bad token, timeout, lost peer) is one readable line
on stderr (``_explain``) and never a traceback; ``-v`` shows the connection's
phases and tracebacks, ``-vv`` the library's debug log.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

#: The port ``serve`` listens on and clients connect to unless told otherwise.
DEFAULT_PORT = 7000
DEFAULT_HOST = "127.0.0.1"
ENV_ADDRESS = "MUXSTREAM_ADDRESS"
ENV_TOKEN = "MUXSTREAM_TOKEN"
#: The pod name `muxstream serve` serves (kubectl's NAME in exec/attach/cp/port-forward).
DEFAULT_POD = "demo"

logger = logging.getLogger("muxstream.cli")

MiB = 1024 * 1024
T = TypeVar("T")


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
    if "://" in text:
        scheme, _, rest = text.partition("://")
        hostport = rest.split("/", 1)[0] or "HOST:PORT"
        tls = " and --tls" if scheme.lower() in ("https", "wss") else ""
        raise argparse.ArgumentTypeError(
            f"bad address {text!r}: give HOST:PORT, not a URL (here: {hostport}{tls})"
        )
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
        "-a", "--address", type=parse_address, default=None,
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
        help="bound on each phase of connecting: TCP connect, TLS handshake, upgrade "
             "(default 10)",
    )


def resolve_address(args: argparse.Namespace) -> None:
    """Fill ``args.address`` when no ``-a`` was given (from ``MUXSTREAM_ADDRESS``, else
    the default), and record where it came from in ``args.address_source``; a bad
    ``MUXSTREAM_ADDRESS`` is an ``ArgumentTypeError`` that names the variable."""
    if args.address is not None:
        args.address_source = "--address"
        return
    text = os.environ.get(ENV_ADDRESS)
    if text:
        try:
            args.address = parse_address(text)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{ENV_ADDRESS}: {exc}") from None
        args.address_source, args.address_text = ENV_ADDRESS, text
    else:
        args.address = Address(DEFAULT_HOST, DEFAULT_PORT)
        args.address_source = "default"


def client_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.cacert:
        check_file("--cacert", args.cacert)
        context = ssl.create_default_context()
        load_pem(f"--cacert {args.cacert}", context.load_verify_locations, args.cacert)
        return context
    if args.tls:
        return ssl.create_default_context()
    return None


def check_file(option: str, path: str) -> None:
    """A CliError naming ``option`` and ``path`` unless ``path`` is a regular file."""
    if not os.path.isfile(path):
        reason = "is not a file" if os.path.exists(path) else "no such file"
        raise CliError(f"{option} {path}: {reason}")


def load_pem(what: str, load: Callable[..., T], *a: Any) -> T:
    """``load(*a)``, its failure one CliError that starts with ``what`` (the options
    and files: ssl's own errors name neither)."""
    try:
        return load(*a)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise CliError(f"{what}: not a usable PEM file ({reason})") from None


def listen_error(exc: OSError, address: Address, remedy: str) -> CliError:
    """A bind failure that names the address (the OS names neither it nor a remedy)."""
    if exc.errno == errno.EADDRINUSE:
        return CliError(f"cannot listen on {address}: the address is already in use ({remedy})")
    return CliError(f"cannot listen on {address}: {exc.strerror or exc}")


def endpoint_url(args: argparse.Namespace) -> str:
    scheme = "https" if (args.tls or args.cacert) else "http"
    host = f"[{args.address.host}]" if ":" in args.address.host else args.address.host
    return f"{scheme}://{host}:{args.address.port}"


# --- Ctrl-C -------------------------------------------------------------------------


class Interrupted(Exception):
    """The user pressed Ctrl-C and was told so: exit status 130, nothing more to say."""


@dataclass
class InterruptState:
    """What a first Ctrl-C says and undoes; commands adjust it as they go.

    ``waiting_for``: what still happens after the first Ctrl-C (bounded cleanup).
    ``on_hard_exit``: undo at a second Ctrl-C, which leaves without cleanup
    (restore the terminal). ``progress``: displays whose line to end first.
    """

    waiting_for: str = "closing the connection"
    on_hard_exit: list[Callable[[], None]] = field(default_factory=list)
    progress: list[Progress] = field(default_factory=list)

    def end_lines(self) -> None:
        for display in self.progress:
            display.end_line()


#: The running command's Ctrl-C state (one command per process).
INTERRUPT = InterruptState()


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
        INTERRUPT.progress.append(self)  # a Ctrl-C message starts on a line of its own

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
        # Marked before writing: the Ctrl-C handler may run between any two
        # bytecodes of this method and must then end the line being drawn.
        self._drawn = True
        self.stream.write(text)
        self.stream.flush()

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


def setup_logging(verbose: int, command: str = "") -> None:
    """Log lines in the CLI's one form, ``muxstream COMMAND: ...`` on stderr.

    0: warnings only; 1 (``-v``): also the connection phases (``muxstream.connect``)
    and the CLI's own debug lines; 2 or more (``-vv``, ``-v=6``): the library's
    whole debug log, with times and logger names.
    """
    prefix = f"muxstream {command}: " if command else "muxstream: "
    handler = logging.StreamHandler(sys.stderr)
    if verbose >= 2:
        handler.setFormatter(logging.Formatter(
            f"{prefix}%(asctime)s %(name)s %(levelname)s: %(message)s"))
    else:
        handler.setFormatter(_CliFormatter(prefix))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    for name in ("muxstream.connect", "muxstream.cli"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.NOTSET)


class _CliFormatter(logging.Formatter):
    """``muxstream COMMAND: warning: ...``, ``muxstream serve: audit: ...`` (``-v``
    lines without a level word)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "muxstream.audit":  # serve's audit trail, one line per command
            level = "audit: "
        else:
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        text = f"{self.prefix}{level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def stdout_write(data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` to fd 1 (blocking; a closed pipe ends the program)."""
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]
