"""`dagmirror run` publishes its status over HTTP (moto server): on a new release, as a heartbeat, as
'stopped' on SIGTERM; a bucket that refuses the writes never stops the mirror."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import orjson

from dagmirror.devtools.proxy import Fault, S3Proxy
from dagmirror.fleet.status import Status, parse_status

from .daemon import Daemon
from .helpers import dagmirror, read_tree
from .releases import publish

PREFIX = "dags/production/"
KEY = "metadata/fleet/dags/production/pod-a.json"
V1 = {"team/a.py": b"a = 1\n", "team/b.py": b"b = 1\n"}
V2 = {"team/a.py": b"a = 2\n", "team/c.py": b"c = 2\n"}


def status_of(s3: Any, bucket: str, key: str = KEY) -> Status | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return parse_status(body, prefix=PREFIX, instance=key.rsplit("/", 1)[1].removesuffix(".json"))


def test_run_publishes_each_new_release_a_heartbeat_and_stopped(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    r1 = publish(s3, bucket, PREFIX, V1, seq=1)
    flags = ("--interval", "0.3", "--instance-id", "pod-a", "--heartbeat", "1")
    with Daemon(f"s3://{bucket}/{PREFIX}", tmp_path / "dags", moto_endpoint, *flags) as daemon:
        daemon.until(lambda: (s := status_of(s3, bucket)) and s.release == r1, what="release 1 reported")
        first = status_of(s3, bucket)
        assert first is not None
        assert (first.release_seq, first.mode, first.state, first.heartbeat) == (
            1,
            "releases",
            "running",
            1.0,
        )
        assert first.last_error is None
        assert first.last_success is not None
        assert first.version

        r2 = publish(s3, bucket, PREFIX, V2, seq=2)
        daemon.until(lambda: (s := status_of(s3, bucket)) and s.release == r2, what="release 2 reported")
        assert read_tree(tmp_path / "dags") == V2
        # Nothing changes from now on: the heartbeat alone moves `written`.
        seen = status_of(s3, bucket)
        assert seen is not None
        daemon.until(
            lambda: (s := status_of(s3, bucket)) and s.written > seen.written + 0.5, what="a heartbeat"
        )
        assert (daemon.metric("dagmirror_status_writes_total", mapping="default", outcome="ok") or 0) >= 3

        daemon.signal(signal.SIGTERM)
        assert daemon.finish() == 0
    last = status_of(s3, bucket)
    assert last is not None
    assert (last.state, last.release) == ("stopped", r2)


def test_a_bucket_that_refuses_status_writes_never_stops_the_mirror(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    publish(s3, bucket, PREFIX, V1, seq=1)
    dest = tmp_path / "dags"
    with S3Proxy(moto_endpoint) as proxy:
        # Read-only credentials: every PUT is refused.
        proxy.set_fault(lambda r: Fault(status=403, code="AccessDenied") if r.op == "PUT" else None)
        flags = ("--interval", "0.3", "--instance-id", "pod-a", "--heartbeat", "1")
        with Daemon(f"s3://{bucket}/{PREFIX}", dest, proxy.endpoint_url, *flags) as daemon:
            daemon.until(lambda: daemon.get("/readyz")[0] == 200, what="ready")
            failed = {"mapping": "default", "outcome": "failed"}
            daemon.until(lambda: (daemon.metric("dagmirror_status_writes_total", **failed) or 0) >= 2)
            assert read_tree(dest) == V1
            publish(s3, bucket, PREFIX, V2, seq=2)
            daemon.until(lambda: read_tree(dest) == V2, what="the next release mirrored all the same")
            daemon.signal(signal.SIGTERM)
            assert daemon.finish() == 0
    assert status_of(s3, bucket) is None
    warnings = [line for line in daemon.stderr.splitlines() if "status not published" in line]
    assert len(warnings) == 1  # one line per reason, not one per attempt
    assert "AccessDenied" in orjson.loads(warnings[0])["msg"]


def test_no_status_writes_nothing_and_a_bad_instance_id_is_refused_before_anything_runs(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    publish(s3, bucket, PREFIX, V1, seq=1)
    flags = ("--interval", "0.3", "--no-status")
    with Daemon(f"s3://{bucket}/{PREFIX}", tmp_path / "dags", moto_endpoint, *flags) as daemon:
        daemon.until(lambda: daemon.get("/readyz")[0] == 200, what="ready")
        daemon.signal(signal.SIGTERM)
        assert daemon.finish() == 0
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="metadata/fleet/")

    run = dagmirror(
        "run", f"s3://{bucket}/{PREFIX}", tmp_path / "x", "--instance-id", "../pod", endpoint=moto_endpoint
    )
    assert run.code == 2
    assert "instance_id: instance id '../pod' must be" in run.stderr
    assert not (tmp_path / "x").exists()
