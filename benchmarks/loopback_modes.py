"""Loopback's two modes: how much per-chunk work a byte pump can afford.

Usage (from the repository root)::

    .venv/bin/python benchmarks/loopback_modes.py                 # 5 runs of each case, 1 GiB
    .venv/bin/python benchmarks/loopback_modes.py --runs 9 --size 4G

On the development machine a plain byte pump over 127.0.0.1 runs in one of two
modes, picked anew by each transfer: a fast one (~6-8 GB/s, ~0.15 CPU s/GiB on
each side) and a slow one (~2-3 GB/s, ~0.3-0.45). Raw trio's bulk row lands in
either, which moves muxstream's ratio against it between ~0.4x and ~1.2x
(docs/performance.md, "Bulk at 4 GiB: raw trio's two modes"). This script runs,
each in two processes, 256 KiB per chunk as the bulk rows do:

* ``trio``: raw trio ``send_all`` / ``receive_some`` (the bulk row's baseline);
* ``framed``: an 8-byte header before each chunk, written with the payload in one
  ``writev``; the receiver reads the header alone, then the payload into a fresh
  ``bytes`` (what muxstream's TCP reader does for large DATA frames);
* ``framed+Nus send`` / ``framed+Nus recv``: the same with N microseconds of CPU
  spent per chunk on one side (the budget question: how much Python per chunk
  keeps a pump out of the fast mode);
* ``tasks-send`` / ``tasks-recv`` / ``tasks-recv-whole`` / ``tasks``: the framed
  pump split into two tasks per side as muxstream is, with nothing else of
  muxstream's work: on the sending side the sending task queues each chunk and a
  writer task writes all that is queued in one ``writev``; on the receiving side
  a reader task reads and hands each piece of a payload (``-whole``: the whole
  payload, read into one buffer) to the consuming task, yielding once per chunk;
  ``tasks`` splits both sides. This is the architecture's own cost, the floor
  that compiling muxstream's per-chunk work could at best reach;
* ``muxstream``: one stream of a muxstream session, as the bulk row.

For each it prints every run's MiB/s and CPU seconds per GiB on each side, and
how many runs were in the fast mode (both sides under ``--fast-cpu`` CPU s/GiB).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections import deque
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import muxstream  # noqa: E402
from benchmarks._common import CHUNK, PAYLOAD, parse_size  # noqa: E402

HEADER = (1).to_bytes(4, "big") + CHUNK.to_bytes(4, "big")
#: seconds each side may take before a run counts as hung
TIMEOUT = 120


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _read_exactly(sock: trio.socket.SocketType, n: int, into: _Handoff | None = None) -> int:
    """Read ``n`` bytes from the non-blocking ``sock``, each read into a fresh
    ``bytes`` (``os.read``); how many came before EOF. With ``into``, each piece
    read is handed to it as read, as muxstream's reader hands a DATA payload's
    pieces to its stream."""
    fd, got = sock.fileno(), 0
    while got < n:
        try:
            data = os.read(fd, n - got)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        if not data:
            return got
        got += len(data)
        if into is not None:
            into.push(data)
    return got


async def _writev_all(sock: trio.socket.SocketType, bufs: list[memoryview]) -> None:
    fd = sock.fileno()
    while bufs:
        try:
            sent = os.writev(fd, bufs)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        while sent:
            if sent >= len(bufs[0]):
                sent -= len(bufs[0])
                bufs.pop(0)
            else:
                bufs[0] = bufs[0][sent:]
                sent = 0
        if bufs:
            await trio.lowlevel.wait_writable(sock)


class _Handoff:
    """The least two tasks can do to pass pieces along: a queue and one parked
    taker, woken with ``reschedule`` (what muxstream's reader does for a stream's
    consumer and ``send_all`` for the writer, minus everything else they do)."""

    def __init__(self, limit: int) -> None:
        self.pieces: deque[bytes | bytearray | memoryview] = deque()
        self.queued = 0
        self.limit = limit  # the putter waits above this many bytes queued
        self.taker: trio.lowlevel.Task | None = None
        self.putter: trio.lowlevel.Task | None = None
        self.closed = False

    def wake(self, attr: str) -> None:
        task = getattr(self, attr)
        if task is not None:
            setattr(self, attr, None)
            trio.lowlevel.reschedule(task)

    async def park(self, attr: str) -> None:
        setattr(self, attr, trio.lowlevel.current_task())
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)

    def push(self, piece: bytes | bytearray | memoryview) -> None:
        """Queue ``piece`` and wake the taker, without yielding."""
        self.pieces.append(piece)
        self.queued += len(piece)
        self.wake("taker")

    async def yield_to_taker(self) -> None:
        """The putter's one yield: wait while more than ``limit`` bytes are queued."""
        if self.queued > self.limit:
            await self.park("putter")
        else:
            await trio.lowlevel.checkpoint()

    async def put(self, piece: bytes | bytearray | memoryview) -> None:
        """Queue ``piece``, then yield (:meth:`push`, :meth:`yield_to_taker`)."""
        self.push(piece)
        await self.yield_to_taker()

    def close(self) -> None:
        self.closed = True
        self.wake("taker")

    async def take(self) -> bytes | bytearray | memoryview:
        """The next piece (b"" once closed), with one checkpoint as trio's streams have."""
        if not self.pieces:
            if self.closed:
                return b""
            await self.park("taker")
            if not self.pieces:
                return b""
        else:
            await trio.lowlevel.checkpoint()
        piece = self.pieces.popleft()
        self.queued -= len(piece)
        if self.queued <= self.limit:
            self.wake("putter")
        return piece


