"""Micro-benchmarks of the accelerated hot paths: compiled vs pure Python, CPU time.

Usage (from the repository root)::

    .venv/bin/python benchmarks/micro.py              # every case, 5 repeats
    .venv/bin/python benchmarks/micro.py --repeats 9

Each case runs the same input through the compiled twin (``muxstream._speedups``)
and the pure-Python reference in one process, alternating, and reports the
median CPU time per operation of each and their ratio. CPU time
(``time.process_time``) rather than wall clock, so that other work on a shared
machine moves the figures little. Cases:

* ``decode 64 KiB chunks``: one 512 KiB DATA frame per 8 chunks of 64 KiB, as a
  session over TLS or WebSocket receives a bulk transfer;
* ``decode short streams``: the frames a server receives for one churn stream
  (SYN_STREAM, DATA+FIN) and a PING, in one chunk;
* ``decode 12-byte PING``: one PING frame per chunk (the idle ping row);
* ``mask 256 KiB``: WebSocket masking of one 256 KiB message.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from muxstream.protocol import (  # noqa: E402
    DataFrame,
    HeaderCompressor,
    Headers,
    PingFrame,
    SynStreamFrame,
    encode_frame,
)
from muxstream.protocol._frames import PyFrameDecoder, setup_compiled  # noqa: E402
from muxstream.transport._wsframe import py_mask  # noqa: E402

_HEADER = struct.Struct(">II")


def _drain(decoder: object, chunks: list[bytes]) -> int:
    frames = 0
    for chunk in chunks:
        decoder.receive(chunk)  # type: ignore[attr-defined]
        while decoder.next_frame() is not None:  # type: ignore[attr-defined]
            frames += 1
    return frames


def _repeat(mask: Callable[[bytes, bytes], bytes], message: bytes, key: bytes) -> None:
    for _ in range(20):
        mask(message, key)  # each result freed at once, as a frame's is


def cases(speedups: object) -> dict[str, tuple[Callable[[], object], Callable[[], object], int]]:
    """name -> (compiled run, Python run, operations per run)."""
    payload = bytes(512 * 1024)
    bulk = _HEADER.pack(1, len(payload)) + payload
    bulk_chunks = [bulk[i : i + 65536] for i in range(0, len(bulk), 65536)] * 16
    compressor = HeaderCompressor()
    churn: list[bytes] = []
    for sid in range(1, 400, 2):
        churn.append(
            encode_frame(SynStreamFrame(sid, Headers({"mode": "echo"})), compressor)
            + encode_frame(DataFrame(sid, b"x" * 100, flags=1))
            + encode_frame(PingFrame(sid))
        )
    pings = [encode_frame(PingFrame(i)) for i in range(1, 2001, 2)]
    message = bytes(range(256)) * 1024
    key = b"\x12\x34\x56\x78"
    c_decoder = speedups.FrameDecoder  # type: ignore[attr-defined]
    c_mask = speedups.mask  # type: ignore[attr-defined]
    # Header blocks only decompress in order, so each run gets a fresh decoder.
    return {
        "decode 64 KiB chunks": (lambda: _drain(c_decoder(), bulk_chunks),
                                 lambda: _drain(PyFrameDecoder(), bulk_chunks), len(bulk_chunks)),
        "decode short streams": (lambda: _drain(c_decoder(), churn),
                                 lambda: _drain(PyFrameDecoder(), churn), len(churn)),
        "decode 12-byte PING": (lambda: _drain(c_decoder(), pings),
                                lambda: _drain(PyFrameDecoder(), pings), len(pings)),
        "mask 256 KiB": (lambda: _repeat(c_mask, message, key),
                         lambda: _repeat(py_mask, message, key), 20),
    }


def _cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        from muxstream import _speedups
    except ImportError:
        print("the compiled accelerator is not built (bash scripts/setup with a C compiler)")
        return 1
    setup_compiled(_speedups)  # wired already unless MUXSTREAM_NO_ACCEL is set
    print("| case | compiled | pure Python | Python / compiled |")
    print("|---|---|---|---|")
    for name, (compiled, python, ops) in cases(_speedups).items():
        c_times, p_times = [], []
        for _ in range(args.repeats):
            c_times.append(_cpu(compiled))
            p_times.append(_cpu(python))
        c, p = statistics.median(c_times) / ops * 1e6, statistics.median(p_times) / ops * 1e6
        print(f"| {name} | {c:,.2f} us | {p:,.2f} us | {p / c:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
