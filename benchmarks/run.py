"""Run the muxstream benchmark suite: every row against its baselines, in one run.

Usage (from the repository root)::

    .venv/bin/python benchmarks/run.py                 # everything, 1 GiB bulk, 3 repeats
    .venv/bin/python benchmarks/run.py --quick         # small sizes, 1 repeat (CI smoke)
    .venv/bin/python benchmarks/run.py --rows bulk,ping --size 256M --repeats 5
    .venv/bin/python benchmarks/run.py --rows bulk --only muxstream --profile py-spy

Each measurement is two fresh processes over 127.0.0.1 (a server and a client worker,
``benchmarks/worker.py`` or the Go reference binary); repetitions are interleaved
across peers (repeat 1 of every peer, then repeat 2, ...) so that machine noise hits
all peers alike, and each figure is the median of the repeats.  Ratios compare
medians from the same run.  Targets (issues 7 and 16) print PASS/MISS; they are
informational: the exit status is 0 unless a measurement crashed.

Results are printed as a table and written as JSON to ``benchmarks/results/``;
``--plot FILE`` also draws them as a chart (PNG; ``python -m benchmarks._plot``
redraws one from a JSON file).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # allow `python benchmarks/run.py`
    sys.path.insert(0, str(REPO))

from benchmarks import _plot, _profiling  # noqa: E402
from benchmarks._common import GiB, KiB, MiB, parse_size, rss_kib  # noqa: E402
from benchmarks.peers import mux as mux_peer  # noqa: E402
from benchmarks.peers import spdystream_go  # noqa: E402

RESULTS_DIR = REPO / "benchmarks" / "results"
ALL_ROWS = ("bulk", "bulk16", "churn", "ping", "memory", "sessions", "ws", "tls", "go")


# ---------------------------------------------------------------------------
# Worker processes


class WorkerCrashed(RuntimeError):
    """A worker exited non-zero, timed out, or broke the JSON-lines conversation."""


class Worker:
    """One worker subprocess with a JSON-lines stdout and a line-oriented stdin."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.name = name
        self.stderr: IO[bytes] = tempfile.TemporaryFile()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        assert self.proc.stdout is not None
        self._out = self.proc.stdout
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-4000:]

    def read_event(self, deadline: float) -> dict[str, Any]:
        """Return the next JSON event; raise WorkerCrashed on EOF, bad output or timeout."""
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerCrashed(f"{self.name}: timed out waiting for output")
            with selectors.DefaultSelector() as sel:
                sel.register(self._out, selectors.EVENT_READ)
                if not sel.select(remaining):
                    continue
            chunk = os.read(self._out.fileno(), 65536)
            if not chunk:
                status = self.proc.wait()
                raise WorkerCrashed(
                    f"{self.name}: exited with status {status} before reporting\n"
                    + self.stderr_text()
                )
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        if not line.startswith(b"{"):  # a wrapper's chatter (a profiler, say): not ours
            return self.read_event(deadline)
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise WorkerCrashed(f"{self.name}: bad output line {line[:200]!r}") from exc
        if not isinstance(event, dict):
            raise WorkerCrashed(f"{self.name}: bad output line {line[:200]!r}")
        return event

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float) -> int:
        """Close stdin (a server's signal to exit), wait, kill if it does not exit."""
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime field 14, stime field 15 (man 5 proc).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CheckpointHook = Callable[[str, dict[str, Any], Worker], dict[str, Any]]


@dataclass
class Launcher:
    """Builds worker command lines (Python workers, optionally profiled; the Go binary)."""

    go_binary: Path | None = None
    profiler: str | None = None  # "cprofile" or "py-spy": wraps the muxstream workers
    py_spy: str | None = None
    profile_dir: Path | None = None
    profile_counter: int = 0

    def argv(self, peer: str, spec: dict[str, Any]) -> list[str]:
        if peer == "go-spdystream":
            assert self.go_binary is not None
            return [str(self.go_binary), json.dumps(spec)]
        argv = [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)]
        if self.profiler and self.profile_dir is not None and peer == "muxstream":
            self.profile_counter += 1
            out = self.profile_dir / f"{spec['scenario']}-{spec['role']}-{self.profile_counter}"
            argv = _profiling.wrap(self.profiler, argv, out, self.py_spy)
        return argv


