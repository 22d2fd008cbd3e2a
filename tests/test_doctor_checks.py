"""doctor's verdicts (dagmirror/setup/checks.py) with literals, and diagnose() on the in-memory fake."""

from __future__ import annotations

from pathlib import Path

from dagmirror.config import S3Url
from dagmirror.errors import SourceConfigError
from dagmirror.manifest import Pointer, pointer_key
from dagmirror.setup import checks
from dagmirror.setup.doctor import DoctorRequest, diagnose
from dagmirror.setup.memory import MemoryAdmin, MemoryBucket

DATE = "Mon, 30 Nov 2026 10:00:00 GMT"
NOW = 1796032800.0  # that Date


def test_clock_thresholds() -> None:
    assert checks.clock(DATE, NOW + 2).status == "ok"
    assert checks.clock(DATE, NOW - 31).status == "warn"
    assert checks.clock(DATE, NOW - 31).detail == "local clock 31s behind S3"
    assert checks.clock(DATE, NOW + 301).status == "fail"
    assert checks.clock("yesterday", NOW).status == "warn"


def test_a_mirror_may_write_only_its_status() -> None:
    status = "metadata/fleet/dags/dev/x.json"
    assert checks.write_access("mirror", {"dags/dev/x": "denied", status: "allowed"}).status == "ok"
    assert checks.write_access("mirror", {"dags/dev/x": "allowed", status: "allowed"}).status == "fail"
    assert checks.write_access("mirror", {"dags/dev/x": "denied", status: "denied"}).status == "warn"
    assert checks.write_access("deployer", {"dags/dev/x": "denied", status: "denied"}).status == "fail"
    assert checks.write_access("deployer", {"dags/dev/x": "allowed", status: "denied"}).status == "ok"
    unknown = checks.write_access("mirror", {"dags/dev/x": SourceConfigError("boom")})
    assert unknown.status == "warn"


def test_space_is_judged_against_the_release_size() -> None:
    pointer = Pointer("dags/dev/", "a" * 64, 1, 0.0, 10, 100 << 20)
    assert checks.dest_space("/d", 150 << 20, pointer).status == "fail"  # needs 2 x 100 MB
    assert checks.dest_space("/d", 300 << 20, pointer).status == "warn"
    assert checks.dest_space("/d", 1 << 30, pointer).status == "ok"
    assert checks.dest_space("/d", 50 << 20, None).status == "warn"


def test_readyz_answers() -> None:
    assert checks.readyz("u", 200, "{}").status == "ok"
    not_ready = checks.readyz("u", 503, '{"ready": false}')
    assert not_ready.status == "fail"
    assert not_ready.detail == 'u: 503 {"ready": false}'


def test_a_bucket_in_another_region_fails_with_the_region_to_use() -> None:
    check = checks.endpoint("https://s3.amazonaws.com", "us-east-1", "eu-west-1")
    assert check.status == "fail"
    assert check.fix == "set AWS_REGION=eu-west-1 (or --region eu-west-1)"


async def test_diagnose_on_the_fake(tmp_path: Path) -> None:
    pointer = Pointer("dags/dev/", "b" * 64, 4, 0.0, 1, 10)
    state = MemoryBucket(
        versioning="Enabled", objects={"dags/dev/a.py": b"a", pointer_key("dags/dev/"): pointer.encode()}
    )
    request = DoctorRequest(S3Url.parse("s3://acme/dags/dev"), dest=tmp_path)
    found = await diagnose(request, MemoryAdmin(state), clock=lambda: NOW)
    assert {c.name: c.status for c in found} == {
        "credentials": "ok",
        "region": "ok",
        "clock": "ok",
        "bucket": "ok",
        "releases": "ok",
        "read": "ok",
        "write": "ok",
        "dest-writable": "ok",
        "dest-filesystem": "ok",
        "dest-space": "ok",
    }
    denied = await diagnose(
        request, MemoryAdmin(MemoryBucket(denied=frozenset({"bucket_exists"}))), clock=lambda: NOW
    )
    bucket = {c.name: c for c in denied}["bucket"]
    assert bucket.status == "fail"
    assert "AccessDenied" in bucket.detail
