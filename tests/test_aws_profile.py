"""A named AWS profile that does not exist is a configuration error on every path that builds an SDK session
(the sdk transport, deploy): exit 2 with one `dagmirror: error:` line, never exit 1 with "internal error"
or a traceback; in the daemon's audit shipping it is one warning line while mirroring goes on. Driven
through the real CLI against moto server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dagmirror.devtools.servers import s3_env

from .daemon import Daemon
from .helpers import Run, dagmirror, put_all

FILES = {"a.py": b"A = 1\n", "team/b.py": b"B = 2\n"}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("dagmirror: ")]


def assert_one_line_config_error(code: int, stderr: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("dagmirror: error: ")
    assert "nope" in lines[0]  # names the profile that is missing


def test_sync_over_the_sdk_transport_with_a_missing_aws_profile_exits_2_with_one_line(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    put_all(s3, bucket, "dags/", FILES)
    env = s3_env(moto_endpoint) | {"AWS_PROFILE": "nope"}
    run = dagmirror(
        "sync", f"s3://{bucket}/dags/", tmp_path / "d", "--transport", "sdk", endpoint=moto_endpoint, env=env
    )
    assert_one_line_config_error(run.code, run.stderr)
    assert run.stderr.strip() == error_lines(run.stderr)[0]


def test_deploy_with_a_missing_aws_profile_exits_2_with_one_line(
    bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "a.py").write_bytes(FILES["a.py"])
    env = s3_env(moto_endpoint) | {"AWS_PROFILE": "nope"}
    run: Run = dagmirror(
        "deploy", tmp_path / "dags", "--bucket-url", f"s3://{bucket}/dags/", "--env", "dev",
        endpoint=moto_endpoint, env=env,
    )  # fmt: skip
    assert_one_line_config_error(run.code, run.stderr)
    assert run.stderr.strip() == error_lines(run.stderr)[0]


def test_audit_shipping_that_loses_its_aws_profile_says_so_in_one_line_and_the_daemon_mirrors_on(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    """The profile exists while the mirror resolves its credentials (once, at the first pass) and is gone
    when a later shipment builds its SDK session: the shipment fails with one warning line naming the
    profile (the records stay local and ship after a later change), no traceback, and the daemon keeps
    mirroring and exits 0 on SIGTERM: a shipping problem never takes the DAG folder down."""
    put_all(s3, bucket, "dags/", FILES)
    aws_config = tmp_path / "aws-config"
    aws_config.write_text("[profile nope]\naws_access_key_id = test\naws_secret_access_key = test\n")
    env = s3_env(moto_endpoint) | {"AWS_PROFILE": "nope", "AWS_CONFIG_FILE": str(aws_config)}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    dest, audit_dir = tmp_path / "dest", tmp_path / "audit"
    flags = ("--interval", "0.3", "--audit-dir", str(audit_dir), "--audit-s3", f"s3://{bucket}")

    def shipped() -> int:
        return len(s3.list_objects_v2(Bucket=bucket, Prefix="metadata/sync-logs/").get("Contents", []))

    def audited() -> int:
        return sum(len(p.read_text().splitlines()) for p in audit_dir.glob("*.jsonl"))

    with Daemon(f"s3://{bucket}/dags/", dest, moto_endpoint, *flags, env=env) as daemon:
        daemon.until(lambda: shipped() >= 1, what="the first shipment")
        time.sleep(1.0)  # the first shipment's task finishes, so the next pass starts another one
        aws_config.unlink()
        s3.put_object(Bucket=bucket, Key="dags/a.py", Body=b"A = 2\n")
        daemon.until(lambda: audited() >= 2, what="a second audited pass")
        time.sleep(1.0)
        daemon.signal()
        code = daemon.finish()
    assert (dest / "a.py").read_bytes() == b"A = 2\n"  # mirroring went on regardless
    assert code == 0, daemon.stderr
    assert "Traceback" not in daemon.stderr
    failed = [line for line in daemon.stderr.splitlines() if "audit shipment failed" in line]
    assert failed, daemon.stderr
    assert all('"level":"warning"' in line and "nope" in line for line in failed)