def run_pair(
    launcher: Launcher,
    peer: str,
    scenario: str,
    params: dict[str, Any],
    *,
    timeout: float,
    on_checkpoint: CheckpointHook | None = None,
) -> dict[str, Any]:
    """Run one server + client repetition; return the client's result fields.

    ``peer`` names one implementation for both sides, or ``"<server>><client>"`` for a
    mixed pair (``"go-spdystream>muxstream"``: Go server, muxstream client).
    """
    server_peer, _, client_peer = peer.partition(">")
    client_peer = client_peer or server_peer
    server_spec = {"peer": server_peer, "role": "server", "scenario": scenario, "params": params}
    server = Worker(launcher.argv(server_peer, server_spec), f"{server_peer} {scenario} server")
    client: Worker | None = None
    deadline = time.monotonic() + timeout
    try:
        event = server.read_event(time.monotonic() + 30)
        if event.get("event") != "listening":
            raise WorkerCrashed(f"{server.name}: expected 'listening', got {event}")
        client_spec = dict(server_spec, peer=client_peer, role="client", port=event["port"])
        client = Worker(launcher.argv(client_peer, client_spec), f"{client_peer} {scenario} client")
        extra: dict[str, Any] = {}
        server_cpu: float | None = None
        while True:
            try:
                event = client.read_event(deadline)
            except WorkerCrashed as exc:
                if server.proc.poll() is not None:
                    raise WorkerCrashed(f"{exc}\nserver stderr:\n{server.stderr_text()}") from exc
                raise
            kind = event.pop("event", None)
            if kind == "checkpoint" and event["name"] == "start":
                server_cpu = cpu_seconds(server.pid)
                client.tell("go")
            elif kind == "checkpoint":
                if on_checkpoint is not None:
                    extra.update(on_checkpoint(event["name"], event, server))
                client.tell("go")
            elif kind == "result":
                event.update(extra)
                if server_cpu is not None:
                    event["server_cpu"] = cpu_seconds(server.pid) - server_cpu
                status = client.finish(30)
                if status != 0:
                    raise WorkerCrashed(
                        f"{client.name}: exit status {status}\n" + client.stderr_text()
                    )
                if server.finish(30) not in (0, -9):
                    raise WorkerCrashed(f"{server.name}: crashed\n{server.stderr_text()}")
                return event
            else:
                raise WorkerCrashed(f"{client.name}: unexpected event {kind!r}")
    finally:
        server.kill()
        if client is not None:
            client.kill()


# ---------------------------------------------------------------------------
# What to measure


@dataclass
class Measurement:
    """One peer in one row: how to run it and how to reduce its results."""

    key: str
    row: str
    short: str  # name in the "ratio to" column
    label: str
    peer: str
    scenario: str
    params: dict[str, Any]
    metric: str  # "MiB/s", "streams/s", "rtt", "idle-memory", "stalled-memory", "session-memory"
    vs: str | None = None  # key of the measurement ratios are taken against
    needs: str | None = None  # why it cannot run here, if it cannot
    runs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def values(self) -> dict[str, float]:
        """Median of each figure over the successful repeats."""
        if not self.runs:
            return {}
        per_run: list[dict[str, float]] = [_figures(self.metric, run) for run in self.runs]
        keys = [k for k in per_run[0] if all(k in r for r in per_run)]
        return {k: statistics.median(r[k] for r in per_run) for k in keys}

    def headline(self) -> float:
        """The figure ratios are taken of (throughput, rate, p50, KiB per stream)."""
        values = self.values()
        return values.get(_HEADLINE[self.metric], math.nan)


_HEADLINE = {
    "MiB/s": "mib_s",
    "streams/s": "streams_s",
    "rtt": "p50_us",
    "idle-memory": "server_kib_per_stream",
    "stalled-memory": "server_growth_over_bound",
    "session-memory": "kib_per_session",
}


def _figures(metric: str, run: dict[str, Any]) -> dict[str, float]:
    if metric == "MiB/s":
        out = {"mib_s": run["bytes"] / run["seconds"] / MiB}
        if "client_cpu" in run and "server_cpu" in run:
            out["cpu_s_per_gib"] = (run["client_cpu"] + run["server_cpu"]) / (run["bytes"] / GiB)
        return out
    if metric == "streams/s":
        out = {"streams_s": run["count"] / run["seconds"]}
        if "client_cpu" in run and "server_cpu" in run:
            out["cpu_us_per_stream"] = (run["client_cpu"] + run["server_cpu"]) / run["count"] * 1e6
        return out
    if metric == "rtt":
        return {"p50_us": run["p50"] * 1e6, "p99_us": run["p99"] * 1e6}
    if metric == "idle-memory":
        n = run["streams"]
        return {
            "server_kib_per_stream": (run["server_rss_holding"] - run["server_rss_baseline"]) / n,
            "client_kib_per_stream": run["client_kib_per_stream"],
        }
    if metric == "session-memory":
        server = (run["server_rss_holding"] - run["server_rss_baseline"]) / run["sessions"]
        client = run["client_kib_per_session"]
        return {
            "server_kib_per_session": server,
            "client_kib_per_session": client,
            "kib_per_session": max(server, client),
        }
    if metric == "stalled-memory":
        # What flow control allows in flight: every stream's window, capped by the
        # session window.
        windows_kib = run["streams"] * run["window"] / KiB
        bound_kib = min(windows_kib, run["session_window"] / KiB)
        growth = run["server_rss_stalled"] - run["server_rss_baseline"]
        return {
            "server_growth_kib": growth,
            "windows_kib": windows_kib,
            "bound_kib": bound_kib,
            "server_growth_over_windows": growth / windows_kib,
            "server_growth_over_bound": growth / bound_kib,
            "sent_over_bound": run["bytes_sent"] / KiB / bound_kib,
        }
    raise ValueError(metric)


