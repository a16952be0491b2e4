"""The benchmark suite must keep running: tiny sizes, every row, no timing assertions.

Runs ``benchmarks/run.py`` as users do (a subprocess, which itself starts server and
client worker processes over 127.0.0.1) and checks that every measurement either
produced data or says why it could not run here -- never that it crashed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import run  # noqa: E402
from benchmarks._common import percentile, split_sizes  # noqa: E402
from benchmarks.peers import mux  # noqa: E402

TINY = [
    "--quick",
    "--size", "1M",
    "--churn-count", "20",
    "--ping-count", "20",
    "--idle-streams", "50",
    "--stalled-streams", "3",
    "--idle-sessions", "5",
    "--timeout", "120",
]  # fmt: skip


def test_every_row_runs_with_tiny_sizes(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    chart = tmp_path / "chart.png"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), *TINY, "--output", str(out),
         "--plot", str(chart)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads(out.read_text())
    by_key = {m["key"]: m for m in report["measurements"]}
    rows = {key.split("/")[0] for key in by_key}
    assert rows == set(run.ALL_ROWS)
    for key, m in by_key.items():
        assert not m["errors"], (key, m["errors"])
        # Either it ran once (quick = 1 repeat) or it says why not.
        assert (len(m["runs"]) == 1) != bool(m["not_run"]), (key, m)
    # The baselines need nothing but the bench extras: they always run.
    for key in ("bulk/trio", "bulk/blocking", "bulk/h2", "bulk/trio-websocket",
                "churn/h2-c64", "ping/trio", "tls/trio"):  # fmt: skip
        assert by_key[key]["runs"], key
    # muxstream rows run whenever the session layer exists.
    if mux.unavailable_reason() is None:
        for key in ("bulk/muxstream", "bulk16/muxstream", "churn/muxstream-c64",
                    "ping/muxstream-load-recv", "memory/idle", "memory/stalled",
                    "tls/muxstream", "ws/muxstream", "sessions/tcp", "sessions/tls",
                    "sessions/ws"):  # fmt: skip
            assert by_key[key]["runs"], key
    # Every target is evaluated against data or reported as not run.
    statuses = {t["status"] for t in report["targets"]}
    assert statuses <= {"PASS", "MISS", "not run"}
    # The table names each row.
    for title in run.SECTIONS.values():
        assert title in proc.stdout
    # ... and the chart draws it.
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_panels_carry_same_run_ratios() -> None:
    from benchmarks import _plot

    def entry(key: str, peer: str, metric: str, median: dict[str, float], vs: str) -> dict:
        return {"key": key, "row": key.split("/")[0], "short": peer, "label": peer,
                "peer": peer, "metric": metric, "median": median, "vs": vs}

    panels = _plot.panels([
        entry("tls/trio", "trio TLS", "MiB/s", {"mib_s": 200.0}, "tls/trio"),
        entry("tls/muxstream", "muxstream", "MiB/s", {"mib_s": 300.0}, "tls/trio"),
        entry("sessions/tcp", "muxstream", "session-memory", {"kib_per_session": 48.0}, ""),
    ])
    assert [len(p["bars"]) for p in panels] == [2, 1]
    assert [b["ratio"] for b in panels[0]["bars"]] == ["1.00x trio TLS", "1.50x trio TLS"]
    assert panels[0]["bars"][0]["baseline"] and panels[0]["bars"][1]["ours"]
    assert "lower is better" in panels[1]["title"]


def test_session_memory_is_the_larger_side_per_session() -> None:
    figures = run._figures("session-memory", {
        "sessions": 100, "server_rss_baseline": 1000, "server_rss_holding": 5000,
        "client_kib_per_session": 12.5})
    assert figures == {"server_kib_per_session": 40.0, "client_kib_per_session": 12.5,
                       "kib_per_session": 40.0}


def test_a_crashing_worker_is_reported() -> None:
    launcher = run.Launcher()
    with pytest.raises(run.WorkerCrashed, match=r"no-such-scenario"):
        run.run_pair(launcher, "trio", "no-such-scenario", {}, timeout=60)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0


def test_split_sizes_adds_up() -> None:
    assert split_sizes(10, 3) == [4, 3, 3]
    assert sum(split_sizes(2**30 + 7, 16)) == 2**30 + 7


def test_parse_size_units() -> None:
    assert run.parse_size("1G") == 2**30
    assert run.parse_size("256MiB") == 256 * 2**20
    assert run.parse_size("64k") == 64 * 1024
    assert run.parse_size("1000") == 1000


def _measurement(
    key: str, metric: str, runs: list[dict[str, float]], vs: str | None = None
) -> run.Measurement:
    m = run.Measurement(key, key.split("/")[0], key, key, "trio", "bulk", {}, metric, vs)
    m.runs = list(runs)
    return m


def test_targets_use_medians_of_the_same_run() -> None:
    gib = 2**30
    trio = _measurement("bulk/trio", "MiB/s", [{"bytes": gib, "seconds": s} for s in (1, 2, 9)])
    mux = _measurement(
        "bulk/muxstream", "MiB/s", [{"bytes": gib, "seconds": s} for s in (1.0, 1.05, 1.1)]
    )
    by_key = {m.key: m for m in (trio, mux)}
    target = run.Target("bulk >= 0.9x raw trio", "bulk/muxstream", "ratio", 0.9, "bulk/trio")
    verdict = run.evaluate(target, by_key)
    # median trio = 512 MiB/s, median muxstream = 1024/1.05 MiB/s: ratio ~1.9
    assert verdict["status"] == "PASS"
    assert abs(verdict["value"] - 2 / 1.05) < 1e-9
    mux.runs = [{"bytes": gib, "seconds": 4.0}]
    assert run.evaluate(target, by_key)["status"] == "MISS"
    mux.runs = []
    assert run.evaluate(target, by_key)["status"] == "no data"
    assert run.evaluate(target, {"bulk/trio": trio})["status"] == "not run"


def test_bulk_targets_against_raw_trio_say_which_loopback_mode_it_ran_in() -> None:
    # The ratio against raw trio is decided by loopback's mode (docs/performance.md):
    # the verdict names it, from the baseline's CPU per byte.
    gib = 2**30

    def pump(*cpus: float) -> run.Measurement:
        runs = [{"bytes": gib, "seconds": 0.2, "client_cpu": cpu / 2, "server_cpu": cpu / 2}
                for cpu in cpus]
        return _measurement("bulk/trio", "MiB/s", runs)

    mux = _measurement("bulk/muxstream", "MiB/s", [{"bytes": gib, "seconds": 0.4}])
    target = next(t for t in run.TARGETS if t.key == "bulk/muxstream" and t.loopback_mode)
    fast = run.evaluate(target, {"bulk/trio": pump(0.3), "bulk/muxstream": mux})
    assert fast["status"] == "MISS" and "fast mode, 0.30 CPU s/GiB" in fast["note"]
    slow = run.evaluate(target, {"bulk/trio": pump(0.8, 0.7), "bulk/muxstream": mux})
    assert "slow mode, 0.70-0.80 CPU s/GiB" in slow["note"]
    mixed = run.evaluate(target, {"bulk/trio": pump(0.3, 0.8, 0.35), "bulk/muxstream": mux})
    assert "fast mode in 2 of 3 runs, 0.30-0.80 CPU s/GiB" in mixed["note"]
    assert f"| MISS ({fast['note']}) |" in run.render([], [fast], [])
    other = next(t for t in run.TARGETS if t.reference == "go/bulk")
    assert "note" not in run.evaluate(
        other, {"go/bulk": pump(0.3), "bulk/muxstream": mux})


def test_render_shows_values_ratios_and_reasons() -> None:
    trio = _measurement("bulk/trio", "MiB/s", [{"bytes": 2**30, "seconds": 1.0}], "bulk/trio")
    mux = _measurement("bulk/muxstream", "MiB/s", [], "bulk/trio")
    mux.needs = "muxstream has no open_session yet"
    text = run.render([trio, mux], [], ["# header"])
    assert "1,024 MiB/s" in text
    assert "1.00x bulk/trio" in text
    assert "not run: muxstream has no open_session yet" in text


def test_loopback_modes_runs_every_case() -> None:
    # benchmarks/loopback_modes.py (docs/performance.md cites it): every case
    # transfers what it says, in two processes; figures are not checked.
    done = subprocess.run(
        [sys.executable, "benchmarks/loopback_modes.py", "--runs", "1", "--size", "4M",
         "--spin-us", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("1 runs of 4 MiB per case")
    cases = [line.split()[0] for line in lines[2:]]
    assert cases == ["trio", "framed", "framed+1us", "framed+1us", "tasks-send", "tasks-recv",
                     "tasks-recv-whole", "tasks", "muxstream"]
    for line in lines[2:]:  # name, median MiB/s, runs in the fast mode, the run
        match = re.search(r"\s([\d,]+)\s+[01]/1\s+([\d,]+) \(\d+\.\d+/\d+\.\d+\)", line)
        assert match, line
        assert match[1] == match[2] and int(match[1].replace(",", "")) > 0


def test_receiver_costs_times_every_part() -> None:
    # benchmarks/receiver_costs.py (docs/performance.md cites it): the timers count
    # in the receiving process, each part at least once per chunk; figures are
    # not checked.
    done = subprocess.run(
        [sys.executable, "benchmarks/receiver_costs.py", "--runs", "1", "--size", "4M"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("1 runs of 4 MiB")
    mux = re.fullmatch(
        r"\s+1 muxstream\s+([\d,]+)\s+([\d.]+)"
        r"\s+([\d.]+) \(([\d.]+)\)\s+([\d.]+) \(([\d.]+)\)\s+([\d.]+) \(([\d.]+)\)\s+(-?[\d.]+)",
        lines[2])
    assert mux, lines[2]
    cpu, parts = float(mux[2]), [float(mux[i]) for i in (3, 5, 7)]
    calls = [float(mux[i]) for i in (4, 6, 8)]
    assert all(n >= 1 for n in calls), calls  # a read, a decode, a take per chunk at least
    assert all(p > 0 for p in parts) and sum(parts) < cpu, (parts, cpu)
    assert re.fullmatch(r"\s+1 raw trio\s+[\d,]+\s+[\d.]+", lines[3]), lines[3]
    assert lines[4].startswith("raw trio's receiver: median")
