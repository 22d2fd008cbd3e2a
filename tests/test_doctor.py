"""`dagmirror doctor` against moto server over HTTP: a healthy set-up passes, and each check fails for its
own reason: no bucket, access denied (moto with its IAM enforcement on, and users holding the policies
`dagmirror iam-policy` prints), a mirror that can write, clock skew (an injected clock), DEST not writable
and DEST full (a read-only and a tiny tmpfs in a user+mount namespace: `unshare -rm`, no root needed;
the tests skip where namespaces are not allowed), DEST spanning filesystems, and /readyz of a real daemon."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from dagmirror.config import S3Url
from dagmirror.devtools.corpus import create_bucket
from dagmirror.devtools.servers import CREDENTIALS, moto_server, s3_client, s3_env
from dagmirror.setup import iam
from dagmirror.setup.doctor import DoctorRequest, diagnose
from dagmirror.source.admin import S3Admin

from .daemon import Daemon
from .helpers import Run, dagmirror, sdk_credentials
from .releases import publish

FILES = {"team/a.py": b"a = 1\n" * 100, "team/b.py": b"b = 2\n"}


def statuses(run: Run) -> dict[str, str]:
    return {c["check"]: c["status"] for c in run.report["checks"]}


def doctor(endpoint: str, *args: str | Path, env: dict[str, str] | None = None) -> Run:
    return dagmirror("doctor", *args, "--json", endpoint=endpoint, env=env)


@pytest.fixture
def released(s3: Any, bucket: str) -> str:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    publish(s3, bucket, "dags/dev/", FILES)
    for rel, body in FILES.items():
        s3.put_object(Bucket=bucket, Key=f"dags/dev/{rel}", Body=body)
    return bucket


def test_a_healthy_deployer_setup_passes_every_check(
    moto_endpoint: str, released: str, tmp_path: Path
) -> None:
    run = doctor(moto_endpoint, f"s3://{released}/dags/dev", tmp_path / "dags", "--role", "deployer")
    assert run.code == 0, run.stdout + run.stderr
    assert run.report["ok"] is True
    assert statuses(run) == dict.fromkeys(
        (
            "credentials",
            "region",
            "clock",
            "bucket",
            "releases",
            "read",
            "write",
            "dest-writable",
            "dest-space",
        ),
        "ok",
    )
    detail = {c["check"]: c["detail"] for c in run.report["checks"]}
    assert detail["credentials"] == "authenticated as arn:aws:sts::123456789012:user/moto"
    assert "(seq 1), 2 files" in detail["releases"]


def test_human_output_is_one_line_per_check_with_its_fix(moto_endpoint: str, released: str) -> None:
    run = dagmirror("doctor", f"s3://{released}/dags/dev", endpoint=moto_endpoint)
    lines = run.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok", "ok", "ok", "ok", "ok", "ok", "fail"]
    assert lines[-1].startswith("fail  write: these credentials may write dags/dev/.dagmirror-doctor-")
    assert lines[-1].endswith(
        "-> fix: a mirror should only read: dagmirror iam-policy --role mirror --bucket B --env E"
    )


def test_a_mirror_whose_credentials_can_write_fails_and_nothing_was_written(
    s3: Any, moto_endpoint: str, released: str
) -> None:
    before = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=released)["Contents"])
    run = doctor(moto_endpoint, f"s3://{released}/dags/dev")
    assert run.code == 1
    assert statuses(run)["write"] == "fail"
    assert [c for c in statuses(run).values() if c == "fail"] == ["fail"]
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=released)["Contents"]) == before
    assert "DeleteMarkers" not in s3.list_object_versions(Bucket=released)


def test_a_missing_bucket_fails_the_bucket_check_and_skips_what_depends_on_it(moto_endpoint: str) -> None:
    run = doctor(moto_endpoint, f"s3://missing-{uuid.uuid4().hex[:8]}/dags/dev")
    assert run.code == 1
    checks = {c["check"]: c for c in run.report["checks"]}
    assert checks["bucket"]["status"] == "fail"
    assert checks["bucket"]["detail"].endswith("does not exist")
    assert checks["bucket"]["fix"].startswith("dagmirror bucket init s3://missing-")
    assert set(checks) == {"credentials", "region", "clock", "bucket"}


def test_no_credentials_fails_the_credentials_check(
    moto_endpoint: str, released: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in s3_env(moto_endpoint).items() if k not in CREDENTIALS}
    env |= {
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    run = doctor(moto_endpoint, f"s3://{released}/dags/dev", env=env)
    assert run.code == 1
    checks = {c["check"]: c for c in run.report["checks"]}
    assert checks["credentials"]["status"] == "fail"
    assert checks["credentials"]["detail"].startswith("no AWS credentials found")


async def test_clock_skew_fails_the_clock_check_only(moto_endpoint: str, released: str) -> None:
    request = DoctorRequest(S3Url.parse(f"s3://{released}/dags/dev"), role="deployer")
    with sdk_credentials():
        admin = await S3Admin.open(released, endpoint_url=moto_endpoint, region="us-east-1")
        try:
            ahead = await diagnose(request, admin, clock=lambda: time.time() + 3600)
            slightly = await diagnose(request, admin, clock=lambda: time.time() - 45)
        finally:
            await admin.aclose()
    by_name = {c.name: c for c in ahead}
    assert by_name["clock"].status == "fail"
    assert by_name["clock"].detail.startswith("local clock 36")
    assert by_name["clock"].detail.endswith("s ahead of S3")
    assert [c.name for c in ahead if c.status != "ok"] == ["clock"]
    assert {c.name: c.status for c in slightly}["clock"] == "warn"


async def test_a_full_dest_fails_the_space_check_by_the_release_size(
    released: str, moto_endpoint: str
) -> None:
    """An injected statvfs: the tmpfs version below needs namespaces, this one runs everywhere."""
    request = DoctorRequest(S3Url.parse(f"s3://{released}/dags/dev"), dest=Path("/tmp"), role="deployer")

    def statvfs(_: Path) -> Any:
        return type("Stat", (), {"f_bavail": 1, "f_frsize": 600})()

    with sdk_credentials():
        admin = await S3Admin.open(released, endpoint_url=moto_endpoint, region="us-east-1")
        try:
            found = await diagnose(request, admin, statvfs=statvfs)
        finally:
            await admin.aclose()
    space = {c.name: c for c in found}["dest-space"]
    assert space.status == "fail"
    assert "0.0 MB free, the release needs about 0.0 MB" in space.detail


# -- DEST on real filesystems, in a user+mount namespace ---------------------------------------------------
def in_namespace(script: str, endpoint: str) -> Run:
    """`script` (sh) in a new user+mount namespace, where it may mount tmpfs; skip where not allowed."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"user+mount namespaces not allowed here: {probe.stderr.strip()}")
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-ec", script],
        capture_output=True,
        text=True,
        env=s3_env(endpoint),
        timeout=60,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def doctor_sh(bucket: str, dest: Path) -> str:
    return f"{sys.executable} -m dagmirror doctor s3://{bucket}/dags/dev {dest} --role deployer --json"


