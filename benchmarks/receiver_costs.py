"""Where muxstream's receiver spends its CPU, per 256 KiB chunk of a bulk transfer.

Usage (from the repository root)::

    .venv/bin/python benchmarks/receiver_costs.py                 # 3 runs of 1 GiB
    .venv/bin/python benchmarks/receiver_costs.py --runs 5 --size 4G

Runs the ``muxstream`` and ``trio`` cases of ``benchmarks/loopback_modes.py`` (two
processes over 127.0.0.1, 256 KiB ``send_all`` / ``receive_some``), with timers
wrapped around three parts of muxstream's receiving process:

* ``reads``: the TCP reader's ``os.read`` / ``os.readv`` calls (mostly the
  kernel's copy), and how many it makes per chunk;
* ``decode+dispatch``: ``_reader._process`` (the decoder and the session's
  dispatch of the events);
* ``take+credit``: ``Stream._take`` (a piece leaves the stream's buffer; the
  window credit and any WINDOW_UPDATE are queued), and how many per chunk.

What is left of the receiver's CPU is trio's scheduler and the tasks' loops. Raw
trio's whole receiver, per chunk, is printed for comparison (docs/performance.md,
"Round 4, third part"). The timers add to what they measure: ~0.4 us per timed
call, 7-10 calls per chunk.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import muxstream._reader as _reader  # noqa: E402
import muxstream._stream as _stream  # noqa: E402
from benchmarks._common import CHUNK, parse_size  # noqa: E402
from benchmarks.loopback_modes import run_case  # noqa: E402

PARTS = ("reads", "decode+dispatch", "take+credit")
#: per part: seconds, calls (doubles), in memory both processes share
_SLOT = struct.Struct("dd")


class _TimedOS:
    """What ``_reader`` sees as ``os``: its reads timed, everything else as is."""

    def __init__(self, read: Any, readv: Any) -> None:
        self.read = read
        self.readv = readv

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


class ReceiverTimers:
    """Timers around the receiver's parts, counting in the forked receiving
    process only (the sending process shares the patched code, not the counts)."""

    def __init__(self) -> None:
        self.shared = mmap.mmap(-1, _SLOT.size * len(PARTS))  # MAP_SHARED: survives fork
        self.parent = os.getpid()

    def reset(self) -> None:
        self.shared[:] = bytes(len(self.shared))

    def totals(self) -> dict[str, tuple[float, float]]:
        return {part: _SLOT.unpack_from(self.shared, i * _SLOT.size)
                for i, part in enumerate(PARTS)}

    def _timed(self, index: int, fn: Any) -> Any:
        shared, parent, clock = self.shared, self.parent, time.perf_counter
        offset = index * _SLOT.size

        def timed(*args: Any) -> Any:
            if os.getpid() == parent:
                return fn(*args)
            t0 = clock()
            try:
                return fn(*args)
            finally:
                seconds, calls = _SLOT.unpack_from(shared, offset)
                _SLOT.pack_into(shared, offset, seconds + clock() - t0, calls + 1)
        return timed

    def install(self) -> None:
        """Patch the parts for the rest of this process and its children."""
        timed_os = _TimedOS(self._timed(0, os.read), self._timed(0, os.readv))
        _reader.os = timed_os  # type: ignore[attr-defined,assignment]
        # The parts timed are the session's internals, as a test's would be.
        _reader._process = self._timed(1, _reader._process)  # noqa: SLF001
        take = self._timed(2, _stream.Stream._take)  # noqa: SLF001
        _stream.Stream._take = take  # type: ignore[method-assign]  # noqa: SLF001


def _us_per_chunk(cpu_s_per_gib: float) -> float:
    return cpu_s_per_gib * CHUNK / (1 << 30) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="transfers per case (default 3)")
    parser.add_argument("--size", default="1G", help="bytes per transfer (default 1G)")
    args = parser.parse_args()
    size = parse_size(args.size) // CHUNK * CHUNK
    chunks = size / CHUNK
    timers = ReceiverTimers()
    timers.install()
    print(f"{args.runs} runs of {size >> 20} MiB, 256 KiB chunks; receiver, us per chunk")
    header = f"{'run':>3} {'case':9} {'MiB/s':>7} {'CPU':>6}  " + "  ".join(
        f"{part} (calls)" for part in PARTS) + "  rest"
    print(header)
    raw: list[float] = []
    for run in range(1, args.runs + 1):  # interleaved, so that drift hits both cases
        timers.reset()
        mib_s, _, server_cpu = run_case("muxstream", size)
        cpu = _us_per_chunk(server_cpu)
        parts = timers.totals()
        spent = sum(seconds for seconds, _ in parts.values()) / chunks * 1e6
        cells = "  ".join(f"{seconds / chunks * 1e6:>{len(part)}.1f} ({calls / chunks:.2f})"
                          for part, (seconds, calls) in parts.items())
        print(f"{run:>3} {'muxstream':9} {mib_s:>7,.0f} {cpu:>6.1f}  {cells}  {cpu - spent:>4.1f}")
        mib_s, _, server_cpu = run_case("trio", size)
        raw.append(_us_per_chunk(server_cpu))
        print(f"{run:>3} {'raw trio':9} {mib_s:>7,.0f} {raw[-1]:>6.1f}")
    print(f"raw trio's receiver: median {statistics.median(raw):.1f} us per chunk")


if __name__ == "__main__":
    main()
