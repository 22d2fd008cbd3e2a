"""Before/after for an engine change: cold passes (and one-shot no-op passes) of dagmirror at two or more git
revisions, alternating, on one SeaweedFS corpus, each cold pass into a folder never used before. Prints the
median of each revision and its ratio to the first. Every mirror is checked against S3 afterwards.

  python -m benchmarks.ab 5027dfb abafec3 HEAD --files 10000 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from dagmirror.devtools.servers import s3_env, seaweedfs_server

from .getcost import seed
from .harness import Sample, check, digest, run

ROOT = Path(__file__).resolve().parents[1]


def checkout(rev: str, into: Path) -> Path:
    """A detached worktree of `rev` (removed again by `release`)."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(into), rev], check=True)
    return into


def release(worktree: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__)
    ap.add_argument("revs", nargs="+", help="git revisions; the first is the baseline")
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dagmirror-ab-") as tmp:
        work = Path(tmp)
        trees = {rev: checkout(rev, work / f"rev{i}") for i, rev in enumerate(args.revs)}
        try:
            with seaweedfs_server(work / "seaweedfs") as server:
                bodies = seed(server.endpoint_url, "ab-bench", args.files)
                truth = {k: digest(v) for k, v in bodies.items()}
                samples = _alternate(trees, args.runs, server.endpoint_url, work, truth)
        finally:
            for tree in trees.values():
                release(tree)
    _print(args.revs, samples)
    return 0


def _alternate(
    trees: dict[str, Path], runs: int, endpoint: str, work: Path, truth: dict[str, str]
) -> dict[tuple[str, str], list[Sample]]:
    samples: dict[tuple[str, str], list[Sample]] = {}
    for tree in trees.values():
        _check_imports(tree, endpoint)
    for r in range(runs):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]
        for rev in order:
            env = s3_env(endpoint) | {"PYTHONPATH": str(trees[rev])}  # that revision's package first
            dest = work / "dest" / f"{r}-{rev}"
            # -P: no current directory on sys.path, which would put this checkout's package first
            cmd = [
                sys.executable,
                "-P",
                "-m",
                "dagmirror",
                "sync",
                "s3://ab-bench/dags/",
                str(dest),
                "--json",
            ]
            for kind in ("cold", "noop"):
                sample = run(cmd, env)
                if sample.code != 0 or not check(dest, truth).correct:
                    raise SystemExit(f"{rev} {kind}: exit {sample.code}, {sample.stderr.strip()[-300:]}")
                samples.setdefault((rev, kind), []).append(sample)
                print(f"{rev} {kind}: {sample.seconds:.2f}s, CPU {sample.cpu_s:.2f}s", flush=True)
    return samples


def _check_imports(tree: Path, endpoint: str) -> None:
    env = s3_env(endpoint) | {"PYTHONPATH": str(tree)}
    code = "import dagmirror; print(dagmirror.__file__)"
    found = subprocess.run(
        [sys.executable, "-P", "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if not found.stdout.startswith(str(tree)):
        raise SystemExit(f"{tree} would not be imported (got {found.stdout.strip() or found.stderr[-300:]})")


def _print(revs: list[str], samples: dict[tuple[str, str], list[Sample]]) -> None:
    print("| revision | pass | median s | vs first | median CPU s |\n|---|---|---:|---:|---:|")
    for kind in ("cold", "noop"):
        base = statistics.median(s.seconds for s in samples[(revs[0], kind)])
        for rev in revs:
            wall = statistics.median(s.seconds for s in samples[(rev, kind)])
            cpu = statistics.median(s.cpu_s for s in samples[(rev, kind)])
            print(f"| {rev} | {kind} | {wall:.2f} | {wall / base:.2f}x | {cpu:.2f} |")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
