"""`muxstream demo` (the README's main job) and `muxstream bench`, with small sizes."""

from __future__ import annotations

import json

from .conftest import Served, cli_env, client_env, muxstream


def test_demo_prints_a_summary_and_exits_0() -> None:
    result = muxstream("demo", "--size", "24M", env=cli_env())
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    for needle in ("8 concurrent streams, all echoed intact", "25,165,824 sent, 25,165,824 "
                   "received", "MiB/s", "match", "p50", "p99", "graceful", "demo OK"):
        assert needle in out, out
    progress = result.stderr.decode().splitlines()
    # Not a terminal: one plain line per ~10 %, ending at 100 %.
    assert [line for line in progress if "%" in line][-1].split(":")[1].strip().startswith("100%")


def test_demo_json() -> None:
    result = muxstream("demo", "--size", "8M", "--json", env=cli_env())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["digest_match"] is True
    assert report["bytes"] == report["bytes_received_by_server"] == 8 << 20
    assert report["sha256_local"] == report["sha256_remote"]
    assert report["ping_idle"]["count"] == 20


def test_bench_against_a_running_server(server: Served) -> None:
    result = muxstream("bench", "--no-spawn", "--size", "8M", "--json", env=client_env(server))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["digest_match"] is True and report["bytes"] == 8 << 20
    assert report["mib_per_s"] > 0
