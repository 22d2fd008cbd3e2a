"""The scenarios: cold mirror, warm no-op, 1% changed, 10% deleted, for every tool on one corpus, in the
same run, alternating the order of tools between runs. Every run is checked against S3's truth."""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dagmirror.devtools.corpus import create_bucket, delete_keys, synthetic_corpus, upload
from dagmirror.devtools.proxy import S3Proxy

from .harness import Result, Sample, check, digest, run
from .peers import FLOORS, TOOLS, Target, Tool, module

NOOP_PASSES = 10
COLD_ONLY = frozenset({"boto3-loop"})
SLOW = frozenset({"airflow", "boto3-loop"})  # runs capped by --slow-runs on large corpora


@dataclass
class Bench:
    server: str
    endpoint: str
    client: Any
    files: int
    tools: Sequence[str]
    runs: int
    workdir: Path
    seed: int = 7
    slow_runs: int | None = None  # None: every tool gets `runs` runs
    log: Any = print
    truth: dict[str, str] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)

    @property
    def target(self) -> Target:
        return Target(self.endpoint, f"bench-{self.files}", "dags/")

    def setup(self) -> None:
        create_bucket(self.client, self.target.bucket)
        self.bodies = synthetic_corpus(self.files, self.seed)
        self.log(f"[{self.server} {self.files}] uploading {sum(map(len, self.bodies.values())) >> 20} MB")
        upload(self.client, self.target.bucket, self.target.prefix, self.bodies, threads=32)
        self.truth = {k: digest(v) for k, v in self.bodies.items()}

    # -- helpers -------------------------------------------------------------------------------------------
    def _dest(self, tool: str, kind: str) -> Path:
        return self.workdir / f"{self.server}-{self.files}" / tool / kind

    def _set_aside(self, dest: Path) -> None:
        """Move an old mirror out of the way instead of deleting it. On ext4 without a journal (as on these
        machines) creating files soon after deleting many makes the kernel skip every recently freed inode
        (`recently_deleted()`), which would charge the next tool for the previous one's deletes. A cold
        mirror on a fresh pod never pays that, so the old trees are removed only in `cleanup()`."""
        if dest.exists():
            trash = self.workdir / "trash"
            trash.mkdir(exist_ok=True)
            dest.rename(trash / f"{len(list(trash.iterdir()))}-{dest.parent.name}-{dest.name}")

    def cleanup(self) -> None:
        """Delete the trees set aside, then flush and wait past the kernel's 5-second window for clean
        inode blocks, so the next corpus size starts on a filesystem in steady state."""
        shutil.rmtree(self.workdir / "trash", ignore_errors=True)
        shutil.rmtree(self.workdir / f"{self.server}-{self.files}", ignore_errors=True)
        os.sync()
        time.sleep(6)

    def _order(self, r: int, *, cold: bool = False) -> list[str]:
        # The naive boto3 loop re-downloads everything on every run: its warm figures equal its cold one,
        # so it runs in the cold scenario only (it would otherwise dominate the suite's time).
        tools = [t for t in self.tools if t not in FLOORS and (cold or t not in COLD_ONLY)]
        return tools if r % 2 == 0 else tools[::-1]

    def _run(self, tool: Tool, dest: Path, endpoint: str | None = None) -> Sample:
        target = Target(endpoint or self.endpoint, self.target.bucket, self.target.prefix)
        sample = run(tool.command(target, dest), tool.env(target))
        if sample.code != 0:
            self.log(f"  {tool.name} exited {sample.code}: {sample.stderr.strip()[-300:]}")
        return sample

    def _counted(self, tool: Tool, dest: Path) -> dict[str, int]:
        """One extra, untimed run through the counting proxy: requests by operation and status."""
        with S3Proxy(self.endpoint) as proxy:
            self._run(tool, dest, proxy.endpoint_url)
            counts = proxy.counts()
        return {k: v for k, v in sorted(counts.items()) if " " in k}

    def _result(self, scenario: str, tool: str) -> Result:
        result = Result(scenario, self.server, self.files, tool)
        self.results.append(result)
        return result

    def _floors(self, scenario: str, modes: Sequence[str]) -> None:
        for name in modes:
            if name not in self.tools:
                continue
            result = self._result(scenario, name)
            for _ in range(max(self.runs, 3)):
                sample = self._run(TOOLS[name], self.workdir)
                result.samples.append(sample)
                result.per_pass.append(float(orjson.loads(sample.stdout)["seconds"]))

    def _capped(self, name: str, r: int) -> bool:
        return self.slow_runs is not None and name in SLOW and r >= self.slow_runs

    def _round(self, results: dict[str, Result], r: int, kind: str, edits: frozenset[str]) -> None:
        for name in self._order(r, cold=kind == "cold"):
            if self._capped(name, r):
                continue
            dest = self._dest(name, kind)
            if kind == "cold":
                self._set_aside(dest)
            sample = self._run(TOOLS[name], dest)
            results[name].samples.append(sample)
            results[name].checks.append(check(dest, self.truth, edits))
            self.log(f"  {self.server} {self.files} {results[name].scenario} {name}: {sample.seconds:.2f}s")

    # -- scenarios -----------------------------------------------------------------------------------------
    def cold(self) -> None:
        results = {name: self._result("cold", name) for name in self._order(0, cold=True)}
        for r in range(self.runs):
            self._round(results, r, "cold", frozenset())
        for name, result in results.items():
            dest = self._dest(name, "cold")
            if not self._capped(name, self.runs):  # capped tools keep their last timed mirror, uncounted
                self._set_aside(dest)
                result.requests = self._counted(TOOLS[name], dest)
            self._set_aside(self._dest(name, "live"))
            dest.rename(self._dest(name, "live"))
        self._floors("cold", ("floor-list", "floor-get"))

    def noop(self) -> None:
        results = {name: self._result("noop", name) for name in self._order(0)}
        for r in range(NOOP_PASSES):
            for name in self._order(r):
                dest = self._dest(name, "live")
                if name == "dagmirror":
                    if r == 0:  # the daemon's view: one process, ten passes
                        self._inproc(results[name], dest)
                    continue
                if self._capped(name, r):
                    continue
                results[name].samples.append(self._run(TOOLS[name], dest))
        for name, result in results.items():
            result.checks.append(check(self._dest(name, "live"), self.truth))
            if name == "dagmirror":
                # dagmirror-cli: the same no-op as a one-shot process (start-up and imports included)
                cli = self._result("noop", "dagmirror-cli")
                for _ in range(self.runs):
                    cli.samples.append(self._run(TOOLS[name], self._dest(name, "live")))
                cli.requests = self._counted(TOOLS[name], self._dest(name, "live"))
            result.requests = self._counted(TOOLS[name], self._dest(name, "live"))
        self._floors("noop", ("floor-list",))

    def _inproc(self, result: Result, dest: Path) -> None:
        target = self.target
        sample = run(
            module("benchmarks.inproc", target.url, str(dest), str(NOOP_PASSES)),
            TOOLS["dagmirror"].env(target),
        )
        result.samples.append(sample)
        if sample.code == 0:
            result.per_pass += orjson.loads(sample.stdout)["per_pass"]
        else:
            self.log(f"  inproc failed: {sample.stderr[-300:]}")

    def changed(self) -> None:
        results = {name: self._result("changed", name) for name in self._order(0)}
        rng = random.Random(self.seed + 1)
        for r in range(self.runs + 1):
            edits = self._mutate_changed(rng, r)
            if r < self.runs:
                self._round(results, r, "live", edits)
            else:
                for name, result in results.items():
                    result.requests = self._counted(TOOLS[name], self._dest(name, "live"))
                    result.checks.append(check(self._dest(name, "live"), self.truth, edits))

    def deleted(self) -> None:
        results = {name: self._result("deleted", name) for name in self._order(0)}
        rng = random.Random(self.seed + 2)
        for r in range(self.runs + 1):
            gone = rng.sample(sorted(self.bodies), len(self.bodies) // 10)
            delete_keys(self.client, self.target.bucket, [self.target.prefix + k for k in gone])
            for key in gone:
                del self.bodies[key], self.truth[key]
            if r < self.runs:
                self._round(results, r, "live", frozenset())
            else:
                for name, result in results.items():
                    result.requests = self._counted(TOOLS[name], self._dest(name, "live"))
                    result.checks.append(check(self._dest(name, "live"), self.truth))

    def _mutate_changed(self, rng: random.Random, r: int) -> frozenset[str]:
        """1% of files changed (half same-size edits, half growing by a line) and 0.1% new files."""
        keys = rng.sample(sorted(self.bodies), max(2, len(self.bodies) // 100))
        same = frozenset(keys[: len(keys) // 2])
        changes: dict[str, bytes] = {}
        for key in keys:
            body = self.bodies[key]
            if key in same:
                stamp = f"# edit {r:04d}\n".encode()
                changes[key] = stamp + body[len(stamp) :]
            else:
                changes[key] = body + f"# grown in round {r}\n".encode()
        for i in range(max(1, len(self.bodies) // 1000)):
            changes[f"new/round{r:02d}/dag_{i:05d}.py"] = f"new_dag_{r}_{i} = 1\n".encode() * 40
        upload(self.client, self.target.bucket, self.target.prefix, changes, threads=16)
        self.bodies |= changes
        self.truth |= {k: digest(v) for k, v in changes.items()}
        return same