def test_a_read_only_dest_fails_the_writable_check(moto_endpoint: str, released: str, tmp_path: Path) -> None:
    dest = tmp_path / "dags"
    dest.mkdir()
    run = in_namespace(
        f"mount -t tmpfs -o size=1m,ro tmpfs {dest}\n{doctor_sh(released, dest)}", moto_endpoint
    )
    assert run.code == 1, run.stderr
    checks = {c["check"]: c for c in run.report["checks"]}
    assert checks["dest-writable"]["status"] == "fail"
    assert "Read-only file system" in checks["dest-writable"]["detail"]
    assert [k for k, c in checks.items() if c["status"] == "fail"] == ["dest-writable"]


def test_a_full_dest_fails_the_space_check(moto_endpoint: str, released: str, tmp_path: Path) -> None:
    dest = tmp_path / "dags"
    dest.mkdir()
    fill = f"mount -t tmpfs -o size=64k tmpfs {dest}\nhead -c 65536 /dev/zero > {dest}/filler || true\n"
    run = in_namespace(fill + doctor_sh(released, dest), moto_endpoint)
    assert run.code == 1, run.stderr
    checks = {c["check"]: c for c in run.report["checks"]}
    assert checks["dest-space"]["status"] == "fail"
    assert checks["dest-space"]["detail"].startswith(f"{dest}: 0.0 MB free")


