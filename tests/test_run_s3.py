"""`dagmirror run` as a real process against moto server over HTTP: readiness, staleness, metrics,
shutdown, audit, --wait-for-source, config errors. A test proxy between them counts requests and
simulates an S3 outage."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from dagmirror.devtools.corpus import create_bucket
from dagmirror.devtools.proxy import Fault, S3Proxy
from dagmirror.devtools.servers import s3_env

from .daemon import Daemon
from .helpers import dagmirror, put_all, read_tree

PREFIX = "dags/prod/"
FILES = {f"team{i % 3}/dag_{i}.py": f"# dag {i}\n".encode() * (i + 1) for i in range(12)}
SECRET = "run-secret-never-shown"


@pytest.fixture
def seeded(s3: Any, bucket: str) -> str:
    put_all(s3, bucket, PREFIX, FILES)
    return bucket


def secret_env(endpoint: str) -> dict[str, str]:
    return s3_env(endpoint) | {"AWS_SECRET_ACCESS_KEY": SECRET}


def test_readiness_follows_the_first_pass_then_flips_with_an_outage_and_back(
    seeded: str, moto_endpoint: str, tmp_path: Path
) -> None:
    dest = tmp_path / "dags"
    gate = threading.Event()
    with S3Proxy(moto_endpoint) as proxy:
        # Hold every LIST until the test has seen /readyz answer 503 before the first pass completes.
        proxy.set_fault(lambda r: None if gate.is_set() else Fault(delay=0.3))
        flags = ("--interval", "0.3", "--jitter", "0", "--staleness", "1.5")
        with Daemon(f"s3://{seeded}/{PREFIX}", dest, proxy.endpoint_url, *flags) as daemon:
            daemon.until(lambda: daemon.get("/healthz")[0] == 200, what="/healthz")
            assert daemon.get("/readyz")[0] == 503
            gate.set()
            proxy.set_fault(None)
            daemon.until(lambda: daemon.get("/readyz")[0] == 200, what="ready after the first pass")
            assert read_tree(dest) == FILES

            proxy.set_fault(lambda r: Fault(status=503, code="ServiceUnavailable"))
            daemon.until(lambda: daemon.get("/readyz")[0] == 503, what="stale during the outage")
            assert daemon.get("/healthz")[0] == 200  # alive, just not ready
            assert (daemon.metric("dagmirror_staleness_seconds", mapping="default") or 0) > 1.5
            assert read_tree(dest) == FILES  # a failed pass keeps the last good tree

            proxy.set_fault(None)
            daemon.until(lambda: daemon.get("/readyz")[0] == 200, what="ready again after the outage")
            daemon.signal(signal.SIGTERM)
            assert daemon.finish() == 0


def test_metrics_report_what_the_passes_did(s3: Any, seeded: str, moto_endpoint: str, tmp_path: Path) -> None:
    dest = tmp_path / "dags"
    with Daemon(f"s3://{seeded}/{PREFIX}", dest, moto_endpoint, "--interval", "0.3") as daemon:
        daemon.until(lambda: daemon.metric("dagmirror_objects_total", mapping="default", result="downloaded"))
        s3.delete_object(Bucket=seeded, Key=PREFIX + "team0/dag_0.py")
        daemon.until(
            lambda: daemon.metric("dagmirror_objects_total", mapping="default", result="deleted") == 1,
            what="the deletion counted",
        )
        assert daemon.metric("dagmirror_objects_total", mapping="default", result="downloaded") == len(FILES)
        assert daemon.metric("dagmirror_downloaded_bytes_total", mapping="default") == sum(
            map(len, FILES.values())
        )
        assert daemon.metric("dagmirror_objects_total", mapping="default", result="failed") in (None, 0.0)
        assert (daemon.metric("dagmirror_last_success_timestamp_seconds", mapping="default") or 0) > 1e9
        assert (
            daemon.metric("dagmirror_requests_total", mapping="default", operation="LIST", status="ok") or 0
        ) >= 2
        assert (daemon.metric("dagmirror_pass_duration_seconds_count", mapping="default") or 0) >= 2
        daemon.signal(signal.SIGINT)
        assert daemon.finish() == 0
    assert not (dest / "team0/dag_0.py").exists()


def test_sigterm_mid_pass_exits_0_and_a_second_signal_exits_at_once_without_torn_files(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    big = {f"f{i:03d}.py": bytes([65 + i % 26]) * 200_000 for i in range(60)}
    put_all(s3, bucket, PREFIX, big)
    dest = tmp_path / "dags"
    with S3Proxy(moto_endpoint) as proxy:
        proxy.set_fault(lambda r: Fault(delay=0.2) if r.op == "GET" else None)
        src = f"s3://{bucket}/{PREFIX}"
        with Daemon(src, dest, proxy.endpoint_url, "--concurrency", "4", "--grace", "60") as daemon:
            daemon.until(lambda: len(read_tree(dest)) >= 4, what="a pass in flight")
            daemon.signal(signal.SIGTERM)
            assert daemon.finish(timeout=60) == 0  # graceful: the pass in flight finished
            assert read_tree(dest) == big
        (dest / ".dagmirror" / "state.json").unlink()  # force a full pass again
        for path in dest.glob("*.py"):
            path.unlink()
        with Daemon(src, dest, proxy.endpoint_url, "--concurrency", "4", "--grace", "60") as daemon:
            daemon.until(lambda: len(read_tree(dest)) >= 4, what="a pass in flight")
            daemon.signal(signal.SIGTERM)
            daemon.until(lambda: daemon.logged("SIGTERM: finishing"), what="the first SIGTERM handled")
            daemon.signal(signal.SIGTERM)  # impatient: exit now
            assert daemon.finish(timeout=10) != 0
    for rel, body in read_tree(dest).items():
        assert body == big[rel], f"torn file {rel}"
    assert len(read_tree(dest)) < len(big)


def test_audit_records_each_change_and_never_a_secret(
    s3: Any, seeded: str, moto_endpoint: str, tmp_path: Path
) -> None:
    dest, audit_dir = tmp_path / "dags", tmp_path / "audit"
    audit_bucket = seeded  # ship into the same bucket, under metadata/sync-logs/
    flags = ("--interval", "0.3", "--audit-dir", str(audit_dir), "--audit-s3", f"s3://{audit_bucket}")
    env = secret_env(moto_endpoint)
    with Daemon(f"s3://{seeded}/{PREFIX}", dest, moto_endpoint, *flags, env=env) as daemon:
        daemon.until(lambda: list(audit_dir.glob("*.jsonl")), what="an audit file")
        s3.put_object(Bucket=seeded, Key=PREFIX + "team1/dag_1.py", Body=b"edited\n")

        def shipped() -> list[dict[str, Any]]:
            listing = s3.list_objects_v2(Bucket=audit_bucket, Prefix="metadata/sync-logs/")
            keys = [o["Key"] for o in listing.get("Contents", [])]
            if not keys:
                return []
            body = s3.get_object(Bucket=audit_bucket, Key=keys[0])["Body"].read()
            return [orjson.loads(line) for line in body.splitlines()]

        daemon.until(lambda: len(shipped()) >= 2, what="two records shipped to S3")
        daemon.signal()
        assert daemon.finish() == 0
    records = shipped()
    first, second = records[0], records[1]
    assert first["mapping"] == "default"
    assert first["result"] == "ok"
    assert {f["action"] for f in first["files"]} == {"download"}
    assert len(first["files"]) == len(FILES)
    edit = [f for f in second["files"] if f["key"] == PREFIX + "team1/dag_1.py"]
    assert len(edit) == 1
    assert edit[0]["size"] == len(b"edited\n")
    assert len(edit[0]["xxh3"]) == 32
    assert edit[0]["etag"]
    local = "".join(p.read_text() for p in audit_dir.glob("*.jsonl"))
    for text in (local, daemon.stderr, (dest / ".dagmirror" / "state.json").read_text()):
        assert SECRET not in text
    assert SECRET not in daemon.get("/metrics")[1]


def test_wait_for_source_waits_for_the_bucket_then_syncs(s3: Any, moto_endpoint: str, tmp_path: Path) -> None:
    name = f"late-{time.monotonic_ns()}"

    def create_later() -> None:
        time.sleep(1.5)
        create_bucket(s3, name)
        put_all(s3, name, PREFIX, FILES)

    thread = threading.Thread(target=create_later)
    thread.start()
    run = dagmirror(
        "sync", f"s3://{name}/{PREFIX}", tmp_path / "d", "--wait-for-source", "30", "--json",
        endpoint=moto_endpoint,
    )  # fmt: skip
    thread.join()
    assert run.code == 0, run.stderr
    # The wait ends as soon as the prefix holds an object, possibly while the uploads are still landing:
    # what the first pass mirrored is a non-empty, byte-exact part of them, and the next pass completes it.
    first = read_tree(tmp_path / "d")
    assert first
    assert all(FILES[rel] == body for rel, body in first.items())
    assert dagmirror("sync", f"s3://{name}/{PREFIX}", tmp_path / "d", endpoint=moto_endpoint).code == 0
    assert read_tree(tmp_path / "d") == FILES


def test_wait_for_source_gives_up_with_one_line_after_the_timeout(moto_endpoint: str, tmp_path: Path) -> None:
    run = dagmirror("sync", "s3://never-created/dags", tmp_path / "d", "--wait-for-source", "1",
                    endpoint=moto_endpoint)  # fmt: skip
    assert run.code != 0
    assert run.stderr.count("\n") == 1, run.stderr
    assert "never-created" in run.stderr


def test_config_errors_are_one_line_per_bad_field_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "dagmirror.toml"
    config.write_text(
        'interval = "soon"\n'
        '[[mirror]]\nname = "a"\nsource = "s3:/broken"\ndest = "/tmp/a"\n'
        '[[mirror]]\nname = "b"\nsource = "s3://okay-bucket/dags"\ndest = "/tmp/a/b"\n'
        "max_delete_fraction = 7\n"
    )
    run = dagmirror("run", "--config", config, endpoint="http://127.0.0.1:9")
    assert run.code == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) >= 3, run.stderr
    assert any("interval" in line for line in lines)
    assert any("s3://bucket/prefix" in line for line in lines)
    assert any("max_delete_fraction" in line or "max-delete-fraction" in line for line in lines)
    assert "Traceback" not in run.stderr


def test_a_missing_bucket_after_the_wait_is_a_configuration_error_exit_2(
    moto_endpoint: str, tmp_path: Path
) -> None:
    run = dagmirror("sync", "s3://never-created/dags", tmp_path / "d", "--wait-for-source", "0.5",
                    endpoint=moto_endpoint)  # fmt: skip
    assert run.code == 2, run.stderr  # as without --wait-for-source (test_sync_s3)
    assert run.stderr.count("\n") == 1, run.stderr
    assert "bucket does not exist" in run.stderr
