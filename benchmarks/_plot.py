"""Draw a benchmark run as a chart: every peer of every row, same-run ratios marked.

Usage::

    .venv/bin/python benchmarks/run.py --plot chart.png ...           # during a run
    .venv/bin/python -m benchmarks._plot RESULTS.json chart.png         # from a saved run

One panel per row (and unit): a bar per peer with its median, labelled with
the figure and its ratio to the row's baseline from the same run (the peer the
Markdown table's "ratio" column names), and the CPU-per-byte (or per-stream)
ratio, which a busy machine moves less. muxstream's bars are dark, baselines
light, and the baseline itself is outlined. Needs matplotlib (the ``bench``
extra).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

# metric -> (headline figure, unit, lower is better)
_HEADLINES: dict[str, tuple[str, str, bool]] = {
    "MiB/s": ("mib_s", "MiB/s", False),
    "streams/s": ("streams_s", "streams/s", False),
    "rtt": ("p50_us", "us, p50", True),
    "idle-memory": ("server_kib_per_stream", "KiB per stream (server)", True),
    "stalled-memory": ("server_growth_over_bound", "x its flow-control bound", True),
    "session-memory": ("kib_per_session", "KiB per session (larger side)", True),
}

_TITLES = {
    "bulk": "Bulk, 1 stream",
    "bulk16": "Bulk, 16 streams",
    "churn": "Stream churn",
    "ping": "Round-trip time",
    "memory": "Memory",
    "sessions": "Memory per idle session",
    "ws": "Bulk over WebSocket",
    "tls": "Bulk over TLS",
    "go": "Go spdystream (reference)",
}


def panels(measurements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group a run's measurements into chart panels (row + unit), with ratio labels."""
    by_key = {m["key"]: m for m in measurements}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for m in measurements:
        if m.get("metric") not in _HEADLINES or not m.get("median"):
            continue
        figure, unit, lower = _HEADLINES[m["metric"]]
        value = m["median"].get(figure)
        if value is None:
            continue
        row = m.get("row") or m["key"].split("/", 1)[0]
        panel = out.setdefault((row, unit), {
            "title": f"{_TITLES.get(row, row)} ({unit}; {'lower' if lower else 'higher'}"
                     " is better)",
            "bars": [],
        })
        ratio = ""
        ref = by_key.get(m.get("vs") or "")
        if ref is not None and ref.get("median"):
            theirs = ref["median"].get(_HEADLINES[ref["metric"]][0])
            if theirs:
                ratio = f"{value / theirs:.2f}x {ref.get('short', ref['key'])}"
            for cpu in ("cpu_s_per_gib", "cpu_us_per_stream"):
                mine, base = m["median"].get(cpu), ref["median"].get(cpu)
                if mine and base and ref is not m:
                    ratio += f", CPU {mine / base:.2f}x"
        panel["bars"].append({
            "label": m.get("label", m["key"]),
            "value": value,
            "ratio": ratio,
            "ours": "muxstream" in m.get("peer", "") or "muxstream" in m.get("label", ""),
            "baseline": m.get("vs") == m["key"],
        })
    return list(out.values())


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def plot_file(results: Path, out: Path) -> None:
    """Draw the run saved in ``results`` (run.py's JSON) into ``out`` (PNG)."""
    data = json.loads(results.read_text())
    groups = panels(data["measurements"])
    if not groups:
        raise ValueError(f"{results}: no measurement to draw")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [0.9 + 0.42 * len(g["bars"]) for g in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, sum(heights) + 1.2),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    machine = data.get("machine", {})
    fig.suptitle(
        f"muxstream benchmarks, {data.get('time', '')[:16].replace('T', ' ')} UTC, "
        f"commit {machine.get('commit', '?')}: medians of "
        f"{data.get('config', {}).get('repeats', '?')}, same-run ratios",
        fontsize=10,
    )
    for ax, group in zip(axes[:, 0], groups, strict=True):
        bars = group["bars"]
        labels = [b["label"] for b in bars]
        values = [b["value"] for b in bars]
        colors = ["#1f4e79" if b["ours"] else "#9dc3e6" for b in bars]
        edges = ["black" if b["baseline"] else "none" for b in bars]
        y = list(range(len(bars)))[::-1]
        ax.barh(y, values, color=colors, edgecolor=edges, linewidth=1.2)
        ax.set_yticks(y, labels, fontsize=8)
        top = max(v for v in values if not math.isnan(v)) or 1.0
        ax.set_xlim(0, top * 1.45)
        for yi, b in zip(y, bars, strict=True):
            text = _fmt(b["value"]) + (f"  ({b['ratio']})" if b["ratio"] else "")
            ax.text(b["value"] + top * 0.01, yi, text, va="center", fontsize=8)
        ax.set_title(group["title"], fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m benchmarks._plot RESULTS.json OUT.png", file=sys.stderr)
        return 2
    plot_file(Path(argv[1]), Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
