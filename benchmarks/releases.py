"""Release mode, in the same run as its peers: requests per no-op poll, a cold release mirror against the
peers copying the plain files, and deploy-to-visible latency (release mode vs objects mode).

Every release is published by the real CLI (`dagmirror deploy DIR --env production --root DIR`), so the
benchmark reads the format a deploy writes (bodies, manifest, archive, pointer, then the plain files under
`dags/production/`, which the peers copy). See docs/benchmarks.md, "Releases".
"""

from __future__ import annotations

import random
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dagmirror.devtools.corpus import create_bucket, synthetic_corpus
from dagmirror.devtools.proxy import S3Proxy
from dagmirror.devtools.servers import S3Server
from tests.helpers import write_tree

from . import deploy_latency
from .harness import Result, Sample, digest, run
from .peers import TOOLS, Target, Tool, module
from .scenarios import Bench

ENV = "production"
NOOP_POLLS = 10
RELEASE_TOOLS = ["dagmirror", "dagmirror-objects", "s5cmd", "rclone-tuned", "floor-get"]
# Here "dagmirror" is forced into release mode (auto would pick it anyway: the prefix has a pointer).
DAGMIRROR_RELEASES = Tool(
    "dagmirror", lambda t, d: module("dagmirror", "sync", t.url, str(d), "--mode", "releases", "--json")
)


def deploy_command(target: Target, src: Path) -> list[str]:
    """The deploy a user runs: the whole folder, mapped to the environment's root (64 requests at a time,
    the mirror's default, instead of the deploy's 16: this is the corpus's setup, not a measured figure)."""
    bucket_url = f"s3://{target.bucket}/dags/"
    return module(
        "dagmirror", "deploy", str(src), "--env", ENV, "--root", str(src), "--bucket-url", bucket_url,
        "--concurrency", "64",
    )  # fmt: skip


def requests_per_poll(counts: dict[str, int], polls: int) -> float:
    """Requests of `polls` no-op passes, as counted by the proxy (keys "OP STATUS"), per pass."""
    total = sum(v for k, v in counts.items() if " " in k)
    return total / polls if polls else float("nan")


@dataclass
class ReleaseBench(Bench):
    """One corpus published as a release; the cold scenario of Bench reused with release-mode dagmirror."""

    deploy: list[Sample] = field(default_factory=list)

    @property
    def target(self) -> Target:
        return Target(self.endpoint, f"releases-{self.files}", f"dags/{ENV}/")

    def setup(self) -> None:
        create_bucket(self.client, self.target.bucket)
        self.bodies = synthetic_corpus(self.files, self.seed)
        src = self.workdir / "src"
        shutil.rmtree(src, ignore_errors=True)
        write_tree(src, self.bodies)
        self.log(f"[{self.server} {self.files}] dagmirror deploy of {self.files} files (one release)")
        sample = run(deploy_command(self.target, src), TOOLS["dagmirror"].env(self.target))
        if sample.code != 0:
            raise RuntimeError(f"dagmirror deploy failed ({sample.code}): {sample.stderr.strip()[-500:]}")
        self.deploy.append(sample)
        self.truth = {k: digest(v) for k, v in self.bodies.items()}

    def _result(self, scenario: str, tool: str) -> Result:
        return super()._result(f"release-{scenario}", tool)

    def _run(self, tool: Tool, dest: Path, endpoint: str | None = None) -> Sample:
        return super()._run(DAGMIRROR_RELEASES if tool.name == "dagmirror" else tool, dest, endpoint)

    def poll(self) -> dict[str, Any]:
        """`NOOP_POLLS` release-mode passes in one process (the daemon's view) on a warm DEST, through the
        counting proxy; a cold release-mode pass first makes DEST warm (uncounted)."""
        dest = self.workdir / "poll"
        shutil.rmtree(dest, ignore_errors=True)
        cold = self._run(TOOLS["dagmirror"], dest)
        if cold.code != 0:
            raise RuntimeError(f"cold release pass failed: {cold.stderr.strip()[-500:]}")
        with S3Proxy(self.endpoint) as proxy:
            target = Target(proxy.endpoint_url, self.target.bucket, self.target.prefix)
            cmd = module("benchmarks.inproc", target.url, str(dest), str(NOOP_POLLS), "releases")
            sample = run(cmd, TOOLS["dagmirror"].env(target))
            counts = {k: v for k, v in sorted(proxy.counts().items()) if " " in k}
        if sample.code != 0:
            raise RuntimeError(f"no-op release passes failed: {sample.stderr.strip()[-500:]}")
        per_pass = orjson.loads(sample.stdout)["per_pass"]
        return {
            "server": self.server,
            "files": self.files,
            "polls": NOOP_POLLS,
            "requests": counts,
            "requests_per_poll": requests_per_poll(counts, NOOP_POLLS),
            "median_pass_s": round(statistics.median(per_pass), 4),
            "deploy_s": round(self.deploy[0].seconds, 2) if self.deploy else None,
            "deploy_cpu_s": round(self.deploy[0].cpu_s, 2) if self.deploy else None,
        }

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        super().cleanup()