@dataclass
class Config:
    size: int
    warmup: int
    repeats: int
    churn_count_1: int
    churn_count_64: int
    ping_count: int
    ping_load_count: int
    idle_streams: int
    stalled_streams: int
    idle_sessions: int
    timeout: float


def plan(cfg: Config, rows: list[str], go_ok: str | None, tls: dict[str, str]) -> list[Measurement]:
    """Return every measurement of the selected rows (with unavailable ones marked)."""
    mux = mux_peer.unavailable_reason()
    mux_ws = mux or mux_peer.websocket_unavailable_reason()
    bulk = {"size": cfg.size, "warmup": cfg.warmup}
    bulk16 = dict(bulk, streams=16)
    churn1 = {"count": cfg.churn_count_1, "concurrency": 1}
    churn64 = {"count": cfg.churn_count_64, "concurrency": 64}
    ping = {"count": cfg.ping_count}
    loaded = {"count": cfg.ping_load_count, "interval": 0.002}
    # Memory rows: room for every stream (the default concurrency limit is lower).
    idle = {"streams": cfg.idle_streams, "options": {"max_concurrent_streams": 2**20}}
    stalled = {"streams": cfg.stalled_streams, "options": {"max_concurrent_streams": 2**20}}
    n_idle, n_stalled, n_sessions = cfg.idle_streams, cfg.stalled_streams, cfg.idle_sessions
    sessions = {"sessions": n_sessions}
    B, S, R = "MiB/s", "streams/s", "rtt"
    # key, short name, label, peer, scenario, params, metric, ratio to (key), why not runnable
    # fmt: off
    specs: list[tuple[str, str, str, str, str, dict[str, Any], str, str | None, str | None]] = [
        # 1. bulk, one stream and 16 streams (16 streams compare with one raw connection)
        ("bulk/blocking", "blocking", "blocking sockets, 256 KiB sendall/recv_into (the limit)",
         "blocking", "bulk", bulk, B, "bulk/trio", None),
        ("bulk/trio", "raw trio", "raw trio SocketStream", "trio", "bulk", bulk, B, "bulk/trio",
         None),
        ("bulk/h2", "h2", "h2 over trio (max windows and frames)", "h2", "bulk", bulk, B,
         "bulk/trio", None),
        ("bulk/trio-websocket", "trio-websocket", "trio-websocket, 64 KiB messages",
         "trio-websocket", "bulk", bulk, B, "bulk/trio", None),
        ("bulk/muxstream", "muxstream", "muxstream, 1 stream", "muxstream", "bulk", bulk, B,
         "bulk/trio", mux),
        ("bulk16/trio", "raw trio", "raw trio SocketStream (1 connection)", "trio", "bulk", bulk,
         B, "bulk16/trio", None),
        ("bulk16/h2", "h2", "h2 over trio, 16 streams", "h2", "bulk", bulk16, B, "bulk16/trio",
         None),
        ("bulk16/muxstream", "muxstream", "muxstream, 16 streams", "muxstream", "bulk", bulk16, B,
         "bulk16/trio", mux),
        # 2. churn
        ("churn/h2-c1", "h2 (1)", "h2 over trio, 1 in flight", "h2", "churn", churn1, S,
         "churn/h2-c1", None),
        ("churn/muxstream-c1", "muxstream (1)", "muxstream, 1 in flight", "muxstream", "churn",
         churn1, S, "churn/h2-c1", mux),
        ("churn/muxstream-nowait-c1", "muxstream (1, no wait)",
         "muxstream, 1 in flight, open_stream(wait_reply=False)", "muxstream", "churn",
         {**churn1, "wait_reply": False}, S, "churn/h2-c1", mux),
        ("churn/h2-c64", "h2 (64)", "h2 over trio, 64 in flight", "h2", "churn", churn64, S,
         "churn/h2-c64", None),
        ("churn/muxstream-c64", "muxstream (64)", "muxstream, 64 in flight", "muxstream", "churn",
         churn64, S, "churn/h2-c64", mux),
        ("churn/muxstream-nowait-c64", "muxstream (64, no wait)",
         "muxstream, 64 in flight, open_stream(wait_reply=False)", "muxstream", "churn",
         {**churn64, "wait_reply": False}, S, "churn/h2-c64", mux),
        # 3. ping RTT (ratios of p50)
        ("ping/blocking", "blocking echo", "blocking sockets, 4-byte echo, idle", "blocking",
         "ping", ping, R, "ping/trio", None),
        ("ping/trio", "trio echo", "raw trio, 4-byte echo, idle", "trio", "ping", ping, R,
         "ping/trio", None),
        ("ping/trio-load", "trio echo (load)", "raw trio echo while a 2nd connection saturates",
         "trio", "ping", dict(loaded, load=True), R, "ping/trio", None),
        ("ping/muxstream", "muxstream", "muxstream PING, idle", "muxstream", "ping", ping, R,
         "ping/trio", mux),
        ("ping/muxstream-load-send", "muxstream (sending)",
         "muxstream PING while the pinger sends on 1 stream", "muxstream", "ping",
         dict(loaded, load="send"), R, "ping/trio", mux),
        ("ping/muxstream-load-recv", "muxstream (receiving)",
         "muxstream PING while the pinger receives on 1 stream", "muxstream", "ping",
         dict(loaded, load="recv"), R, "ping/trio", mux),
        # 4. memory
        ("memory/idle", "idle", f"muxstream server, {n_idle} idle streams held", "muxstream",
         "idle_memory", idle, "idle-memory", None, mux),
        ("memory/idle-tasks", "idle+tasks",
         f"muxstream server, {n_idle} idle streams, a task each in receive_some", "muxstream",
         "idle_memory", dict(idle, tasks=True), "idle-memory", None, mux),
        ("memory/stalled", "stalled", f"muxstream receiver, {n_stalled} streams not reading",
         "muxstream", "stalled_memory", stalled, "stalled-memory", None, mux),
        # 4b. memory per idle session (one stream each), on each side, per transport
        ("sessions/tcp", "TCP", f"{n_sessions} idle sessions over TCP", "muxstream",
         "idle_sessions", sessions, "session-memory", None, mux),
        ("sessions/tls", "TLS", f"{n_sessions} idle sessions over TLS", "muxstream",
         "idle_sessions", dict(sessions, tls=tls), "session-memory", None, mux),
        ("sessions/ws", "WebSocket", f"{n_sessions} idle sessions over WebSocket", "muxstream",
         "idle_sessions", dict(sessions, transport="websocket"), "session-memory", None, mux_ws),
        # 5. WebSocket and TLS
        ("ws/trio-websocket", "trio-websocket", "trio-websocket, 64 KiB messages",
         "trio-websocket", "bulk", bulk, B, "ws/trio-websocket", None),
        ("ws/muxstream", "muxstream", "muxstream over WebSocket, 1 stream", "muxstream", "bulk",
         dict(bulk, transport="websocket"), B, "ws/trio-websocket", mux_ws),
        ("tls/trio", "trio TLS", "raw trio SSLStream", "trio", "bulk", dict(bulk, tls=tls), B,
         "tls/trio", None),
        ("tls/muxstream", "muxstream", "muxstream over TLS, 1 stream", "muxstream", "bulk",
         dict(bulk, tls=tls), B, "tls/trio", mux),
        # 6. Go spdystream, for reference (ratios to the same rows' Python baselines)
        ("go/bulk", "Go", "Go spdystream, 1 stream", "go-spdystream", "bulk", bulk, B,
         "bulk/trio", go_ok),
        ("go/bulk16", "Go", "Go spdystream, 16 streams", "go-spdystream", "bulk", bulk16, B,
         "bulk16/trio", go_ok),
        ("go/churn-c1", "Go", "Go spdystream churn, 1 in flight", "go-spdystream", "churn",
         churn1, S, "churn/h2-c1", go_ok),
        ("go/churn-c64", "Go", "Go spdystream churn, 64 in flight", "go-spdystream", "churn",
         churn64, S, "churn/h2-c64", go_ok),
        # mixed pairs: interoperability at speed (spdystream sends no WINDOW_UPDATE, so
        # a muxstream sender must not wait for credit; ratios to Go on both ends)
        ("go/mux-to-go-bulk", "Go", "muxstream client -> Go spdystream server, 1 stream",
         "go-spdystream>muxstream", "bulk", bulk, B, "go/bulk", go_ok or mux),
        ("go/go-to-mux-bulk", "Go", "Go spdystream client -> muxstream server, 1 stream",
         "muxstream>go-spdystream", "bulk", bulk, B, "go/bulk", go_ok or mux),
        ("go/mux-to-go-churn", "Go", "muxstream client -> Go spdystream server, churn, 64",
         "go-spdystream>muxstream", "churn", churn64, S, "go/churn-c64", go_ok or mux),
        ("go/go-to-mux-churn", "Go", "Go spdystream client -> muxstream server, churn, 64",
         "muxstream>go-spdystream", "churn", churn64, S, "go/churn-c64", go_ok or mux),
    ]
    # fmt: on
    out = []
    for key, short, label, peer, scenario, params, metric, vs, needs in specs:
        row = key.split("/", 1)[0]
        if row in rows:
            out.append(
                Measurement(key, row, short, label, peer, scenario, params, metric, vs, needs)
            )
    return out


