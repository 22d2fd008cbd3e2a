"""Limits: a server that stalls, dribbles or floods; a full disk; an S3 outage under the daemon; 100k keys
(short version here, full size in `python -m tests.soak`); and no credential in any output."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from dagmirror import Mirror, MirrorConfig, PassFailed
from dagmirror.devtools.proxy import ChaosRule, Fault, S3Proxy
from dagmirror.devtools.servers import s3_env
from dagmirror.errors import InstallError
from dagmirror.models import SyncReport
from dagmirror.retry import RetryPolicy
from dagmirror.source.memory import MemorySource

from .daemon import Daemon
from .faults import leftover_temps, state_problems
from .helpers import dagmirror, put_all, read_tree, sdk_credentials
from .soak import scale

PREFIX = "dags/"
FILES = {f"team{i % 2}/dag_{i}.py": f"# dag {i}\n".encode() * (30 + i) for i in range(6)}


@pytest.fixture
def seeded(s3: Any, bucket: str) -> str:
    put_all(s3, bucket, PREFIX, FILES)
    return bucket


async def sync_via(bucket: str, proxy: S3Proxy, dest: Path, **kw: Any) -> SyncReport:
    cfg = MirrorConfig.create(
        f"s3://{bucket}/{PREFIX}",
        dest,
        endpoint_url=proxy.endpoint_url,
        fsync=False,
        concurrency=len(FILES),
        connect_timeout=0.5,
        read_timeout=0.5,
        retry=RetryPolicy(attempts=1),
        **kw,
    )
    async with Mirror(cfg) as mirror:
        return await mirror.sync_once()


# -- slow or hostile server ---------------------------------------------------------------------------------
HOSTILE = {
    "never answers": Fault(delay=3600),
    "answers one byte at a time": Fault(dribble=0.2),
}


@pytest.mark.parametrize("transport", ["lean", "sdk"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_a_get_from_a_stuck_server_is_given_up_and_reported(
    seeded: str, moto_endpoint: str, tmp_path: Path, name: str, transport: str
) -> None:
    with S3Proxy(moto_endpoint) as proxy, sdk_credentials():
        proxy.set_fault(lambda r: HOSTILE[name] if r.op == "GET" else None)
        report = await sync_via(seeded, proxy, tmp_path, transport=transport)
    assert (report.downloaded, report.failed) == (0, len(FILES))
    assert all(("Timeout" in f.error) or ("no complete answer" in f.error) for f in report.failures)
    assert read_tree(tmp_path) == {}


@pytest.mark.parametrize("transport", ["lean", "sdk"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_a_listing_from_a_stuck_server_fails_the_pass_cleanly(
    seeded: str, moto_endpoint: str, tmp_path: Path, name: str, transport: str
) -> None:
    with S3Proxy(moto_endpoint) as proxy, sdk_credentials():
        proxy.set_fault(lambda r: HOSTILE[name] if r.op == "LIST" else None)
        with pytest.raises(PassFailed, match="nothing deleted"):
            await sync_via(seeded, proxy, tmp_path, transport=transport)


# Runs `python -m dagmirror ARGS` and prints the process's VmHWM at exit. ru_maxrss of a child would not do:
# it counts the RSS of the (large) pytest process the child was forked from; VmHWM starts afresh at exec.
PEAK_RSS_WRAPPER = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: sys.stderr.write(open('/proc/self/status').read()))\n"
    "sys.argv = ['dagmirror', *sys.argv[1:]]\n"
    "runpy.run_module('dagmirror', run_name='__main__', alter_sys=True)\n"
)


@pytest.mark.parametrize("transport", ["lean", "sdk"])
def test_a_huge_body_for_a_small_key_is_abandoned_within_the_memory_target(
    seeded: str, moto_endpoint: str, tmp_path: Path, transport: str
) -> None:
    """Every GET answers 1 GiB of junk for a key listed at a few hundred bytes; the CLI process must stay
    small (its own peak RSS, VmHWM) and fail those keys cleanly."""
    with S3Proxy(moto_endpoint) as proxy:
        proxy.set_fault(lambda r: Fault(oversize=1 << 30) if r.op == "GET" else None)
        args = ["sync", f"s3://{seeded}/{PREFIX}", str(tmp_path)]
        args += ["--endpoint-url", proxy.endpoint_url, "--json", "--transport", transport]
        run = subprocess.run(
            [sys.executable, "-c", PEAK_RSS_WRAPPER, *args],
            env=s3_env(proxy.endpoint_url),
            capture_output=True,
            timeout=300,
            check=False,
        )
    report = orjson.loads(run.stdout.splitlines()[-1])
    peak_mb = int(run.stderr.decode().rsplit("VmHWM:", 1)[1].split()[0]) / 1024
    assert run.returncode == 1
    assert report["failed"] == len(FILES)
    assert all("exceeds the listed size" in f["error"] for f in report["failures"])
    assert peak_mb < 150, f"peak RSS {peak_mb:.0f} MB"
    assert read_tree(tmp_path) == {}


# -- disk full ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def tiny_filesystem(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (needs root and mount rights; skips the test otherwise)."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _remount(mount: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


async def memory_sync(source: MemorySource, dest: Path) -> SyncReport:
    cfg = MirrorConfig.create("s3://bkt/dags", dest, retry=RetryPolicy(attempts=1), checkpoint_interval=3600)
    async with Mirror(cfg, source=source) as mirror:
        return await mirror.sync_once()


async def test_a_full_disk_fails_cleanly_keeps_every_file_and_recovers_when_space_returns(
    tmp_path: Path,
) -> None:
    with tiny_filesystem(tmp_path / "small", "1m") as mount:
        dest = mount / "dags"
        first = {f"dags/old_{i}.py": bytes([65 + i]) * 100_000 for i in range(4)}
        source = MemorySource(first)
        await memory_sync(source, dest)
        kept = read_tree(dest)
        for i in range(8):  # 800 kB more than a 1 MiB filesystem holding 400 kB can take
            source.put(f"dags/new_{i}.py", bytes([97 + i]) * 100_000)
        source.put("dags/old_0.py", b"rewritten " * 10_000)
        report = await memory_sync(source, dest)
        assert report.failed >= 1
        assert all("No space left on device" in f.error for f in report.failures), report.failures
        now = read_tree(dest)
        assert set(kept) <= set(now)  # nothing lost
        for path, body in now.items():  # each file whole: the old bytes or the new, nothing partial
            assert body in (kept.get(path), source.objects["dags/" + path]), path
        assert leftover_temps(dest) == []
        _remount(mount, "8m")
        report = await memory_sync(source, dest)
        assert report.failed == 0
        assert read_tree(dest) == {k[len("dags/") :]: v for k, v in source.objects.items()}
        assert state_problems(dest) == []


async def test_enospc_on_the_state_write_is_one_clear_error_leaves_no_temp_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = MemorySource({f"dags/f{i}.py": b"x" * i for i in range(5)})
    await memory_sync(source, tmp_path)
    source.put("dags/f9.py", b"new")
    real_write = os.write

    def full_for_state(fd: int, data: Any) -> int:
        if bytes(data[:1]) == b"{":  # the state document
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_for_state)
    with pytest.raises(InstallError, match="No space left on device"):
        await memory_sync(source, tmp_path)
    assert leftover_temps(tmp_path) == []
    assert (tmp_path / "f9.py").read_bytes() == b"new"  # installed; the journal remembers it is ours
    monkeypatch.setattr(os, "write", real_write)
    report = await memory_sync(source, tmp_path)
    assert (report.failed, report.downloaded) == (0, 0)
    assert state_problems(tmp_path) == []


# -- outage under the daemon ---------------------------------------------------------------------------------
def test_an_unreachable_s3_keeps_the_tree_turns_not_ready_and_recovers_without_restart(
    s3: Any, seeded: str, moto_endpoint: str, tmp_path: Path
) -> None:
    """Connections reset (S3 unreachable, not an error answer) while S3 also changes; nothing is deleted
    during the outage, and the same process applies the change once S3 is back."""
    dest = tmp_path / "dags"
    with S3Proxy(moto_endpoint) as proxy:
        flags = ("--interval", "0.2", "--jitter", "0", "--staleness", "1.5")
        with Daemon(f"s3://{seeded}/{PREFIX}", dest, proxy.endpoint_url, *flags) as daemon:
            daemon.until(lambda: daemon.get("/readyz")[0] == 200, what="ready after the first pass")
            pid = daemon.proc.pid if daemon.proc else 0
            proxy.set_fault(lambda r: Fault(reset="before"))
            s3.delete_object(Bucket=seeded, Key=PREFIX + "team0/dag_0.py")
            daemon.until(lambda: daemon.get("/readyz")[0] == 503, what="not ready once stale")
            assert read_tree(dest) == FILES  # the last good tree, whole, and nothing deleted
            assert daemon.get("/healthz")[0] == 200
            proxy.set_fault(None)
            daemon.until(lambda: daemon.get("/readyz")[0] == 200, what="ready again without a restart")
            daemon.until(lambda: "team0/dag_0.py" not in read_tree(dest), what="the real deletion applied")
            assert daemon.proc is not None
            assert (daemon.proc.pid, daemon.proc.poll()) == (pid, None)  # the same process throughout
            daemon.signal(signal.SIGTERM)
            assert daemon.finish() == 0
    assert read_tree(dest) == {k: v for k, v in FILES.items() if k != "team0/dag_0.py"}
    assert "pass failed, keeping the last good tree" in daemon.stderr


# -- scale --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ten_thousand_keys_list_and_no_op_within_the_memory_target(tmp_path: Path) -> None:
    figures = scale(10_000, tmp_path)
    assert figures.noop_downloads == 0
    assert set(figures.noop_requests) == {"LIST"}
    assert figures.noop_peak_rss_mb <= 150
    assert figures.listing_peak_rss_mb <= 150


# -- secrets ------------------------------------------------------------------------------------------------
SECRET_KEY = "sEcReT/Key+never-printed-" + uuid.uuid4().hex
SESSION_TOKEN = "SeSsIoN/ToKeN+never-printed-" + uuid.uuid4().hex


def test_no_credential_appears_in_logs_audit_metrics_state_or_reports_even_under_faults(
    s3: Any, seeded: str, moto_endpoint: str, tmp_path: Path
) -> None:
    env = s3_env(moto_endpoint) | {"AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_SESSION_TOKEN": SESSION_TOKEN}
    dest, audit = tmp_path / "dags", tmp_path / "audit"
    outputs: list[str] = []
    with S3Proxy(moto_endpoint, list_page_size=2) as proxy:
        proxy.set_fault(ChaosRule(seed=5, rate=0.3))
        flags = ("--interval", "0.1", "--audit-dir", str(audit), "-vv")
        daemon_env = env | {"AWS_ENDPOINT_URL": proxy.endpoint_url}
        with Daemon(f"s3://{seeded}/{PREFIX}", dest, proxy.endpoint_url, *flags, env=daemon_env) as daemon:
            daemon.until(lambda: daemon.get("/readyz")[0] == 200, what="a pass through the faults")
            s3.put_object(Bucket=seeded, Key=PREFIX + "team1/dag_1.py", Body=b"changed\n")
            daemon.until(lambda: len(list(audit.glob("*.jsonl"))) > 0, what="an audit record")
            outputs += [daemon.get("/metrics")[1], daemon.get("/readyz")[1], daemon.get("/healthz")[1]]
            daemon.signal(signal.SIGTERM)
            daemon.finish()
        outputs.append(daemon.stderr)
        proxy.set_fault(lambda r: Fault(status=403, code="SignatureDoesNotMatch"))
        run = dagmirror("sync", f"s3://{seeded}/{PREFIX}", tmp_path / "other", "--json", "-vv",
                        endpoint=proxy.endpoint_url, env=env)  # fmt: skip
        outputs += [run.stdout, run.stderr]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    outputs += [p.read_bytes().decode("utf-8", "replace") for p in files]
    assert any(p.name == "state.json" for p in files)
    assert any(p.suffix == ".jsonl" for p in files)
    for text in outputs:
        assert SECRET_KEY not in text
        assert SESSION_TOKEN not in text
