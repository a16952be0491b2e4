"""Helpers shared by the benchmark worker processes.

A worker is one side (``server`` or ``client``) of one peer implementation running one
scenario.  It talks to the orchestrator (``benchmarks/run.py``) with JSON lines:

* stdout: one JSON object per line.  A server first prints
  ``{"event": "listening", "port": N}``; a client ends with
  ``{"event": "result", ...}``; a client may print ``{"event": "checkpoint", "name": ...}``
  and then waits for one line on stdin before it continues (the orchestrator measures
  the server's memory at such points).
* stdin: a server runs until its stdin reaches EOF, then exits cleanly (so that a
  profiler wrapped around it gets to write its output).

Everything here is deliberately small and allocation-free on the hot paths: the
benchmarks must measure the peers, not the harness.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def parse_size(text: str) -> int:
    """Parse ``1G``, ``256M``, ``64K`` or a byte count."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": KiB, "M": MiB, "G": GiB}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


#: Size of every application-level write and read in the bulk rows (the same for
#: every peer so that the comparison is about framing, not call sizes).
CHUNK = 256 * KiB

#: One reusable payload buffer; its content is irrelevant (nothing compresses DATA).
PAYLOAD = bytes(range(256)) * (CHUNK // 256)

ACK_SIZE = 8  # bytes: a receiver answers a bulk transfer with its byte count, big endian


def emit(event: str, **fields: Any) -> None:
    """Print one JSON event line on stdout and flush it."""
    fields["event"] = event
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def rss_kib(pid: int | None = None) -> int:
    """Return the resident set size (``VmRSS``) of ``pid`` (default: this process) in KiB."""
    path = f"/proc/{pid if pid is not None else 'self'}/status"
    with open(path) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in {path}")


def percentile(values: Sequence[float], p: float) -> float:
    """Return the ``p``-th percentile (0..100, nearest rank) of ``values``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def split_sizes(total: int, parts: int) -> list[int]:
    """Split ``total`` bytes into ``parts`` near-equal integer sizes."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


async def checkpoint(name: str, **fields: Any) -> None:
    """Tell the orchestrator we reached ``name`` and wait until it says go (a stdin line)."""
    emit("checkpoint", name=name, **fields)
    line = await trio.to_thread.run_sync(sys.stdin.readline)
    if not line:
        raise RuntimeError("orchestrator went away at checkpoint " + name)


async def serve_until_stdin_eof(
    serve: Callable[[trio.TaskStatus[int]], Awaitable[object]],
) -> None:
    """Run ``serve`` (which reports its port through ``task_status``) until stdin EOF.

    Prints the ``listening`` event once ``serve`` has started.  Returns normally when
    stdin closes, after cancelling ``serve``.
    """
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve)
        emit("listening", port=port, pid=os.getpid())
        await trio.to_thread.run_sync(_read_stdin_to_eof, abandon_on_cancel=True)
        nursery.cancel_scope.cancel()


def _read_stdin_to_eof() -> None:
    while sys.stdin.readline():
        pass


async def trio_listen(port: int = 0) -> trio.SocketListener:
    """Open one loopback TCP listener (backlog large enough for the churn rows)."""
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1", backlog=1024)
    listener = listeners[0]
    assert isinstance(listener, trio.SocketListener)
    return listener


def listener_port(listener: trio.SocketListener) -> int:
    """Return the TCP port a listener is bound to."""
    port = listener.socket.getsockname()[1]
    assert isinstance(port, int)
    return port


async def receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    """Receive exactly ``n`` bytes from ``stream`` (raises EOFError on early EOF)."""
    parts = []
    while n:
        data = await stream.receive_some(n)
        if not data:
            raise EOFError("peer closed early")
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


Params = dict[str, Any]
Result = dict[str, Any]
ServerFn = Callable[[Params, trio.TaskStatus[int]], Awaitable[None]]
ClientFn = Callable[[int, Params], Awaitable[Result]]


def tls_contexts(params: Params) -> tuple[Any, Any] | None:
    """Build (server, client) ``ssl.SSLContext`` objects from ``params["tls"]``, if set.

    ``params["tls"]`` holds PEM file paths written by the orchestrator with trustme:
    ``ca`` (the CA certificate), ``cert`` (server chain) and ``key``.  The server name
    to verify is ``localhost``.
    """
    tls = params.get("tls")
    if not tls:
        return None
    return _tls_contexts(tls["ca"], tls["cert"], tls["key"])


@functools.cache
def _tls_contexts(ca: str, cert: str, key: str) -> tuple[Any, Any]:
    # One pair per process, as an application holds one context for all its
    # connections (a context costs ~50 KiB: the memory-per-session row would
    # otherwise count it per session).
    import ssl

    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    # As muxstream serve's context: no session tickets, which nobody resumes
    # (with the stdlib default of two, each client holds ~10 KiB more per session).
    server.num_tickets = 0
    client = ssl.create_default_context(cafile=ca)
    return server, client


TLS_SERVER_NAME = "localhost"


class Timer:
    """Wall-clock and CPU time of one measured section of a client."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def result(self, **fields: Any) -> Result:
        """Result fields: ``seconds`` (wall), ``client_cpu`` (seconds) and ``fields``."""
        return {
            "seconds": time.perf_counter() - self.wall,
            "client_cpu": time.process_time() - self.cpu,
            **fields,
        }


async def start_timed() -> Timer:
    """Checkpoint ``start`` (the orchestrator samples the server's CPU), then start a Timer."""
    await checkpoint("start")
    return Timer()


def start_timed_sync() -> Timer:
    """:func:`start_timed` for blocking workers."""
    emit("checkpoint", name="start")
    if not sys.stdin.readline():
        raise RuntimeError("orchestrator went away at checkpoint start")
    return Timer()