# ---------------------------------------------------------------------------
# Targets (issue 16, round 4; and those of issue 7 that still stand)


@dataclass
class Target:
    text: str
    key: str  # measurement whose figure is checked
    figure: str  # "ratio" (headline over the reference key) or a values() name
    bound: float
    reference: str | None = None
    at_least: bool = True
    issue: int = 16
    #: the reference is a plain byte pump over loopback: say which of loopback's
    #: two modes it ran in, which decides the ratio (docs/performance.md)
    loopback_mode: bool = False


def _session_target(transport: str, key: str) -> Target:
    return Target(f"memory per idle {transport} session <= 64 KiB on each side", key,
                  "kib_per_session", 64, at_least=False)


TARGETS = [
    Target("bulk 1 stream >= 0.6x raw trio", "bulk/muxstream", "ratio", 0.6, "bulk/trio",
           loopback_mode=True),
    Target("bulk 1 stream >= 1.5x Go spdystream", "bulk/muxstream", "ratio", 1.5, "go/bulk"),
    Target("bulk 16 streams >= 0.5x raw trio", "bulk16/muxstream", "ratio", 0.5, "bulk16/trio",
           loopback_mode=True),
    Target("TLS bulk >= 1.0x trio SSLStream", "tls/muxstream", "ratio", 1.0, "tls/trio"),
    Target(
        "WebSocket bulk >= 1.5x trio-websocket", "ws/muxstream", "ratio", 1.5, "ws/trio-websocket"
    ),
    Target("churn, 64 in flight >= 1.2x Go spdystream", "churn/muxstream-c64", "ratio", 1.2,
           "go/churn-c64"),
    Target("idle ping p50 <= 1.3x raw trio echo", "ping/muxstream", "ratio", 1.3, "ping/trio",
           at_least=False),
    _session_target("TCP", "sessions/tcp"),
    _session_target("TLS", "sessions/tls"),
    _session_target("WebSocket", "sessions/ws"),
    Target("bulk 1 stream >= 5x h2 over trio", "bulk/muxstream", "ratio", 5.0, "bulk/h2", issue=7),
    Target("bulk 16 streams >= 5x h2 over trio", "bulk16/muxstream", "ratio", 5.0, "bulk16/h2",
           issue=7),
    Target("ping p99 while pinger sends <= 10 ms", "ping/muxstream-load-send", "p99_us", 10000,
           at_least=False, issue=7),
    Target("ping p99 while pinger receives <= 10 ms", "ping/muxstream-load-recv", "p99_us", 10000,
           at_least=False, issue=7),
    Target("idle streams <= 2 KiB each", "memory/idle", "server_kib_per_stream", 2.0,
           at_least=False, issue=7),
    Target(
        "stalled receiver growth <= 1.5x its bound (min(streams x window, session window))",
        "memory/stalled", "server_growth_over_bound", 1.5, at_least=False, issue=7,
    ),
]