async def _read_whole(sock: trio.socket.SocketType, n: int, into: _Handoff) -> int:
    """Read ``n`` bytes into one fresh buffer, waiting as it arrives; hand
    ``into`` the whole of it at once (one take per chunk)."""
    fd, got = sock.fileno(), 0
    buf = bytearray(n)
    view = memoryview(buf)
    while got < n:
        try:
            count = os.readv(fd, (view[got:],))
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        if not count:
            break
        got += count
    view.release()
    del buf[got:]
    into.push(buf)
    return got


async def _serve(case: str, spin_recv: float, report: int) -> None:
    done = trio.Event()

    async def on_stream(stream: trio.SocketStream) -> None:
        cpu0, total = _cpu(), 0
        if case == "trio":
            while data := await stream.receive_some(CHUNK):
                total += len(data)
        elif case in ("tasks", "tasks-recv", "tasks-recv-whole"):
            sock, pieces = stream.socket, _Handoff(4 << 20)
            read_payload = _read_whole if case == "tasks-recv-whole" else _read_exactly

            async def reader() -> None:
                while await _read_exactly(sock, len(HEADER)) == len(HEADER):
                    await read_payload(sock, CHUNK, pieces)
                    # one yield per chunk (muxstream's reader: per 256 KiB read)
                    await pieces.yield_to_taker()
                pieces.close()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                while piece := await pieces.take():
                    total += len(piece)
        else:
            sock = stream.socket
            while await _read_exactly(sock, len(HEADER)) == len(HEADER):
                total += await _read_exactly(sock, CHUNK)
                _spin(spin_recv)
        await stream.send_all(b"k")
        os.write(report, f"{_cpu() - cpu0} {total}\n".encode())
        done.set()

    async def on_session(session: muxstream.Session) -> None:
        stream = await session.accept()
        cpu0, total = _cpu(), 0
        while data := await stream.receive_some(CHUNK):
            total += len(data)
        await stream.send_all(b"k", eof=True)
        os.write(report, f"{_cpu() - cpu0} {total}\n".encode())
        await stream.aclose()
        done.set()

    async with trio.open_nursery() as nursery:
        if case == "muxstream":
            listeners = await nursery.start(
                lambda task_status: muxstream.serve_tcp(on_session, 0, host="127.0.0.1",
                                                        task_status=task_status))
        else:
            listeners = await nursery.start(
                lambda task_status: trio.serve_tcp(on_stream, 0, host="127.0.0.1",
                                                   task_status=task_status))
        os.write(report, f"{listeners[0].socket.getsockname()[1]}\n".encode())
        with trio.fail_after(TIMEOUT):
            await done.wait()
        nursery.cancel_scope.cancel()