def test_a_filesystem_mounted_inside_dest_fails_the_filesystem_check(
    moto_endpoint: str, released: str, tmp_path: Path
) -> None:
    dest = tmp_path / "dags"
    (dest / "team").mkdir(parents=True)
    run = in_namespace(f"mount -t tmpfs tmpfs {dest}/team\n{doctor_sh(released, dest)}", moto_endpoint)
    assert run.code == 1, run.stderr
    checks = {c["check"]: c for c in run.report["checks"]}
    assert checks["dest-filesystem"]["status"] == "fail"
    assert checks["dest-filesystem"]["detail"] == f"{dest} spans filesystems: {dest}/team mounted inside"


# -- /readyz of a running daemon ---------------------------------------------------------------------------
def test_readyz_of_a_running_daemon(moto_endpoint: str, released: str, tmp_path: Path) -> None:
    with Daemon(f"s3://{released}/dags/dev", tmp_path / "dest", moto_endpoint, "--interval", "60") as daemon:
        url = f"http://127.0.0.1:{daemon.port}/readyz"
        daemon.until(lambda: daemon.get("/readyz")[0] == 200, what="ready")
        ready = doctor(moto_endpoint, f"s3://{released}/dags/dev", "--role", "deployer", "--readyz", url)
        daemon.signal()
        assert daemon.finish() == 0
    assert ready.code == 0, ready.stdout
    assert statuses(ready)["readyz"] == "ok"
    gone = doctor(moto_endpoint, f"s3://{released}/dags/dev", "--role", "deployer", "--readyz", url)
    assert gone.code == 1
    readyz = {c["check"]: c for c in gone.report["checks"]}["readyz"]
    assert readyz["status"] == "fail"
    assert readyz["detail"].startswith(f"{url}: ClientConnectorError: Cannot connect to host")


# -- denied, with moto's IAM enforcement -------------------------------------------------------------------
@pytest.fixture(scope="module")
def iam_moto() -> Iterator[tuple[str, str, dict[str, dict[str, str]]]]:
    """A moto server of its own with IAM enforcement on; a bucket with a release; users `mirror` (the
    policy `iam-policy --role mirror --env dev` prints) and `stranger` (no policy). Yields (endpoint,
    bucket, {user: its credentials})."""
    with moto_server() as server:
        url, bucket = server.endpoint_url, "guarded-airflow"
        s3 = s3_client(url)
        create_bucket(s3, bucket)
        publish(s3, bucket, "dags/dev/", FILES)
        iam_client = boto3.client("iam", endpoint_url=url, region_name="us-east-1", **_keys(CREDENTIALS))
        users: dict[str, dict[str, str]] = {}
        for user in ("mirror", "stranger"):
            iam_client.create_user(UserName=user)
            if user == "mirror":
                doc = iam.policy(iam.PolicyRequest.create("mirror", bucket, ["dev"]))
                iam_client.put_user_policy(
                    UserName=user, PolicyName="dagmirror", PolicyDocument=json.dumps(doc)
                )
            key = iam_client.create_access_key(UserName=user)["AccessKey"]
            users[user] = {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            }
        request = urllib.request.Request(
            f"{url}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=10):  # from now on every request is authorised
            pass
        yield url, bucket, users


def _keys(creds: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": creds["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": creds["AWS_SECRET_ACCESS_KEY"],
    }


def test_credentials_without_access_fail_as_denied(
    iam_moto: tuple[str, str, dict[str, dict[str, str]]],
) -> None:
    url, bucket, users = iam_moto
    run = doctor(url, f"s3://{bucket}/dags/dev", env=s3_env(url) | users["stranger"])
    assert run.code == 1
    checks = {c["check"]: c for c in run.report["checks"]}
    assert checks["credentials"]["detail"] == "authenticated as arn:aws:iam::123456789012:user/stranger"
    assert checks["bucket"]["status"] == "fail"
    assert "AccessDenied" in checks["bucket"]["detail"] or "403" in checks["bucket"]["detail"]
    assert checks["bucket"]["fix"].startswith("attach the policy of `dagmirror iam-policy")


def test_a_mirror_holding_the_mirror_policy_reads_and_cannot_write(
    iam_moto: tuple[str, str, dict[str, dict[str, str]]],
) -> None:
    url, bucket, users = iam_moto
    run = doctor(url, f"s3://{bucket}/dags/dev", env=s3_env(url) | users["mirror"])
    checks = {c["check"]: c for c in run.report["checks"]}
    assert checks["write"]["status"] == "ok", checks["write"]
    assert checks["write"]["detail"].startswith("mirror: no write outside its status and audit objects")
    assert checks["releases"]["status"] == "ok"
    assert run.code == 0, run.stdout
