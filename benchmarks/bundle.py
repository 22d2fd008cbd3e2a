"""Airflow 3 DAG bundles side by side on one S3 server: DagmirrorBundle against the amazon provider's
S3DagBundle, cold `initialize()` on a fresh worker and a no-op `refresh()`: time and requests.

    python -m benchmarks.bundle [--files 400 10000] [--server seaweedfs|moto] [--runs 3]

For each size, one environment is published as a release (bodies, manifest, archive, pointer) with its plain
files beside it, as `dagmirror deploy` leaves it, so both bundles read the same bucket. Every run starts on an
empty storage folder (a fresh worker), in its own process (tools' imports are not timed: the driver times the
calls). Tools:

    s3                S3DagBundle: initialize() (HEAD bucket, LIST, then a GET per file), refresh()
    dagmirror         DagmirrorBundle unpinned (the dag-processor): initialize(), then refresh()
    dagmirror-pinned  DagmirrorBundle(version=<release id>) (a task's worker): initialize()

Times are medians of --runs (S3DagBundle over 1,000 files: --slow-runs); requests come from one more run of
each through a counting proxy (dagmirror.devtools.proxy), so the proxy never slows a timed run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.deploy_latency import server
from dagmirror.devtools.corpus import create_bucket, synthetic_corpus, upload
from dagmirror.devtools.proxy import S3Proxy
from dagmirror.devtools.servers import s3_client, s3_env
from tests.airflow_env import bundle_python
from tests.releases import publish_to

from .peers import Target, _airflow_env, airflow_python

DRIVER = Path(__file__).with_name("bundle_driver.py")
TOOLS = ("s3", "dagmirror", "dagmirror-pinned")


def publish_environment(client: Any, bucket: str, prefix: str, files: dict[str, bytes]) -> str:
    """The release (its objects uploaded in parallel, the pointer last) and the plain files; its id."""
    writes: list[tuple[str, bytes]] = []
    release = publish_to(lambda key, body: writes.append((key, body)), prefix, files)
    *objects, pointer = writes

    def put(item: tuple[str, bytes]) -> None:
        client.put_object(Bucket=bucket, Key=item[0], Body=item[1])

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, objects))
    put(pointer)
    upload(client, bucket, prefix, files)
    return release


def run_tool(
    tool: str, target: Target, storage: Path, release: str, proxy: S3Proxy | None = None
) -> dict[str, Any]:
    """One run of `tool` on an empty `storage`, in the venv that has it. With `proxy` (which `target` must
    point at), also the requests of initialize() and of refresh()."""
    if tool == "s3":
        python, env = airflow_python(), s3_env(target.endpoint) | _airflow_env(target)
    else:
        python, env = bundle_python(), s3_env(target.endpoint)
    kind = "s3" if tool == "s3" else "dagmirror"
    args = [str(python), str(DRIVER), kind, str(storage), target.bucket, target.prefix, target.endpoint]
    if tool == "dagmirror-pinned":
        args.append(release)
    if proxy is not None:
        proxy.reset()
    with subprocess.Popen(
        args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("@@INITIALIZED"):
                break
        initialize = proxy.counts() if proxy is not None else {}
        if proxy is not None:
            proxy.reset()
        out, err = proc.communicate("go\n", timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed: {err[-2000:]}")
    result = dict(json.loads(out.strip().splitlines()[-1]))
    if proxy is not None:
        result["initialize_requests"] = initialize
        result["refresh_requests"] = proxy.counts() if result["refresh"] is not None else None
    return result


def measure(
    tool: str, target: Target, proxy: S3Proxy, release: str, runs: int, workdir: Path
) -> dict[str, Any]:
    """Median times over `runs` fresh workers, then one counted run through the proxy."""
    timed = [run_tool(tool, target, workdir / f"{tool}-{uuid.uuid4().hex[:8]}", release) for _ in range(runs)]
    counted_target = Target(proxy.endpoint_url, target.bucket, target.prefix)
    counted = run_tool(tool, counted_target, workdir / f"{tool}-counted", release, proxy)
    result: dict[str, Any] = {
        "tool": tool,
        "files": counted["files"],
        "runs": runs,
        "initialize_s": round(statistics.median(r["initialize"] for r in timed), 3),
        "initialize_requests": requests(counted["initialize_requests"]),
        "initialize_by_kind": counted["initialize_requests"],
    }
    if counted["refresh"] is not None:
        result["refresh_s"] = round(statistics.median(r["refresh"] for r in timed), 3)
        result["refresh_requests"] = requests(counted["refresh_requests"])
        result["refresh_by_kind"] = counted["refresh_requests"]
    return result


def requests(counts: dict[str, int]) -> int:
    """Requests in a proxy count: it counts each as its operation ('GET') and again with its outcome."""
    return sum(n for key, n in counts.items() if " " not in key)


def ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    by_tool = {r["tool"]: r for r in results}
    s3 = by_tool.get("s3")
    out: dict[str, float] = {}
    if s3 is None:
        return out
    for tool in ("dagmirror", "dagmirror-pinned"):
        if tool in by_tool:
            out[f"{tool} cold / s3 cold"] = round(by_tool[tool]["initialize_s"] / s3["initialize_s"], 3)
    if "dagmirror" in by_tool:
        out["dagmirror no-op / s3 no-op"] = round(by_tool["dagmirror"]["refresh_s"] / s3["refresh_s"], 3)
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bundle", description=__doc__)
    ap.add_argument("--files", type=int, nargs="+", default=[400, 10_000])
    ap.add_argument("--server", choices=("seaweedfs", "moto"), default="seaweedfs")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--slow-runs", type=int, default=1, help="runs of S3DagBundle over 1,000 files")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    report: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="dagmirror-bundle-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        s = stack.enter_context(server(args.server, workdir / "seaweedfs"))
        proxy = stack.enter_context(S3Proxy(s.endpoint_url))
        client = s3_client(s.endpoint_url)
        for files in args.files:
            bucket, prefix = f"bundle-{uuid.uuid4().hex[:8]}", "dags/prod/"
            create_bucket(client, bucket)
            release = publish_environment(client, bucket, prefix, synthetic_corpus(files))
            target = Target(s.endpoint_url, bucket, prefix)
            results = []
            for tool in tools:
                runs = args.slow_runs if tool == "s3" and files > 1000 else args.runs
                results.append(measure(tool, target, proxy, release, runs, workdir))
                print(json.dumps({"server": s.name, **results[-1]}), flush=True)
            entry = {"server": s.name, "files": files, "results": results, "ratios": ratios(results)}
            print(json.dumps({"files": files, "ratios": entry["ratios"]}), flush=True)
            report.append(entry)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
