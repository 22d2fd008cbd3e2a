"""`python -m benchmarks`: dagmirror side by side with the tools people use today, on real S3 servers
started here on loopback (and stopped by pid). See docs/benchmarks.md for what each scenario measures.

  python -m benchmarks --quick --json results.json     # <= 5 minutes: SeaweedFS, 2,000 files, cold + no-op
  python -m benchmarks --docs                           # the full comparison; writes docs/benchmarks.md
  python -m benchmarks --releases-only --json r.json    # release mode: polls at 1k/10k/50k, cold at 10k,
                                                        # deploy -> visible (docs/benchmarks.md, "Releases")
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from dagmirror.devtools.servers import (
    S3Server,
    localstack_server,
    moto_server,
    s3_client,
    seaweedfs_server,
)

from . import daemon, releases, report
from .peers import TOOLS, Target
from .scenarios import Bench

ROOT = Path(__file__).resolve().parents[1]
ALL_TOOLS = [
    "dagmirror",
    "aws",
    "s5cmd",
    "rclone",
    "rclone-tuned",
    "airflow",
    "boto3-loop",
    "floor-list",
    "floor-get",
]
QUICK_TOOLS = ["dagmirror", "aws", "s5cmd", "floor-list", "floor-get"]
# Servers that may fail to start on a given machine (LocalStack needs Python 3.13 and its own venv): the
# suite says why and goes on with the others. SeaweedFS and moto are dev dependencies: their failure is fatal.
OPTIONAL_SERVERS = frozenset({"localstack"})


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="cold + no-op, 2,000 files, SeaweedFS, aws and s5cmd"
    )
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument(
        "--servers",
        default="seaweedfs,localstack:1000",
        help="comma list of seaweedfs, moto, localstack; NAME:N+M runs that server at sizes N and M only "
        "(e.g. localstack:1000), instead of --files",
    )
    ap.add_argument("--files", default="1000,10000", help="comma list of corpus sizes")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per tool and scenario (median reported)")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS))
    ap.add_argument(
        "--slow-runs",
        type=int,
        default=5,
        help="runs of the slow peers (Airflow S3Hook, boto3 loop) on corpora over 1,000 files",
    )
    ap.add_argument("--scenarios", default="cold,noop,changed,deleted")
    ap.add_argument("--propagation", type=int, default=200, help="uploads for the latency figure (0: skip)")
    ap.add_argument(
        "--idle-files", type=int, default=10_000, help="corpus for the idle daemon figure (0: skip)"
    )
    ap.add_argument("--idle-seconds", type=float, default=120)
    ap.add_argument("--docs", action="store_true", help="write docs/benchmarks.md and its plot")
    rel = ap.add_argument_group("releases (on every server of --servers, after its other scenarios)")
    rel.add_argument(
        "--releases",
        default="",
        help="comma list of corpus sizes: publish one release of each with "
        "`dagmirror deploy` and count the requests of a no-op release-mode poll (empty: no release scenario)",
    )
    rel.add_argument(
        "--release-cold", default="10000", help="of those sizes, the ones that also get the cold comparison"
    )
    rel.add_argument("--release-tools", default=",".join(releases.RELEASE_TOOLS))
    rel.add_argument("--release-runs", type=int, help="timed runs of the release cold comparison (--runs)")
    rel.add_argument(
        "--release-latency", type=int, default=20, help="deploys per daemon mode, deploy -> visible (0: skip)"
    )
    rel.add_argument("--release-interval", type=float, default=1.0, help="daemon interval for that figure")
    rel.add_argument(
        "--releases-only",
        action="store_true",
        help="only the release scenario, --releases 1000,10000,50000 --release-cold 10000 "
        "--release-runs 3 on SeaweedFS (unless given); no other scenario or daemon figure",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.servers, args.files, args.runs, args.tools = "seaweedfs", "2000", 3, ",".join(QUICK_TOOLS)
        args.scenarios, args.propagation, args.idle_files = "cold,noop", 0, 0
        args.releases, args.release_cold, args.release_latency = "1000", "1000", 5
        args.release_tools = "dagmirror,s5cmd,floor-get"
    if args.releases_only:
        given = " ".join(argv)
        args.scenarios, args.propagation, args.idle_files = "", 0, 0
        if "--servers" not in given:
            args.servers = "seaweedfs"
        if "--releases " not in given and "--releases=" not in given:
            args.releases = "1000,10000,50000"
        if args.release_runs is None:
            args.release_runs = 3
    return args


def size_list(text: str) -> list[int]:
    """`"1000,10000"` -> [1000, 10000]; empty -> []."""
    return [int(n) for n in text.split(",") if n.strip()]


@contextlib.contextmanager
def server(name: str, workdir: Path) -> Iterator[S3Server]:
    if name == "seaweedfs":
        with seaweedfs_server(workdir / "seaweedfs") as s:
            yield s
    elif name == "moto":
        with moto_server() as s:
            yield s
    elif name == "localstack":
        with localstack_server(workdir / "localstack") as s:
            yield s
    else:
        raise SystemExit(f"unknown server {name!r}: use seaweedfs, moto or localstack")


def server_specs(args: argparse.Namespace) -> list[tuple[str, list[int]]]:
    """`--servers seaweedfs,localstack:1000` -> [("seaweedfs", --files sizes), ("localstack", [1000])]."""
    specs = []
    for spec in args.servers.split(","):
        name, _, sizes = spec.partition(":")
        try:
            specs.append((name, [int(n) for n in (sizes.split("+") if sizes else args.files.split(","))]))
        except ValueError:
            raise SystemExit(f"bad server spec {spec!r}: use NAME or NAME:N+M (corpus sizes)") from None
    return specs


def bench_server(
    s: S3Server,
    sizes: list[int],
    args: argparse.Namespace,
    tools: list[str],
    workdir: Path,
    daemon_figures: dict[str, Any],
) -> list[dict[str, Any]]:
    """Every corpus size and scenario on one running server; the daemon figures on SeaweedFS only."""
    results: list[dict[str, Any]] = []
    client = s3_client(s.endpoint_url)
    for files in sizes if args.scenarios else []:
        slow = args.slow_runs if files > 1000 else None
        bench = Bench(s.name, s.endpoint_url, client, files, tools, args.runs, workdir, slow_runs=slow)
        bench.setup()
        for scenario in args.scenarios.split(","):
            getattr(bench, scenario)()
        results += [r.as_dict() for r in bench.results]
        bench.cleanup()
        if files == args.idle_files and s.name == "seaweedfs":
            daemon_figures["idle"] = daemon.idle(bench.target, workdir, files, args.idle_seconds)
            print(f"idle: {daemon_figures['idle']}", flush=True)
    if args.propagation and s.name == "seaweedfs":
        target = Target(s.endpoint_url, bench.target.bucket, "propagation/")
        daemon_figures["propagation"] = daemon.propagation(client, target, workdir, args.propagation, 2.0)
        print(f"propagation: {daemon_figures['propagation']}", flush=True)
    if args.releases:
        release_tools = [t for t in args.release_tools.split(",") if t and not TOOLS[t].available()]
        # skipped tools are printed by main(); an unknown name fails there before any server starts
        cold, polls = releases.bench_releases(
            s,
            client,
            size_list(args.releases),
            size_list(args.release_cold),
            release_tools,
            args.release_runs or args.runs,
            workdir,
        )
        results += cold
        daemon_figures.setdefault("release_polls", []).extend(polls)
        if args.release_latency:
            figures = releases.latency(s, workdir, args.release_latency, args.release_interval)
            daemon_figures.setdefault("release_latency", []).extend(figures)
            print(f"release latency: {figures}", flush=True)
    return results


def main(argv: list[str]) -> int:
    args = parse(argv)
    tools = [t for t in args.tools.split(",") if t]
    unknown = [t for t in tools + args.release_tools.split(",") if t and t not in TOOLS]
    if unknown:
        raise SystemExit(f"unknown tools: {unknown}; known: {sorted(TOOLS)}")
    skipped = {t: why for t in tools if (why := TOOLS[t].available())}
    tools = [t for t in tools if t not in skipped]
    for tool, why in skipped.items():
        print(f"skipping {tool}: {why}", flush=True)
    started = time.time()
    results: list[dict[str, Any]] = []
    daemon_figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dagmirror-bench-") as tmp:
        workdir = Path(tmp)
        for name, sizes in server_specs(args):
            with contextlib.ExitStack() as stack:
                try:  # only the start: a failure inside the benchmarks below must not read as a skip
                    s = stack.enter_context(server(name, workdir))
                except RuntimeError as exc:
                    if name not in OPTIONAL_SERVERS:
                        raise
                    print(f"skipping server {name}: {exc}", flush=True)
                    skipped[f"server {name}"] = str(exc)
                    continue
                results += bench_server(s, sizes, args, tools, workdir, daemon_figures)
    meta = {
        "command": "python -m benchmarks " + shlex.join(argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "minutes": round((time.time() - started) / 60, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "skipped": skipped,
    }
    doc = {"meta": meta, "results": results, "daemon": daemon_figures}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    body = (
        report.tables(results)
        + report.daemon_tables(daemon_figures)
        + releases.tables(daemon_figures.get("release_polls", []), daemon_figures.get("release_latency", []))
    )
    print(body)
    if args.docs:
        plot = ROOT / "docs" / "img" / "benchmarks.png"
        report.plot(results, plot)
        header = (
            f"Generated by `{meta['command']}` on {meta['started']} "
            f"({meta['minutes']} min; {meta['machine']})."
            "\n\n![benchmarks](img/benchmarks.png)\n"
        )
        report.write_markdown(ROOT / "docs" / "benchmarks.md", header + body)
        (ROOT / "docs" / "benchmarks.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
