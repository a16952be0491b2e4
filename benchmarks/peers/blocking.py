"""Baseline and upper limit: blocking sockets, 256 KiB ``sendall`` / ``recv_into``.

Same wire protocol as ``trio_raw.py`` (mode byte ``B``/``E``/``S``).  One thread per
connection on the server.  These functions are synchronous; the worker calls them
without trio.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .._common import (
    ACK_SIZE,
    CHUNK,
    PAYLOAD,
    Params,
    Result,
    emit,
    percentile,
    start_timed_sync,
)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts = []
    while n:
        data = sock.recv(n)
        if not data:
            raise EOFError("peer closed early")
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def _serve_connection(sock: socket.socket) -> None:
    with sock:
        mode = sock.recv(1)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        if mode == b"B":
            while True:
                try:
                    remaining = int.from_bytes(_recv_exactly(sock, 8), "big")
                except EOFError:
                    return
                got = 0
                while got < remaining:
                    n = sock.recv_into(view, min(CHUNK, remaining - got))
                    if not n:
                        return
                    got += n
                sock.sendall(got.to_bytes(ACK_SIZE, "big"))
        elif mode == b"E":
            while n := sock.recv_into(view, 65536):
                sock.sendall(view[:n])
        elif mode == b"S":
            while sock.recv_into(view):
                pass


def server(params: Params) -> None:
    """Serve connections (a thread each) until stdin reaches EOF."""
    lsock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    emit("listening", port=lsock.getsockname()[1])

    def accept_loop() -> None:
        while True:
            sock, _ = lsock.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_serve_connection, args=(sock,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    while sys.stdin.readline():
        pass


def _connect(port: int, mode: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(mode)
    return sock


def _transfer(sock: socket.socket, size: int) -> None:
    sock.sendall(size.to_bytes(8, "big"))
    full, rest = divmod(size, CHUNK)
    for _ in range(full):
        sock.sendall(PAYLOAD)
    if rest:
        sock.sendall(PAYLOAD[:rest])
    ack = int.from_bytes(_recv_exactly(sock, ACK_SIZE), "big")
    if ack != size:
        raise RuntimeError(f"receiver counted {ack} bytes, sent {size}")


def bulk_client(port: int, params: Params) -> Result:
    """Warm up, then time one transfer of ``params["size"]`` bytes (client -> server)."""
    with _connect(port, b"B") as sock:
        if params.get("warmup"):
            _transfer(sock, params["warmup"])
        timer = start_timed_sync()
        _transfer(sock, params["size"])
        return timer.result(bytes=params["size"])


def echo_client(port: int, params: Params) -> Result:
    """Time ``count`` 4-byte echo round trips."""
    rtts = []
    with _connect(port, b"E") as sock:
        for _ in range(params.get("warmup_count", 20)):
            sock.sendall(b"ping")
            _recv_exactly(sock, 4)
        interval = params.get("interval", 0.0)
        for _ in range(params["count"]):
            start = time.perf_counter()
            sock.sendall(b"ping")
            _recv_exactly(sock, 4)
            rtts.append(time.perf_counter() - start)
            if interval:
                time.sleep(interval)
    return {"p50": percentile(rtts, 50), "p99": percentile(rtts, 99), "samples": len(rtts)}


SYNC_SCENARIOS: dict[str, tuple[Callable[[Params], None], Callable[[int, Params], Any]]] = {
    "bulk": (server, bulk_client),
    "ping": (server, echo_client),
}