async def _send(case: str, port: int, size: int, spin_send: float) -> tuple[float, float]:
    """Send ``size`` bytes; (seconds, client CPU seconds)."""
    with trio.fail_after(TIMEOUT):
        if case == "muxstream":
            async with muxstream.open_tcp_session("127.0.0.1", port) as session:
                stream = await session.open_stream()
                t0, cpu0 = time.perf_counter(), _cpu()
                for _ in range(size // CHUNK):
                    await stream.send_all(PAYLOAD)
                await stream.send_eof()
                await stream.receive_some(1)
                return time.perf_counter() - t0, _cpu() - cpu0
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        async with tcp:
            t0, cpu0 = time.perf_counter(), _cpu()
            if case == "trio":
                for _ in range(size // CHUNK):
                    await tcp.send_all(PAYLOAD)
            elif case in ("tasks", "tasks-send"):
                await _send_through_writer(tcp.socket, size)
            else:
                header, payload = memoryview(HEADER), memoryview(PAYLOAD)
                for _ in range(size // CHUNK):
                    await _writev_all(tcp.socket, [header, payload])
                    _spin(spin_send)
                    await trio.lowlevel.checkpoint()
            await tcp.send_eof()
            await tcp.receive_some(1)
            return time.perf_counter() - t0, _cpu() - cpu0


async def _send_through_writer(sock: trio.socket.SocketType, size: int) -> None:
    """The sending task queues each framed chunk; a writer task writes them."""
    chunks = _Handoff(4 << 20)

    async def writer() -> None:
        while first := await chunks.take():
            bufs = [memoryview(first)]
            while chunks.pieces and len(bufs) < 64:  # everything queued, in one writev
                piece = chunks.pieces.popleft()
                chunks.queued -= len(piece)
                bufs.append(memoryview(piece))
            chunks.wake("putter")
            await _writev_all(sock, bufs)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        for _ in range(size // CHUNK):
            await chunks.put(HEADER)
            await chunks.put(PAYLOAD)
        chunks.close()


def run_case(case: str, size: int, spin_send: float = 0.0,
             spin_recv: float = 0.0) -> tuple[float, float, float]:
    """One transfer in two processes: (MiB/s, client and server CPU s/GiB)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the receiving side
        os.close(read_end)
        code = 0
        try:
            trio.run(_serve, case, spin_recv, write_end)
        except BaseException as exc:
            print(f"receiver: {exc!r}", file=sys.stderr)
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as lines:
        port = int(lines.readline())
        seconds, client_cpu = trio.run(_send, case, port, size, spin_send)
        server_cpu, received = lines.readline().split()
    os.waitpid(pid, 0)
    if int(received) != size:
        raise RuntimeError(f"{case}: the receiver counted {received} bytes of {size}")
    gib = size / (1 << 30)
    return size / seconds / (1 << 20), client_cpu / gib, float(server_cpu) / gib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="transfers per case (default 5)")
    parser.add_argument("--size", default="1G", help="bytes per transfer (default 1G)")
    parser.add_argument("--spin-us", type=float, default=30.0,
                        help="CPU microseconds per chunk in the +N cases (default 30)")
    parser.add_argument("--fast-cpu", type=float, default=0.25,
                        help="a run is in the fast mode when each side spent under this "
                             "many CPU s/GiB (default 0.25)")
    args = parser.parse_args()
    size = parse_size(args.size) // CHUNK * CHUNK
    spin = args.spin_us / 1e6
    us = f"{args.spin_us:g}us"
    cases = [("trio", 0.0, 0.0), ("framed", 0.0, 0.0), (f"framed+{us} send", spin, 0.0),
             (f"framed+{us} recv", 0.0, spin), ("tasks-send", 0.0, 0.0), ("tasks-recv", 0.0, 0.0),
             ("tasks-recv-whole", 0.0, 0.0), ("tasks", 0.0, 0.0), ("muxstream", 0.0, 0.0)]
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in cases}
    for _ in range(args.runs):  # interleaved, so that the machine's drift hits every case
        for name, spin_send, spin_recv in cases:
            kind = name.split("+")[0]
            results[name].append(run_case(kind, size, spin_send, spin_recv))
    print(f"{args.runs} runs of {size >> 20} MiB per case, 256 KiB chunks, "
          f"fast mode: both sides < {args.fast_cpu} CPU s/GiB")
    print(f"{'case':22} {'median MiB/s':>12}  {'fast':>5}  runs (MiB/s, client/server CPU s/GiB)")
    for name, runs in results.items():
        fast = sum(1 for _, c, s in runs if c < args.fast_cpu and s < args.fast_cpu)
        detail = "  ".join(f"{m:,.0f} ({c:.2f}/{s:.2f})" for m, c, s in runs)
        median = statistics.median(m for m, _, _ in runs)
        print(f"{name:22} {median:12,.0f}  {fast:>2}/{len(runs):<2}  {detail}")


if __name__ == "__main__":
    main()
