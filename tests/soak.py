"""The long reliability suites, and the figures table of docs/reliability.md.

    .venv/bin/python -m tests.soak                       # 1,000 chaos passes, 200 kill -9 trials, 100k keys
    .venv/bin/python -m tests.soak --passes 50 --crash-trials 5 --scale-keys 10000   # a quick look
    .venv/bin/python -m tests.soak --only chaos,crash    # some suites only
    .venv/bin/python -m tests.soak --only switch --switches 200   # release switches (tests/soak_switch.py)

Each suite is a function the short pytest versions call with small sizes (tests/test_reliability_*.py), so
the figures published and the checks CI runs come from the same code. Everything is seeded; servers run on
127.0.0.1 and are stopped by pid. Results: a markdown table on stdout, and FIGURES.md + figures.json in
--out (default: reliability-figures/).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dagmirror import Mirror, MirrorConfig, PassFailed
from dagmirror.devtools.proxy import ChaosRule, Fault, ProxyRequest, S3Proxy, default_menu
from dagmirror.devtools.servers import moto_server, s3_env
from dagmirror.models import SyncReport
from dagmirror.retry import RetryPolicy

from .faults import Bucket, Reader, foreign_files, leftover_temps, state_problems
from .helpers import read_tree, sdk_credentials
from .soak_switch import switch_soak

PREFIX = "dags/prod/"


# -- chaos soak ---------------------------------------------------------------------------------------------
@dataclass
class ChaosFigures:
    passes: int = 0
    ok: int = 0
    partial: int = 0  # some objects failed after retries; reported, the rest applied
    aborted: int = 0  # the listing failed: PassFailed, nothing deleted
    guarded: int = 0
    s3_changes: int = 0
    requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    reads: int = 0
    torn_seen: int = 0
    corrupted_installs: int = 0
    wrong_deletions: int = 0
    deletions: int = 0
    downloads: int = 0
    retries: int = 0
    passes_to_converge: int = -1
    state_consistent: bool = False
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)


class _Storms:
    """Wraps a ChaosRule: on a 'storm' pass every LIST page after the first fails, so the listing breaks in
    the middle of its pagination however many retries it gets."""

    def __init__(self, chaos: ChaosRule) -> None:
        self.chaos = chaos
        self.storm = False

    def __call__(self, request: ProxyRequest) -> Fault | None:
        if self.storm and request.op == "LIST" and request.continued:
            return Fault(status=500, code="InternalError")
        return self.chaos(request)


def chaos_soak(
    endpoint: str, workdir: Path, *, passes: int, seed: int = 1, files: int = 60, rate: float = 0.15
) -> ChaosFigures:
    """`passes` passes of one long-lived Mirror (as the daemon runs it) through the fault proxy, while a
    thread keeps changing S3 and another reads every visible file; then faults stop and it must converge."""
    rng = random.Random(seed)
    bucket = Bucket(endpoint, f"chaos-{seed}-{os.getpid()}", PREFIX, rng)
    bucket.seed(files)
    dest = workdir / "chaos-dest"
    figures = ChaosFigures()
    started = time.monotonic()
    chaos = ChaosRule(seed, rate=rate, menu=default_menu(spike=0.15))
    storms = _Storms(chaos)
    with (
        S3Proxy(endpoint, list_page_size=5) as proxy,
        sdk_credentials(),
        Reader(dest, bucket.history) as reader,
    ):
        proxy.set_fault(storms)
        changer = _Changer(bucket, seed)
        with changer:
            asyncio.run(_chaos_passes(proxy, bucket, dest, storms, rng, passes, figures))
        chaos.on = False
        storms.storm = False
        figures.passes_to_converge = asyncio.run(_converge(proxy, bucket, dest))
        figures.requests = sum(v for k, v in proxy.counts().items() if " " not in k)
        figures.faults = dict(sorted(proxy.injected().items()))
        figures.s3_changes = changer.changes
    figures.reads, figures.torn_seen = reader.reads, len(reader.torn)
    figures.examples += [f"torn: {p}" for p in reader.torn[:5]]
    figures.state_consistent = not state_problems(dest) and not leftover_temps(dest)
    figures.seconds = round(time.monotonic() - started, 1)
    return figures


class _Changer:
    """Changes S3 (add, rewrite, delete) every few tens of milliseconds while passes run."""

    def __init__(self, bucket: Bucket, seed: int) -> None:
        self.bucket = bucket
        self.rng = random.Random(seed + 1)
        self.changes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="changer", daemon=True)

    def __enter__(self) -> _Changer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self.rng.uniform(0.01, 0.15)):
            self.bucket.mutate()
            self.changes += 1


def _chaos_config(proxy: S3Proxy, dest: Path, bucket: Bucket) -> MirrorConfig:
    return MirrorConfig.create(
        f"s3://{bucket.name}/{PREFIX}",
        dest,
        endpoint_url=proxy.endpoint_url,
        concurrency=8,
        list_concurrency=4,
        fsync=False,  # atomicity for readers comes from rename, not fsync; spare the shared disk
        connect_timeout=2.0,
        read_timeout=2.0,
        retry=RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.1),
    )


async def _chaos_passes(
    proxy: S3Proxy,
    bucket: Bucket,
    dest: Path,
    storms: _Storms,
    rng: random.Random,
    passes: int,
    figures: ChaosFigures,
) -> None:
    cfg = _chaos_config(proxy, dest, bucket)
    mirror = Mirror(cfg)
    try:
        for n in range(passes):
            if n and n % 100 == 0:  # a restart now and then: state and journal are read back from disk
                await mirror.aclose()
                mirror = Mirror(cfg)
            storms.storm = rng.random() < 0.05
            await _one_chaos_pass(mirror, bucket, dest, figures)
    finally:
        await mirror.aclose()


async def _one_chaos_pass(mirror: Mirror, bucket: Bucket, dest: Path, figures: ChaosFigures) -> None:
    history = bucket.history
    start_seq, live_at_start = history.mark()
    before = set(read_tree(dest))
    report: SyncReport | None = None
    try:
        report = await mirror.sync_once()
    except PassFailed:
        figures.aborted += 1
    end_seq, _ = history.mark()
    figures.passes += 1
    gone = before - set(read_tree(dest))
    deleted_in_s3 = history.deleted_between(start_seq, end_seq)
    wrong = sorted(p for p in gone if p in live_at_start and p not in deleted_in_s3)
    figures.wrong_deletions += len(wrong)
    figures.examples += [f"wrong deletion: {p}" for p in wrong[:3]]
    if report is not None:
        figures.deletions += report.deleted
        figures.downloads += report.downloaded
        figures.retries += report.retries
        if report.guard:
            figures.guarded += 1
        elif report.failed:
            figures.partial += 1
        else:
            figures.ok += 1
    foreign = foreign_files(dest, history)
    figures.corrupted_installs += len(foreign)
    figures.examples += [f"corrupted install: {p}" for p in foreign[:3]]


async def _converge(proxy: S3Proxy, bucket: Bucket, dest: Path, limit: int = 10) -> int:
    """Passes after faults and changes stop until DEST equals S3 exactly; -1 if `limit` passes cannot."""
    cfg = _chaos_config(proxy, dest, bucket)
    async with Mirror(cfg) as mirror:
        for n in range(1, limit + 1):
            with contextlib.suppress(PassFailed):
                report = await mirror.sync_once()
                if not report.failed and read_tree(dest) == bucket.history.snapshot():
                    return n
    return -1


# -- kill -9 at random moments ------------------------------------------------------------------------------
@dataclass
class CrashFigures:
    trials: int = 0
    killed_before_any_change: int = 0
    killed_mid_pass: int = 0  # some files of the pass installed or deleted, not all
    killed_after_the_pass: int = 0
    torn_after_kill: int = 0
    unreadable_state_after_kill: int = 0
    restart_exit_codes: dict[str, int] = field(default_factory=dict)
    leftover_temps_after_restart: int = 0
    inconsistent_states: int = 0
    not_converged: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)


def crash_trials(
    endpoint: str, workdir: Path, *, trials: int, seed: int = 2, files: int = 80
) -> CrashFigures:
    """Each trial changes S3, starts `dagmirror sync`, SIGKILLs it at a random moment, checks DEST, then
    restarts it to completion and checks that DEST equals S3, temps are gone and the state matches."""
    rng = random.Random(seed)
    bucket = Bucket(endpoint, f"crash-{seed}-{os.getpid()}", PREFIX, rng)
    for i in range(files):
        rel = f"team{i % 5}/dag_{i:04d}.py"
        bucket.put(rel, bucket.body(rel, 5_000, 60_000), multipart=i % 9 == 0)
    dest = workdir / "crash-dest"
    figures = CrashFigures()
    started = time.monotonic()
    codes: Counter[str] = Counter()
    with S3Proxy(endpoint) as proxy:
        proxy.set_fault(lambda r: Fault(delay=0.05) if r.op == "GET" else None)  # widen the window
        cmd = [sys.executable, "-m", "dagmirror", "sync", f"s3://{bucket.name}/{PREFIX}", str(dest)]
        cmd += ["--endpoint-url", proxy.endpoint_url, "--concurrency", "2", "--json"]
        env = s3_env(proxy.endpoint_url)
        _timed_run(cmd, env)  # the cold pass
        window = 0.0
        for n in range(trials + 1):
            for _ in range(rng.randint(15, 40)):
                bucket.mutate(low=files - 10, high=files + 10)
            if n == 0:  # calibration: how long a trial's pass takes, start-up included
                window = _timed_run(cmd, env)
                continue
            _crash_trial(cmd, env, dest, bucket, rng.uniform(0.0, window), figures, codes)
    figures.restart_exit_codes = dict(codes)
    figures.seconds = round(time.monotonic() - started, 1)
    return figures


def _timed_run(cmd: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(cmd, env=env, capture_output=True, check=True, timeout=120)
    return time.monotonic() - started


def _crash_trial(
    cmd: list[str],
    env: dict[str, str],
    dest: Path,
    bucket: Bucket,
    kill_after: float,
    figures: CrashFigures,
    codes: Counter[str],
) -> None:
    history = bucket.history
    before, target = read_tree(dest), history.snapshot()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        child.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    figures.trials += 1
    after = read_tree(dest)
    torn = [p for p, body in after.items() if not history.known(p, body)]
    figures.torn_after_kill += len(torn)
    figures.examples += [f"torn after kill: {p}" for p in torn[:3]]
    if after == target:
        figures.killed_after_the_pass += 1
    elif after == before:
        figures.killed_before_any_change += 1
    else:
        figures.killed_mid_pass += 1
    state = dest / ".dagmirror" / "state.json"
    try:
        if state.exists():
            orjson.loads(state.read_bytes())
    except orjson.JSONDecodeError:
        figures.unreadable_state_after_kill += 1
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=120)
    codes[str(run.returncode)] += 1
    if run.returncode != 0:
        figures.examples.append(f"restart exited {run.returncode}: {run.stderr.strip()[-300:]}")
    stray = leftover_temps(dest)
    figures.leftover_temps_after_restart += len(stray)
    figures.examples += [f"leftover after restart: {p}" for p in stray[:3]]
    problems = state_problems(dest) if state.exists() else ["no state file"]
    figures.inconsistent_states += bool(problems)
    figures.examples += problems[:3]
    if read_tree(dest) != target:
        figures.not_converged += 1


# -- 100k keys: listing and a no-op pass within the memory target ---------------------------------------
@dataclass
class ScaleFigures:
    keys: int = 0
    source_rss_mb: float = 0.0  # the process with the in-memory source built, before any pass
    cold_seconds: float = 0.0
    cold_peak_rss_mb: float = 0.0
    listing_seconds: float = 0.0
    listing_peak_rss_mb: float = 0.0
    noop_seconds: float = 0.0
    noop_peak_rss_mb: float = 0.0
    noop_downloads: int = -1
    noop_requests: dict[str, int] = field(default_factory=dict)


def scale(keys: int, workdir: Path) -> ScaleFigures:
    """A cold pass, then in fresh processes a listing-only pass (dry run) and a no-op pass, each measured
    for peak RSS (ru_maxrss of that process alone)."""
    dest = workdir / "scale-dest"
    figures = ScaleFigures(keys=keys)
    cold = _scale_child(keys, dest, "cold")
    listing = _scale_child(keys, dest, "listing")
    noop = _scale_child(keys, dest, "noop")
    figures.source_rss_mb = noop["source_rss_mb"]
    figures.cold_seconds, figures.cold_peak_rss_mb = cold["seconds"], cold["peak_rss_mb"]
    figures.listing_seconds, figures.listing_peak_rss_mb = listing["seconds"], listing["peak_rss_mb"]
    figures.noop_seconds, figures.noop_peak_rss_mb = noop["seconds"], noop["peak_rss_mb"]
    figures.noop_downloads, figures.noop_requests = noop["downloaded"], noop["requests"]
    return figures


def _scale_child(keys: int, dest: Path, phase: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tests.soak", "--scale-child", phase, "--scale-keys", str(keys)]
    cmd += ["--out", str(dest)]
    run = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800, cwd=_repo())
    return dict(orjson.loads(run.stdout.strip().splitlines()[-1]))


def _scale_phase(keys: int, dest: Path, phase: str) -> dict[str, Any]:
    """Runs inside the child: an in-memory source with `keys` small objects in ~35-file folders."""
    from dagmirror.source.memory import MemorySource

    objects = {
        f"dags/team{i // 350:03d}/sub{i // 35 % 10:02d}/dag_{i:06d}.py": b"# dag %06d\n" % i
        for i in range(keys)
    }
    source = MemorySource(objects)
    del objects
    source_rss = _rss_mb()
    # mode objects: the listing's memory and requests (auto would add one pointer GET per pass)
    cfg = MirrorConfig.create("s3://bkt/dags", dest, fsync=False, dry_run=phase == "listing", mode="objects")
    started = time.monotonic()
    report = asyncio.run(_scale_pass(cfg, source))
    return {
        "phase": phase,
        "seconds": round(time.monotonic() - started, 2),
        "peak_rss_mb": _rss_mb(),
        "source_rss_mb": source_rss,
        "downloaded": report.downloaded,
        "listed": report.listed,
        "requests": report.requests,
    }


async def _scale_pass(cfg: MirrorConfig, source: Any) -> SyncReport:
    async with Mirror(cfg, source=source) as mirror:
        return await mirror.sync_once()


def _rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child forked from a large
    parent (pytest) would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _repo() -> Path:
    return Path(__file__).resolve().parent.parent


# -- the figures table --------------------------------------------------------------------------------------
def markdown(results: dict[str, Any], command: str) -> str:
    lines = [f"Produced by `{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores).", ""]
    lines += ["| suite | figure | value |", "|---|---|---|"]
    for suite, figures in results.items():
        for name, value in figures.items():
            if name == "examples":
                continue
            shown = ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else value
            lines.append(f"| {suite} | {name.replace('_', ' ')} | {shown} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=1000, help="chaos soak passes [1000]")
    parser.add_argument("--crash-trials", type=int, default=200, help="kill -9 trials [200]")
    parser.add_argument("--scale-keys", type=int, default=100_000, help="keys for the scale suite [100000]")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--switches", type=int, default=200, help="releases in the switch soak [200]")
    parser.add_argument("--only", default="chaos,crash,switch,scale", help="comma-separated suites to run")
    parser.add_argument("--out", type=Path, default=Path("reliability-figures"))
    parser.add_argument("--scale-child", choices=["cold", "listing", "noop"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scale_child:
        print(orjson.dumps(_scale_phase(args.scale_keys, args.out, args.scale_child)).decode())
        return 0
    suites = set(args.only.split(","))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dagmirror-soak-") as tmp:
        work = Path(tmp)
        if suites & {"chaos", "crash", "switch"}:
            with moto_server() as server:
                if "chaos" in suites:
                    results["chaos soak"] = chaos_soak(
                        server.endpoint_url, work, passes=args.passes, seed=args.seed
                    ).__dict__
                    _progress(results)
                if "crash" in suites:
                    results["kill -9"] = crash_trials(
                        server.endpoint_url, work, trials=args.crash_trials, seed=args.seed + 1
                    ).__dict__
                    _progress(results)
                if "switch" in suites:  # symlink must see no mixed read; files shows the check can fail
                    for switch in ("symlink", "files"):
                        results[f"switch {switch}"] = switch_soak(
                            server.endpoint_url, work, switches=args.switches, switch=switch, seed=args.seed
                        ).__dict__
                        _progress(results)
        if "scale" in suites:
            results["scale"] = scale(args.scale_keys, work).__dict__
    command = "python -m tests.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown(results, command.strip())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "FIGURES.md").write_text(table)
    (args.out / "figures.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(table)
    return 0 if _all_clear(results) else 1


def _progress(results: dict[str, Any]) -> None:
    name, figures = list(results.items())[-1]
    print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items() if k != "examples"), flush=True)
    for example in figures.get("examples", [])[:10]:
        print(f"  {example}", flush=True)


def _all_clear(results: dict[str, Any]) -> bool:
    chaos = results.get("chaos soak", {})
    crash = results.get("kill -9", {})
    scale_ = results.get("scale", {})
    switch = results.get("switch symlink", {})
    bad = [
        chaos.get("torn_seen", 0),
        chaos.get("corrupted_installs", 0),
        chaos.get("wrong_deletions", 0),
        crash.get("torn_after_kill", 0),
        crash.get("leftover_temps_after_restart", 0),
        crash.get("inconsistent_states", 0),
        crash.get("not_converged", 0),
        chaos and chaos.get("passes_to_converge", -1) < 0,
        scale_ and scale_.get("noop_peak_rss_mb", 0) > 150,
        switch.get("mixed_reads", 0),
        switch.get("vanished_reads", 0),
        switch and not switch.get("converged"),
        switch and switch.get("switches") != switch.get("releases"),
    ]
    return not any(bad)


if __name__ == "__main__":
    sys.exit(main())
