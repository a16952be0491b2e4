"""Profiling the muxstream workers: cProfile (always available) or py-spy (sampling).

``wrap()`` turns a worker command line into a profiled one; ``summarize()`` merges the
outputs per scenario and role into a short text report.

py-spy samples only running (non-idle) threads, so its percentages are shares of the
CPU the process used, not of wall-clock time; the summary drops import-time samples
and the stdin-watcher thread.  Its "by muxstream line" view charges every sample to
the innermost muxstream (or benchmark) frame on the stack, which answers "which line
of ours costs this, including what it calls in trio, wsproto or the kernel".
"""

from __future__ import annotations

import collections
import io
import pstats
import re
from pathlib import Path

_SITE = re.compile(r"/\S*?/(?:site|dist)-packages/|/\S*?/lib/python3\.\d+/")
_IGNORED = ("_read_stdin_to_eof", "_find_and_load")


def wrap(kind: str, argv: list[str], out: Path, py_spy: str | None) -> list[str]:
    """Return ``argv`` (a Python worker command) run under the profiler ``kind``."""
    if kind == "cprofile":
        python, rest = argv[0], argv[1:]
        return [python, "-m", "cProfile", "-o", str(out.with_suffix(".prof")), *rest]
    if kind == "py-spy":
        assert py_spy is not None
        record = [py_spy, "record", "--rate", "500", "--format", "raw"]
        return [*record, "--output", str(out.with_suffix(".txt")), "--", *argv]
    raise ValueError(f"unknown profiler {kind!r}")


def summarize(profile_dir: Path, limit: int = 25) -> str:
    """Merge profiles per "<scenario> <role>" and return the top entries as text."""
    groups: dict[str, list[Path]] = {}
    for path in sorted(profile_dir.iterdir()):
        if path.suffix in (".prof", ".txt"):
            scenario, role, _ = path.stem.rsplit("-", 2)
            groups.setdefault(f"{scenario} {role}", []).append(path)
    out = []
    for name, paths in groups.items():
        if paths[0].suffix == ".prof":
            out.append(f"==== cProfile: muxstream {name} (by own time) ====")
            out.append(_cprofile_text(paths, limit))
        else:
            out.append(f"==== py-spy: muxstream {name} ====")
            out.append(_py_spy_text(paths, limit))
    return "\n".join(out)


def _cprofile_text(paths: list[Path], limit: int) -> str:
    buf = io.StringIO()
    stats = pstats.Stats(str(paths[0]), stream=buf)
    for p in paths[1:]:
        stats.add(str(p))
    stats.sort_stats("tottime").print_stats(limit)
    return buf.getvalue()


def _frame_name(frame: str) -> str:
    return _SITE.sub("", frame.replace(str(Path.cwd()) + "/", ""))


def _py_spy_text(paths: list[Path], limit: int) -> str:
    leaf: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or "unrolled_run" not in stack or any(i in stack for i in _IGNORED):
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            leaf[_frame_name(frames[-1])] += n
            mine = [f for f in frames if "muxstream/" in f or "benchmarks/peers/" in f]
            ours[_frame_name(mine[-1]) if mine else "(trio scheduler)"] += n
    if not total:
        return "(no samples)\n"
    lines = [f"{total} samples while running (500 Hz)", "-- by innermost muxstream line:"]
    lines += [f"{100 * n / total:5.1f}%  {k}" for k, n in ours.most_common(limit)]
    lines.append("-- by leaf (where the CPU actually was):")
    lines += [f"{100 * n / total:5.1f}%  {k}" for k, n in leaf.most_common(limit)]
    return "\n".join(lines) + "\n"