def bench_releases(
    s: S3Server,
    client: Any,
    sizes: list[int],
    cold_sizes: list[int],
    tools: list[str],
    runs: int,
    workdir: Path,
    log: Callable[..., None] = print,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per size: publish, count a no-op poll, and (at `cold_sizes`) the cold comparison. Returns the cold
    results (as Result dicts, scenario "release-cold") and the poll figures."""
    results: list[dict[str, Any]] = []
    polls: list[dict[str, Any]] = []
    for files in sorted(set(sizes) | set(cold_sizes)):
        where = workdir / f"releases-{s.name}-{files}"
        bench = ReleaseBench(s.name, s.endpoint_url, client, files, tools, runs, where, log=log)
        bench.workdir.mkdir(parents=True, exist_ok=True)
        bench.setup()
        if files in cold_sizes:
            bench.cold()
            results += [r.as_dict() for r in bench.results]
        if files in sizes:
            polls.append(bench.poll())
            log(f"release poll: {polls[-1]}", flush=True)
        bench.cleanup()
    return results, polls


def latency(s: S3Server, workdir: Path, rounds: int, interval: float, seed: int = 1) -> list[dict[str, Any]]:
    """deploy -> visible of a one-file change, the daemon in release mode, then in objects mode (same
    server, same deploys: the deploy publishes a release and then writes the plain file)."""
    figures: list[dict[str, Any]] = []
    for mode in ("releases", "objects"):
        where = workdir / f"latency-{mode}"
        where.mkdir(parents=True, exist_ok=True)
        samples = deploy_latency.measure(
            s, where, rounds, interval, random.Random(seed), mode=mode, bucket=f"latency-{mode}"
        )
        figures.append(
            {"server": s.name, "mode": mode, "interval_s": interval, "rounds": len(samples)}
            | deploy_latency.summarise(samples)
        )
        shutil.rmtree(where, ignore_errors=True)
    return figures


def tables(polls: list[dict[str, Any]], latencies: list[dict[str, Any]]) -> str:
    out: list[str] = []
    if polls:
        out += [
            "\n#### Releases: requests per no-op poll (release mode, 10 passes in one process)\n",
            "| server | files | requests per poll | requests (10 passes) | median pass s "
            "| deploy of the corpus s |",
            "|---|---:|---:|---|---:|---:|",
        ]
        for p in polls:
            counts = ", ".join(f"{k} {v}" for k, v in p["requests"].items()) or "-"
            out.append(
                f"| {p['server']} | {p['files']:,} | {p['requests_per_poll']:g} | {counts} | "
                f"{p['median_pass_s']:.4f} | {p['deploy_s']} |"
            )
    if latencies:
        out += [
            "\n#### Releases: deploy to visible, one changed file (`dagmirror run`)\n",
            "| server | daemon mode | interval s | rounds | from deploy start p50 / p99 / max s | "
            "from deploy exit p50 / p99 / max s | deploy itself p50 s |",
            "|---|---|---:|---:|---|---|---:|",
        ]
        for f in latencies:
            start, exit_, dep = f["from_start"], f["from_exit"], f["deploy"]
            out.append(
                f"| {f['server']} | {f['mode']} | {f['interval_s']:g} | {f['rounds']} | "
                f"{start['p50']:.3f} / {start['p99']:.3f} / {start['max']:.3f} | "
                f"{exit_['p50']:.3f} / {exit_['p99']:.3f} / {exit_['max']:.3f} | {dep['p50']:.3f} |"
            )
    return "\n".join(out) + "\n" if out else ""