def evaluate(target: Target, by_key: dict[str, Measurement]) -> dict[str, Any]:
    m = by_key.get(target.key)
    ref = by_key.get(target.reference) if target.reference else None
    out: dict[str, Any] = {"target": target.text, "bound": target.bound, "issue": target.issue}
    if m is None or (target.reference and ref is None):
        return dict(out, status="not run")
    if not m.runs or (ref is not None and not ref.runs):
        return dict(out, status="no data")
    value = m.headline() / ref.headline() if ref is not None else m.values()[target.figure]
    ok = value >= target.bound if target.at_least else value <= target.bound
    if target.loopback_mode and ref is not None:
        out["note"] = loopback_mode(ref)
    return dict(
        out, value=value, shown=_show(target.figure, value), status="PASS" if ok else "MISS"
    )


#: Both sides' CPU s/GiB under which a byte pump ran in loopback's fast mode
#: (~0.3-0.4 there, ~0.7-0.9 in the slow one; benchmarks/loopback_modes.py).
FAST_MODE_CPU = 0.5


def loopback_mode(ref: Measurement) -> str:
    """In how many of its runs the byte pump ``ref`` ran in loopback's fast mode,
    told by its CPU per byte."""
    cpus = [_figures(ref.metric, r).get("cpu_s_per_gib") for r in ref.runs]
    known = [c for c in cpus if c is not None]
    if not known:
        return "loopback mode unknown: no CPU figures"
    fast = sum(1 for c in known if c < FAST_MODE_CPU)
    if fast == len(known):
        mode = "fast mode"
    elif not fast:
        mode = "slow mode"
    else:
        mode = f"fast mode in {fast} of {len(known)} runs"
    spread = f"{min(known):.2f}" if len(known) == 1 else f"{min(known):.2f}-{max(known):.2f}"
    return f"{ref.short} ran in loopback's {mode}, {spread} CPU s/GiB"


