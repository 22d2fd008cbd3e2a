"""The sidecar's figures: propagation latency from upload to visible file, and an idle daemon's cost."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from dagmirror.devtools.servers import free_port, s3_env

from .peers import Target


def _start(target: Target, dest: Path, *flags: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = [sys.executable, "-m", "dagmirror", "run", target.url, str(dest), "--http", f"127.0.0.1:{port}"]
    proc = subprocess.Popen([*cmd, *flags], env=s3_env(target.endpoint), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("dagmirror run never became ready")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)


def _put(client: Any, target: Target, rel: str, body: bytes) -> None:
    """PUT with patience: a fresh SeaweedFS bucket answers 500 until its first volume is allocated."""
    for attempt in range(20):
        try:
            client.put_object(Bucket=target.bucket, Key=target.prefix + rel, Body=body)
        except client.exceptions.ClientError:
            time.sleep(0.2 * (attempt + 1))
        else:
            return
    raise RuntimeError(f"PUT {rel} kept failing")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def propagation(client: Any, target: Target, workdir: Path, uploads: int, interval: float) -> dict[str, Any]:
    """Upload `uploads` new files, one every 0.25 s, while `dagmirror run --interval` mirrors; the latency of
    each is the time from its PUT returning to the file being readable in DEST with the new content."""
    dest = workdir / "propagation"
    _put(client, target, "seed.py", b"seed = 1\n")
    proc, _ = _start(target, dest, "--interval", str(interval))
    seen: dict[str, float] = {}
    put_done: dict[str, float] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for rel in [r for r in put_done if r not in seen]:
                if (dest / rel).exists():
                    seen[rel] = time.monotonic()
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(uploads):
            rel = f"latency/probe_{i:04d}.py"
            _put(client, target, rel, f"probe = {i}\n".encode())
            put_done[rel] = time.monotonic()
            time.sleep(0.25)
        deadline = time.monotonic() + interval * 5 + 30
        while len(seen) < uploads and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        watcher.join()
        _stop(proc)
    latencies = [seen[r] - put_done[r] for r in seen]
    return {
        "uploads": uploads,
        "visible": len(latencies),
        "interval_s": interval,
        "p50_s": round(percentile(latencies, 0.5), 3),
        "p99_s": round(percentile(latencies, 0.99), 3),
        "max_s": round(max(latencies), 3),
        "mean_s": round(statistics.fmean(latencies), 3),
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> tuple[float, float]:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def idle(target: Target, workdir: Path, files: int, seconds: float, interval: float = 30) -> dict[str, Any]:
    """CPU and RSS of `dagmirror run` (default interval) after its first pass, over `seconds`."""
    dest = workdir / "idle"
    proc, _ = _start(target, dest, "--interval", str(interval))
    try:
        cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = _cpu_seconds(proc.pid), time.monotonic()
        rss, hwm = _rss_mb(proc.pid)
    finally:
        _stop(proc)
    return {
        "files": files,
        "interval_s": interval,
        "window_s": round(t1 - t0, 1),
        "cpu_s": round(cpu1 - cpu0, 3),
        "cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(hwm, 1),
    }
