"""`dagmirror fleet` over HTTP (moto server): the table, `--json`, the exit code, silent and stopped
instances, hostile status objects. The statuses are written by the test, so every state is exact; the
statuses of real daemons are tests/test_fleet_run.py and tests/test_fleet_wait.py."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from dagmirror.fleet.status import MAX_STATUS_BYTES, STOPPED, Status

from .helpers import Run, dagmirror
from .releases import publish

PREFIX = "dags/production/"
V1 = {"team/a.py": b"a = 1\n"}
V2 = {"team/a.py": b"a = 2\n"}


def put_status(s3: Any, bucket: str, instance: str, release: str | None, seq: int | None, **kw: Any) -> None:
    now = time.time()
    fields: dict[str, Any] = {"written": now, "heartbeat": 60.0, "started": now - 600, "version": "0.1.0"}
    fields |= {"mode": "releases", "release": release, "release_seq": seq, "last_success": now - 1} | kw
    status = Status(instance, PREFIX, **fields)
    s3.put_object(Bucket=bucket, Key=f"metadata/fleet/{PREFIX}{instance}.json", Body=status.encode())


def fleet(bucket: str, endpoint: str, *args: str) -> Run:
    return dagmirror(
        "fleet", "--env", "production", "--bucket-url", f"s3://{bucket}/dags/", *args, endpoint=endpoint
    )


@pytest.fixture
def releases(s3: Any, bucket: str) -> tuple[str, str]:
    r1 = publish(s3, bucket, PREFIX, V1, seq=1)
    r2 = publish(s3, bucket, PREFIX, V2, seq=2)  # the pointer names r2
    return r1, r2


def test_a_converged_fleet_is_a_table_a_summary_line_and_exit_0(
    s3: Any, bucket: str, moto_endpoint: str, releases: tuple[str, str]
) -> None:
    _, r2 = releases
    put_status(s3, bucket, "pod-b", r2, 2)
    put_status(s3, bucket, "pod-a", r2, 2)
    run = fleet(bucket, moto_endpoint)
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["INSTANCE", "RELEASE", "AGE", "STATE", "NOTE"]
    assert lines[1].split()[:3] == ["pod-a", r2[:12], "(#2)"]
    assert lines[1].split()[-1] == "current"
    assert lines[2].startswith("pod-b")
    assert lines[-1] == f"production: 2/2 on {r2[:12]} (#2)"


def test_a_lagging_instance_exits_5_and_silent_and_stopped_ones_are_apart(
    s3: Any, bucket: str, moto_endpoint: str, releases: tuple[str, str]
) -> None:
    r1, r2 = releases
    put_status(s3, bucket, "pod-a", r2, 2)
    put_status(s3, bucket, "pod-b", r1, 1, last_error="GET s3://x/k: 503 SlowDown", failures=2)
    put_status(s3, bucket, "pod-gone", r1, 1, written=time.time() - 12 * 60)  # 12 heartbeats ago
    put_status(s3, bucket, "pod-old", r1, 1, state=STOPPED)
    run = fleet(bucket, moto_endpoint)
    assert run.code == 5
    rows = {line.split()[0]: line for line in run.stdout.splitlines()[1:-1]}
    assert "lagging" in rows["pod-b"]
    assert rows["pod-b"].endswith("2 failed passes: GET s3://x/k: 503 SlowDown")
    assert "silent" in rows["pod-gone"]
    assert "12 min" in rows["pod-gone"]
    assert "stopped" in rows["pod-old"]
    summary = run.stdout.splitlines()[-1]
    assert summary == f"production: 1/3 on {r2[:12]} (#2), 1 lagging, 1 silent for 12 min, 1 stopped"

    put_status(s3, bucket, "pod-b", r2, 2)  # it caught up: the silent and stopped ones are not waited on
    assert fleet(bucket, moto_endpoint).code == 0
    # A stricter silence limit makes the live ones silent too: nothing live shows it has the release.
    put_status(s3, bucket, "pod-a", r2, 2, written=time.time() - 30)
    put_status(s3, bucket, "pod-b", r2, 2, written=time.time() - 30)
    strict = fleet(bucket, moto_endpoint, "--silent-after", "20")
    assert strict.code == 5
    assert strict.stdout.splitlines()[-1].startswith(f"production: 0/3 on {r2[:12]} (#2), 3 silent for 3")
    assert strict.stdout.splitlines()[-1].endswith("s to 12 min, 1 stopped")


def test_json_is_one_object_with_the_verdict_and_every_instance(
    s3: Any, bucket: str, moto_endpoint: str, releases: tuple[str, str]
) -> None:
    r1, r2 = releases
    put_status(s3, bucket, "pod-a", r2, 2)
    put_status(s3, bucket, "pod-b", r1, 1)
    run = fleet(bucket, moto_endpoint, "--json")
    assert run.code == 5
    doc = orjson.loads(run.stdout.strip().splitlines()[-1])
    assert (doc["env"], doc["prefix"], doc["converged"]) == ("production", PREFIX, False)
    assert doc["target"] == {"release": r2, "seq": 2, "since": None}
    counts = {"current": 1, "lagging": 1, "running": 0, "silent": 0, "stopped": 0, "unreadable": 0}
    assert doc["counts"] == counts
    assert [(i["instance"], i["state"], i["status"]["release"]) for i in doc["instances"]] == [
        ("pod-a", "current", r2),
        ("pod-b", "lagging", r1),
    ]


def test_hostile_status_objects_are_unreadable_rows_and_never_reach_the_terminal(
    s3: Any, bucket: str, moto_endpoint: str, releases: tuple[str, str]
) -> None:
    _, r2 = releases
    put_status(s3, bucket, "pod-a", r2, 2, last_error="\x1b]0;owned\x07\x1b[2J", version="1\x1b[31m")
    key = f"metadata/fleet/{PREFIX}"
    s3.put_object(Bucket=bucket, Key=key + "junk.json", Body=b"\x1b[2J not json")
    s3.put_object(Bucket=bucket, Key=key + "huge.json", Body=b" " * (MAX_STATUS_BYTES + 1))
    s3.put_object(Bucket=bucket, Key=key + "liar.json", Body=Status("pod-a", PREFIX, 1, 60, 1, "x").encode())
    s3.put_object(Bucket=bucket, Key=key + "bad name.json", Body=b"{}")  # not an instance id: left out
    s3.put_object(Bucket=bucket, Key=key + "team/pod-z.json", Body=b"{}")  # a deeper key: not this env's
    run = fleet(bucket, moto_endpoint)
    assert run.code == 0, run.stdout + run.stderr  # unreadable rows are listed apart, never waited on
    assert "\x1b" not in run.stdout
    assert "\x07" not in run.stdout
    rows = {line.split()[0]: line for line in run.stdout.splitlines()[1:-1]}
    assert set(rows) == {"pod-a", "junk", "huge", "liar"}
    assert rows["junk"].endswith("unreadable  not JSON")
    assert rows["huge"].endswith(f"unreadable  larger than {MAX_STATUS_BYTES} bytes")
    assert rows["liar"].endswith("unreadable  names instance 'pod-a', but is stored as 'liar'")
    assert rows["pod-a"].endswith("current     ]0;owned [2J")  # the escapes are gone, the text is still there
    assert run.stdout.splitlines()[-1] == f"production: 1/4 on {r2[:12]} (#2), 3 unreadable"


def test_no_status_no_pointer_and_an_unknown_environment(s3: Any, bucket: str, moto_endpoint: str) -> None:
    run = fleet(bucket, moto_endpoint)
    assert run.code == 5
    assert run.stdout.splitlines()[-1] == "production: no instance has reported a status"

    put_status(s3, bucket, "pod-a", None, None, mode="objects")
    run = fleet(bucket, moto_endpoint)
    assert run.code == 5  # no release pointer: nothing to say the fleet converged on
    assert (
        run.stdout.splitlines()[-1]
        == "production: 1/1 live; no release pointer, so no release to compare with"
    )

    run = dagmirror("fleet", "--env", "qa", "--bucket-url", f"s3://{bucket}/dags/", endpoint=moto_endpoint)
    assert run.code == 2
    assert "unknown environment 'qa'" in run.stderr
