"""Deploy -> visible: how long after `dagmirror deploy` a changed DAG file is in a mirrored folder.

A real S3 server on loopback (moto server by default, or SeaweedFS), a real `dagmirror run` daemon polling
every `--interval` seconds (2 s, default jitter), and `--rounds` deploys of a changed file with the real CLI.
Each round waits a random fraction of the interval first, so deploys land at every phase of the daemon's
cycle, then measures from the start of `dagmirror deploy` (and from its exit) until DEST holds the new
bytes. Prints p50/p99/max of each, and with --json one JSON object on the last line.

`--mode` is the daemon's (`dagmirror run --mode`): auto (default; it follows the releases the deploys
publish), releases, or objects (it lists the plain files, which each deploy writes after the pointer). One
untimed deploy publishes the first release before the daemon starts.

    .venv/bin/python benchmarks/deploy_latency.py [--rounds 50] [--interval 2] [--server moto|seaweedfs]
        [--mode auto|releases|objects]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson

from dagmirror.devtools.corpus import create_bucket, sample_dags, upload
from dagmirror.devtools.servers import S3Server, free_port, moto_server, s3_client, s3_env, seaweedfs_server

BUCKET = "deploy-latency"
PROBE = "bench/latency_probe.py"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--server", choices=("moto", "seaweedfs"), default="moto")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", choices=("auto", "releases", "objects"), default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="dagmirror-deploy-latency-") as tmp,
        server(args.server, Path(tmp)) as s3,
    ):
        samples = measure(s3, Path(tmp), args.rounds, args.interval, random.Random(args.seed), mode=args.mode)
    report(samples, args)


@contextlib.contextmanager
def server(name: str, workdir: Path) -> Iterator[S3Server]:
    if name == "seaweedfs":
        with seaweedfs_server(workdir) as s3:
            yield s3
    else:
        with moto_server() as s3:
            yield s3


def measure(
    s3: S3Server,
    workdir: Path,
    rounds: int,
    interval: float,
    rng: random.Random,
    *,
    mode: str = "auto",
    bucket: str = BUCKET,
) -> list[dict[str, float]]:
    client = s3_client(s3.endpoint_url)
    create_bucket(client, bucket, versioned=True)
    upload(client, bucket, "dags/dev/", sample_dags())  # a realistic folder around the probe
    env = s3_env(s3.endpoint_url)
    local, dest = workdir / "repo" / "dags", workdir / "mirror"
    probe = local / PROBE
    probe.parent.mkdir(parents=True)
    deploy = [sys.executable, "-m", "dagmirror", "deploy", str(probe), "--env", "dev",
              "--root", str(local), "--bucket-url", f"s3://{bucket}/dags/"]  # fmt: skip
    probe.write_bytes(b'"""Latency probe, before the first round."""\n')
    subprocess.run(deploy, env=env, check=True, stdout=subprocess.DEVNULL)  # the first release, untimed
    port = free_port()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "dagmirror", "run", f"s3://{bucket}/dags/dev/", str(dest),
         "--interval", str(interval), "--http", f"127.0.0.1:{port}", "--mode", mode],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    samples: list[dict[str, float]] = []
    try:
        wait_ready(port)
        for n in range(rounds):
            body = f'"""Latency probe, round {n}."""\n\nROUND = {n}\n'.encode() + b"# padding\n" * (n % 7)
            probe.write_bytes(body)
            time.sleep(rng.uniform(0, interval))  # land at a random phase of the daemon's cycle
            start = time.monotonic()
            subprocess.run(deploy, env=env, check=True, stdout=subprocess.DEVNULL)
            exited = time.monotonic()
            visible = wait_visible(dest / PROBE, body, deadline=start + 10 * interval + 30)
            samples.append(
                {"from_start": visible - start, "from_exit": visible - exited, "deploy": exited - start}
            )
            print(
                f"round {n + 1:3}/{rounds}: visible {visible - start:6.3f}s after deploy start",
                file=sys.stderr,
            )
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    return samples


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("dagmirror run never became ready")


def wait_visible(path: Path, body: bytes, *, deadline: float) -> float:
    """Poll every 5 ms until `path` holds `body` (the mirror renames whole files into place)."""
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if path.read_bytes() == body:
                return time.monotonic()
        time.sleep(0.005)
    raise RuntimeError(f"{path} did not get the deployed content in time")


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: with 50 samples, p99 is the largest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


LABELS = {
    "from_start": "deploy start -> visible in DEST",
    "from_exit": "deploy exit -> visible in DEST",
    "deploy": "dagmirror deploy itself",
}


def summarise(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """p50/p99/max (nearest rank) of each measure in LABELS."""
    out: dict[str, dict[str, float]] = {}
    for name in LABELS:
        values = [s[name] for s in samples]
        out[name] = {
            "p50": round(percentile(values, 50), 4),
            "p99": round(percentile(values, 99), 4),
            "max": round(max(values), 4),
        }
    return out


def report(samples: list[dict[str, float]], args: argparse.Namespace) -> None:
    summary: dict[str, object] = {
        "rounds": len(samples),
        "interval": args.interval,
        "server": args.server,
        "mode": args.mode,
    }
    print(
        f"\n{len(samples)} deploys, daemon interval {args.interval:g}s (jitter 10%), {args.server} server, "
        f"--mode {args.mode}"
    )
    print(f"{'seconds':<34}{'p50':>8}{'p99':>8}{'max':>8}")
    for name, figures in summarise(samples).items():
        print(f"{LABELS[name]:<34}{figures['p50']:8.3f}{figures['p99']:8.3f}{figures['max']:8.3f}")
        summary[name] = figures
    if args.json:
        print(orjson.dumps(summary).decode())


if __name__ == "__main__":
    main()