def _show(figure: str, value: float) -> str:
    if figure.endswith("_us"):
        return f"{value / 1000:.2f} ms"
    if figure == "streams_s":
        return f"{value:,.0f} streams/s"
    if figure.endswith("kib_per_stream"):
        return f"{value:.2f} KiB"
    if figure.endswith("kib_per_session"):
        return f"{value:,.0f} KiB"
    return f"{value:.2f}x"


# ---------------------------------------------------------------------------
# Running and reporting


def _server_rss(event_name: str, worker: Worker) -> dict[str, Any]:
    return {f"server_rss_{event_name}": rss_kib(worker.pid)}


def checkpoint_hook(name: str, event: dict[str, Any], server: Worker) -> dict[str, Any]:
    """Measure the server's RSS at each client checkpoint (memory rows)."""
    time.sleep(0.2)  # let the server finish processing what the client just sent
    return _server_rss(name, server)


def run_all(
    measurements: list[Measurement], cfg: Config, launcher: Launcher, log: Callable[[str], None]
) -> None:
    """Run every runnable measurement ``cfg.repeats`` times, interleaved per repeat."""
    runnable = [m for m in measurements if m.needs is None]
    for repeat in range(cfg.repeats):
        for m in runnable:
            if m.errors and not m.runs:
                continue  # crashed already: do not burn time repeating the crash
            label = f"[{repeat + 1}/{cfg.repeats}] {m.key}"
            started = time.monotonic()
            try:
                result = run_pair(
                    launcher,
                    m.peer,
                    m.scenario,
                    m.params,
                    timeout=cfg.timeout,
                    on_checkpoint=checkpoint_hook,
                )
            except WorkerCrashed as exc:
                m.errors.append(str(exc))
                log(f"{label}: CRASHED: {str(exc).splitlines()[0]}")
                continue
            m.runs.append(result)
            figures = ", ".join(f"{k}={v:,.1f}" for k, v in _figures(m.metric, result).items())
            log(f"{label}: {figures} ({time.monotonic() - started:.1f} s)")


SECTIONS = {
    "bulk": "Bulk transfer, 1 stream (client -> server)",
    "bulk16": "Bulk transfer, 16 streams (client -> server)",
    "churn": "Stream churn: open, send 100 B, receive 100 B reply, close",
    "ping": "Round-trip time",
    "memory": "Memory (server RSS growth)",
    "sessions": "Memory per idle session (one stream each; RSS growth on each side)",
    "ws": "Bulk over WebSocket, 1 stream",
    "tls": "Bulk over TLS, 1 stream",
    "go": "Go spdystream (reference), and mixed Go/muxstream pairs",
}


def _fmt_value(m: Measurement) -> str:
    v = m.values()
    if m.metric == "MiB/s":
        cpu = f", {v['cpu_s_per_gib']:.2f} CPU s/GiB" if "cpu_s_per_gib" in v else ""
        return f"{v['mib_s']:,.0f} MiB/s{cpu}"
    if m.metric == "streams/s":
        cpu = f", {v['cpu_us_per_stream']:,.0f} CPU us/stream" if "cpu_us_per_stream" in v else ""
        return f"{v['streams_s']:,.0f} streams/s{cpu}"
    if m.metric == "rtt":
        return f"p50 {v['p50_us']:,.0f} us, p99 {v['p99_us']:,.0f} us"
    if m.metric == "idle-memory":
        return (
            f"{v['server_kib_per_stream']:.2f} KiB/stream (client {v['client_kib_per_stream']:.2f})"
        )
    if m.metric == "session-memory":
        return (
            f"server {v['server_kib_per_session']:,.0f} KiB/session, "
            f"client {v['client_kib_per_session']:,.0f} KiB/session"
        )
    if m.metric == "stalled-memory":
        return (
            f"+{v['server_growth_kib'] / 1024:,.1f} MiB RSS; streams x window = "
            f"{v['windows_kib'] / 1024:,.1f} MiB ({v['server_growth_over_windows']:.2f}x), "
            f"flow-control bound {v['bound_kib'] / 1024:,.1f} MiB "
            f"({v['server_growth_over_bound']:.2f}x; sender got {v['sent_over_bound']:.2f}x out)"
        )
    raise ValueError(m.metric)


