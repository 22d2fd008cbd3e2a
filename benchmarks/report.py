"""Turn results into the JSON file, markdown tables and PNG plots that docs/benchmarks.md shows."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

START, END = "<!-- results:start -->", "<!-- results:end -->"
SCENARIOS = {
    "cold": "cold mirror (empty folder)",
    "noop": "warm no-op (nothing changed; dagmirror: median of 10 passes in one process)",
    "changed": "1% changed (half same-size edits) + 0.1% new",
    "deleted": "10% deleted",
    "release-cold": "cold release mirror (empty folder; dagmirror --mode releases; the others: plain files)",
}


def _requests(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"


def tables(results: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[(r["server"], r["files"], r["scenario"])].append(r)
    out: list[str] = []
    for (server, files, scenario), rows in groups.items():
        ours = next((r["median_s"] for r in rows if r["tool"] == "dagmirror"), None)
        out += [f"\n#### {server}, {files:,} files: {SCENARIOS.get(scenario, scenario)}\n"]
        out += [
            "| tool | median s | dagmirror / tool | CPU s | peak RSS MB | requests | correct | "
            "missed same-size edits |",
            "|---|---:|---:|---:|---:|---|---|---:|",
        ]
        for r in sorted(rows, key=lambda r: r["median_s"]):
            ratio = f"{ours / r['median_s']:.2f}x" if ours and r["median_s"] else "-"
            correct = {True: "yes", False: "**no**", None: "-"}[r["correct"]]
            out.append(
                f"| {r['tool']} | {r['median_s']:.3f} | {ratio} | {r['cpu_s']} | {r['peak_rss_mb']} | "
                f"{_requests(r['requests'])} | {correct} | {r['missed_edits']} |"
            )
    return "\n".join(out) + "\n"


def daemon_tables(daemon: dict[str, Any]) -> str:
    out: list[str] = []
    if "propagation" in daemon:
        p = daemon["propagation"]
        out += [
            "\n#### Propagation: upload to visible file (`dagmirror run`)\n",
            "| uploads | visible | interval s | p50 s | p99 s | max s |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {p['uploads']} | {p['visible']} | {p['interval_s']} | {p['p50_s']} | {p['p99_s']} | "
            f"{p['max_s']} |",
        ]
    if "idle" in daemon:
        i = daemon["idle"]
        out += [
            "\n#### Idle daemon\n",
            "| files | interval s | window s | CPU s | CPU % | RSS MB | peak RSS MB |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {i['files']:,} | {i['interval_s']} | {i['window_s']} | {i['cpu_s']} | {i['cpu_percent']} | "
            f"{i['rss_mb']} | {i['peak_rss_mb']} |",
        ]
    return "\n".join(out) + "\n"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    keys = sorted({(r["server"], r["files"]) for r in results})
    scenarios = [s for s in SCENARIOS if any(r["scenario"] == s for r in results)]
    fig, axes = plt.subplots(
        len(keys), len(scenarios), figsize=(4.2 * len(scenarios), 3.4 * len(keys)), squeeze=False
    )
    for row, (server, files) in enumerate(keys):
        for col, scenario in enumerate(scenarios):
            ax = axes[row][col]
            rows = sorted(
                (r for r in results if (r["server"], r["files"], r["scenario"]) == (server, files, scenario)),
                key=lambda r: r["median_s"],
            )
            colors = [
                "tab:green"
                if r["tool"].startswith("dagmirror")
                else "tab:gray"
                if r["tool"].startswith("floor")
                else "tab:blue"
                for r in rows
            ]
            ax.barh([r["tool"] for r in rows], [r["median_s"] for r in rows], color=colors)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short log ranges
            ax.set_title(f"{scenario}, {files:,} files ({server})", fontsize=9)
            ax.set_xlabel("median seconds (log)", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.invert_yaxis()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(doc: Path, body: str) -> None:
    """Replace the generated block of docs/benchmarks.md, leaving the prose around it alone."""
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    doc.write_text(pattern.sub(lambda _: f"{START}\n{body}\n{END}", text))