def render(
    measurements: list[Measurement], targets: list[dict[str, Any]], header: list[str]
) -> str:
    """Return the results as a Markdown table (readable in a terminal too)."""
    lines = [*header, ""]
    by_row: dict[str, list[Measurement]] = {}
    for m in measurements:
        by_row.setdefault(m.row, []).append(m)
    by_key = {m.key: m for m in measurements}
    for row, ms in by_row.items():
        lines.append(f"### {SECTIONS[row]}")
        lines.append("")
        lines.append("| peer | median | ratio |")
        lines.append("|---|---|---|")
        for m in ms:
            ratio = ""
            if m.needs is not None:
                value = f"not run: {m.needs}"
            elif not m.runs:
                value = "CRASHED (see the log)"
            else:
                value = _fmt_value(m) + (f" ({len(m.runs)} runs)" if len(m.runs) > 1 else "")
                ref = by_key.get(m.vs) if m.vs else None
                if ref is not None and ref.runs:
                    what = " p50" if m.metric == "rtt" else ""
                    ratio = f"{m.headline() / ref.headline():.2f}x {ref.short}{what}"
                    mine, theirs = m.values(), ref.values()
                    for cpu in ("cpu_s_per_gib", "cpu_us_per_stream"):
                        if cpu in mine and cpu in theirs and theirs[cpu] > 0:
                            ratio += f" (CPU {mine[cpu] / theirs[cpu]:.2f}x)"
            lines.append(f"| {m.label} | {value} | {ratio} |")
        lines.append("")
    lines.append("### Targets")
    lines.append("")
    lines.append("| target | issue | measured | verdict |")
    lines.append("|---|---|---|---|")
    for t in targets:
        verdict = f"{t['status']} ({t['note']})" if "note" in t else t["status"]
        lines.append(f"| {t['target']} | {t['issue']} | {t.get('shown', '')} | {verdict} |")
    return "\n".join(lines)


def machine_description() -> dict[str, Any]:
    """CPU, memory, kernel and software versions of this machine."""
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    versions: dict[str, str] = {}
    from importlib import metadata

    for dist in ("trio", "h2", "trio-websocket", "wsproto", "h11", "muxstream"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    go = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        go = subprocess.run(
            ["go", "version"], capture_output=True, text=True, timeout=20
        ).stdout.strip()
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(REPO)]
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=20
        ).stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--", "muxstream"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.splitlines()
        if commit and changed:
            commit += f" + uncommitted changes to {len(changed)} file(s) in muxstream/"
    return {
        "commit": commit,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "go": go,
    }


@contextlib.contextmanager
def tls_files(directory: Path) -> Iterator[dict[str, str]]:
    """Write a trustme CA and a ``localhost`` server certificate as PEM files."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    paths = {
        "ca": directory / "ca.pem",
        "cert": directory / "cert.pem",
        "key": directory / "key.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(paths["cert"]), append=i > 0)
    yield {k: str(v) for k, v in paths.items()}


def apply_mux_options(
    measurements: list[Measurement], pairs: list[str], parser: argparse.ArgumentParser
) -> None:
    """Merge ``--mux-option NAME=VALUE`` settings into every muxstream measurement."""
    extra: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            parser.error(f"--mux-option needs NAME=VALUE, got {pair!r}")
        try:
            extra[name.strip()] = json.loads(text)
        except ValueError:
            extra[name.strip()] = text
    if not extra:
        return
    for m in measurements:
        if m.peer == "muxstream":
            m.params = dict(m.params, options={**m.params.get("options", {}), **extra})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="muxstream benchmarks: every row against its baselines, in one run."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and 1 repeat (a smoke run, well under a minute)",
    )
    parser.add_argument(
        "--rows",
        default=",".join(ALL_ROWS),
        help=f"comma-separated rows to run (default all: {','.join(ALL_ROWS)})",
    )
    parser.add_argument("--size", type=parse_size, help="bulk bytes per transfer (default 1G)")
    parser.add_argument("--repeats", type=int, help="repetitions per measurement (default 3)")
    parser.add_argument(
        "--churn-count",
        type=int,
        help="streams per churn measurement (default 3000 at 1, 20000 at 64)",
    )
    parser.add_argument("--ping-count", type=int, help="pings per RTT measurement (default 3000)")
    parser.add_argument("--idle-streams", type=int, help="idle streams held (default 10000)")
    parser.add_argument(
        "--stalled-streams", type=int, help="stalled receiving streams (default 100)"
    )
    parser.add_argument(
        "--idle-sessions", type=int, help="idle sessions per transport (default 1000)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds before a single measurement counts as hung",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="cprofile",
        choices=("cprofile", "py-spy"),
        help="profile the muxstream workers (cProfile by default, or py-spy: pass "
        "--py-spy PATH or have py-spy on PATH) and print where the time goes",
    )
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy binary")
    parser.add_argument(
        "--output",
        type=Path,
        help="JSON output path (default benchmarks/results/run-<UTC time>.json)",
    )
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--plot", type=Path, metavar="FILE",
        help="also draw the results as a chart (PNG; needs matplotlib, in the bench extra)",
    )
    parser.add_argument(
        "--mux-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="session option for every muxstream measurement (repeatable), e.g. "
        "initial_window=4194304; values are parsed as JSON, else kept as text",
    )
    parser.add_argument(
        "--only",
        help="comma-separated measurement keys or peers to run (e.g. bulk/muxstream,trio)",
    )
    args = parser.parse_args(argv)

    quick = args.quick
    cfg = Config(
        size=args.size or (16 * MiB if quick else GiB),
        warmup=0,
        repeats=args.repeats or (1 if quick else 3),
        churn_count_1=args.churn_count or (200 if quick else 3000),
        churn_count_64=args.churn_count or (500 if quick else 20000),
        ping_count=args.ping_count or (200 if quick else 3000),
        ping_load_count=args.ping_count or (100 if quick else 1500),
        idle_streams=args.idle_streams or (500 if quick else 10000),
        stalled_streams=args.stalled_streams or (10 if quick else 100),
        idle_sessions=args.idle_sessions or (50 if quick else 1000),
        timeout=args.timeout,
    )
    cfg.warmup = min(cfg.size // 4, 16 * MiB)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ALL_ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {','.join(ALL_ROWS)}")

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="muxbench-") as tmp:
        tmpdir = Path(tmp)
        launcher = Launcher()
        go_missing = spdystream_go.unavailable_reason()
        if "go" in rows and go_missing is None:
            try:
                launcher.go_binary = spdystream_go.build(tmpdir / "go")
            except (RuntimeError, subprocess.SubprocessError) as exc:
                go_missing = f"build failed: {str(exc).splitlines()[0]}"
                log(str(exc))
        if args.profile:
            if args.profile == "py-spy" and not args.py_spy:
                parser.error("--profile py-spy needs py-spy (pip install py-spy, or --py-spy PATH)")
            launcher.profiler, launcher.py_spy = args.profile, args.py_spy
            launcher.profile_dir = tmpdir / "profiles"
            launcher.profile_dir.mkdir()
        with tls_files(tmpdir) as tls:
            measurements = plan(cfg, rows, go_missing, tls)
            apply_mux_options(measurements, args.mux_option, parser)
            if args.only:
                wanted = {w.strip() for w in args.only.split(",")}
                measurements = [m for m in measurements if m.key in wanted or m.peer in wanted]
            started, load_before = time.monotonic(), os.getloadavg()
            run_all(measurements, cfg, launcher, log)
            elapsed, load_after = time.monotonic() - started, os.getloadavg()

        by_key = {m.key: m for m in measurements}
        targets = [evaluate(t, by_key) for t in TARGETS]
        machine = machine_description()
        now = datetime.datetime.now(datetime.UTC)
        command = "benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
        header = [
            f"## muxstream benchmarks, {now:%Y-%m-%d %H:%M} UTC",
            "",
            f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
            f"Linux {machine['kernel']}, Python {machine['python']}, "
            + ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
            + (f", {machine['go']}" if machine["go"] else ""),
            f"Command: `{command.strip()}` ({elapsed:.0f} s); bulk {cfg.size / MiB:,.0f} MiB, "
            f"median of {cfg.repeats}, two processes over 127.0.0.1, at commit "
            f"{machine['commit'] or 'unknown'}.",
            f"Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after "
            f"({machine['cores']} cores: other work on the machine shares them).",
        ]
        table = render(measurements, targets, header)
        print(table)
        if args.profile and launcher.profile_dir is not None:
            print()
            print(_profiling.summarize(launcher.profile_dir))

    crashed = [m for m in measurements if m.errors]
    output = (
        args.output or RESULTS_DIR / f"run-{now:%Y%m%dT%H%M%SZ}{'-quick' if quick else ''}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "time": now.isoformat(),
                "command": command.strip(),
                "machine": machine,
                "config": cfg.__dict__,
                "elapsed_s": elapsed,
                "load_average": {"before": load_before, "after": load_after},
                "measurements": [
                    {
                        "key": m.key,
                        "row": m.row,
                        "short": m.short,
                        "vs": m.vs,
                        "label": m.label,
                        "peer": m.peer,
                        "scenario": m.scenario,
                        "params": {k: v for k, v in m.params.items() if k != "tls"},
                        "metric": m.metric,
                        "not_run": m.needs,
                        "median": m.values(),
                        "runs": m.runs,
                        "errors": m.errors,
                    }
                    for m in measurements
                ],
                "targets": targets,
            },
            indent=1,
            default=str,
        )
        + "\n"
    )
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.plot:
        _plot.plot_file(output, args.plot)
        log(f"chart written to {args.plot}")
    log(f"results written to {output}")
    for m in crashed:
        log(f"CRASHED {m.key}:\n{m.errors[0]}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
