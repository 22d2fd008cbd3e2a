"""`dagmirror sync` against a real S3 server (moto server over HTTP on loopback), driven through the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from dagmirror.devtools.proxy import Fault, S3Proxy
from dagmirror.devtools.servers import s3_env

from .helpers import dagmirror, put_all, read_tree

PREFIX = "dags/dev/"
NESTED = {
    "top.py": b"from airflow import DAG\n",
    "analytics/daily.py": b"# daily\n" * 50,
    "analytics/sql/report.sql": b"select * from t;\n",
    "ml/train/train_dag.py": b"x = 1\n" * 300,
    "ml/train/deep/er/still.py": b"deep\n",
    "platform/.airflowignore": b"tests/\n",
    "platform/conf.yaml": b"a: 1\n",
}


@pytest.fixture
def seeded(s3: Any, bucket: str) -> str:
    put_all(s3, bucket, PREFIX, NESTED)
    return bucket


def sync(bucket: str, dest: Path, endpoint: str, *extra: str) -> Any:
    return dagmirror("sync", f"s3://{bucket}/{PREFIX}", dest, "--json", *extra, endpoint=endpoint)


def test_cold_pass_mirrors_a_nested_tree_byte_for_byte(
    seeded: str, moto_endpoint: str, tmp_path: Path
) -> None:
    run = sync(seeded, tmp_path / "dags", moto_endpoint)
    assert run.code == 0, run.stderr
    assert read_tree(tmp_path / "dags") == NESTED
    report = run.report
    assert {k: report[k] for k in ("listed", "downloaded", "unchanged", "deleted", "rejected", "failed")} == {
        "listed": 7,
        "downloaded": 7,
        "unchanged": 0,
        "deleted": 0,
        "rejected": 0,
        "failed": 0,
    }
    assert report["bytes"] == sum(map(len, NESTED.values()))
    assert report["seconds"] > 0


def test_second_pass_with_nothing_changed_sends_only_list_requests(
    seeded: str, moto_endpoint: str, tmp_path: Path
) -> None:
    # --mode objects: the listing alone (auto adds one pointer GET: test_release_mirror.py)
    with S3Proxy(moto_endpoint) as proxy:
        assert sync(seeded, tmp_path, proxy.endpoint_url, "--mode", "objects").code == 0
        proxy.reset()
        run = sync(seeded, tmp_path, proxy.endpoint_url, "--mode", "objects")
        counts = proxy.counts()
    assert run.code == 0
    assert run.report["downloaded"] == 0
    assert run.report["unchanged"] == 7
    assert counts.get("LIST", 0) >= 1
    assert {op for op in counts if not op.startswith("LIST")} == set(), counts


def test_same_size_edit_is_caught(s3: Any, seeded: str, moto_endpoint: str, tmp_path: Path) -> None:
    sync(seeded, tmp_path, moto_endpoint)
    edited = NESTED["analytics/daily.py"].replace(b"daily", b"DAILY")
    assert len(edited) == len(NESTED["analytics/daily.py"])
    s3.put_object(Bucket=seeded, Key=PREFIX + "analytics/daily.py", Body=edited)
    run = sync(seeded, tmp_path, moto_endpoint)
    assert (run.report["downloaded"], run.report["unchanged"]) == (1, 6)
    assert (tmp_path / "analytics/daily.py").read_bytes() == edited


def test_deletes_leave_tombstones_and_remove_empty_dirs(
    s3: Any, seeded: str, moto_endpoint: str, tmp_path: Path
) -> None:
    sync(seeded, tmp_path, moto_endpoint)
    (tmp_path / "analytics" / "mine.txt").write_text("placed by hand")
    s3.delete_object(Bucket=seeded, Key=PREFIX + "ml/train/deep/er/still.py")
    s3.delete_object(Bucket=seeded, Key=PREFIX + "analytics/sql/report.sql")
    run = sync(seeded, tmp_path, moto_endpoint)
    assert run.code == 0
    assert sorted(t["path"] for t in run.report["tombstones"]) == [
        "analytics/sql/report.sql",
        "ml/train/deep/er/still.py",
    ]
    assert not (tmp_path / "ml/train/deep").exists()
    assert not (tmp_path / "analytics/sql").exists()
    assert (tmp_path / "analytics/mine.txt").exists()  # not ours: never deleted
    state = orjson.loads((tmp_path / ".dagmirror/state.json").read_bytes())
    assert {t["key"] for t in state["tombstones"]} == {
        PREFIX + "ml/train/deep/er/still.py",
        PREFIX + "analytics/sql/report.sql",
    }
    assert all(t["etag"] and t["deleted_at"] > 0 for t in state["tombstones"])


def test_empty_listing_trips_the_guard_and_keeps_every_file(
    s3: Any, seeded: str, moto_endpoint: str, tmp_path: Path
) -> None:
    sync(seeded, tmp_path, moto_endpoint)
    for key in NESTED:
        s3.delete_object(Bucket=seeded, Key=PREFIX + key)
    run = sync(seeded, tmp_path, moto_endpoint)
    assert run.code == 3
    assert "listing is empty" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert read_tree(tmp_path) == NESTED


def test_mass_delete_is_refused_but_downloads_still_apply_and_can_be_allowed(
    s3: Any, seeded: str, moto_endpoint: str, tmp_path: Path
) -> None:
    sync(seeded, tmp_path, moto_endpoint)
    for key in list(NESTED)[:5]:
        s3.delete_object(Bucket=seeded, Key=PREFIX + key)
    s3.put_object(Bucket=seeded, Key=PREFIX + "new.py", Body=b"new")
    run = sync(seeded, tmp_path, moto_endpoint)
    assert run.code == 3
    assert run.report["downloaded"] == 1
    assert run.report["deleted"] == 0
    assert len(read_tree(tmp_path)) == 8
    run = sync(seeded, tmp_path, moto_endpoint, "--allow-mass-delete")
    assert (run.code, run.report["deleted"]) == (0, 5)
    run = sync(seeded, tmp_path, moto_endpoint, "--max-delete-fraction", "0.1")
    assert run.code == 0


def test_hostile_keys_are_rejected_reported_and_never_written(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    hostile = [
        "../escape.py",
        "a/../../escape2.py",
        "/abs.py",
        "a//b.py",
        "back\\slash.py",
        "ctl\x01char.py",
        "x" * 256 + ".py",
        ".dagmirror/state.json",
        "./dot.py",
    ]
    for rel in hostile:
        s3.put_object(Bucket=bucket, Key=PREFIX + rel, Body=b"pwned")
    s3.put_object(Bucket=bucket, Key=PREFIX + "ok.py", Body=b"fine")
    dest = tmp_path / "d" / "dags"
    run = sync(bucket, dest, moto_endpoint)
    assert run.code == 0, run.stderr
    assert read_tree(dest) == {"ok.py": b"fine"}
    assert sorted(r["key"] for r in run.report["rejections"]) == sorted(PREFIX + r for r in hostile)
    assert run.report["rejected"] == len(hostile)
    assert [p.name for p in tmp_path.rglob("*escape*")] == []
    messages = [orjson.loads(line)["msg"] for line in run.stderr.splitlines() if line.startswith("{")]
    for rel in hostile:
        logged = [m for m in messages if m.startswith(f"rejected key {PREFIX + rel!r}: ")]
        assert len(logged) == 1, (rel, messages)  # logged once, with the reason after the colon


def test_file_directory_collision_rejects_the_file_deterministically(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    put_all(
        s3, bucket, PREFIX, {"pkg": b"file", "pkg/mod.py": b"module", "team/x": b"f", "team/x/y.py": b"y"}
    )
    run = sync(bucket, tmp_path, moto_endpoint)
    assert run.code == 0
    assert read_tree(tmp_path) == {"pkg/mod.py": b"module", "team/x/y.py": b"y"}
    assert sorted(r["key"] for r in run.report["rejections"]) == [PREFIX + "pkg", PREFIX + "team/x"]


def test_planted_symlinks_never_redirect_a_write_outside_dest(
    s3: Any, seeded: str, moto_endpoint: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_text("precious")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "ml").symlink_to(outside, target_is_directory=True)  # a directory the mirror must create
    (dest / "top.py").symlink_to(outside / "target")  # a file the mirror must write
    run = sync(seeded, dest, moto_endpoint)
    assert run.code == 1
    assert sorted(f["key"] for f in run.report["failures"]) == [
        PREFIX + "ml/train/deep/er/still.py",
        PREFIX + "ml/train/train_dag.py",
    ]
    assert "symlink" in run.report["failures"][0]["error"]
    assert sorted(p.name for p in outside.iterdir()) == ["target"]
    assert (outside / "target").read_text() == "precious"
    assert not (dest / "top.py").is_symlink()
    assert (dest / "top.py").read_bytes() == NESTED["top.py"]


def test_local_tampering_is_detected_and_restored(seeded: str, moto_endpoint: str, tmp_path: Path) -> None:
    sync(seeded, tmp_path, moto_endpoint)
    (tmp_path / "top.py").write_bytes(b"import os; os.system('evil')\n")
    (tmp_path / "ml/train/train_dag.py").unlink()
    same_size = tmp_path / "analytics/daily.py"
    same_size.write_bytes(b"X" * len(NESTED["analytics/daily.py"]))
    run = sync(seeded, tmp_path, moto_endpoint)
    assert run.code == 0
    assert (run.report["downloaded"], run.report["restored"]) == (3, 3)
    assert read_tree(tmp_path) == NESTED


def test_include_and_exclude_globs(seeded: str, moto_endpoint: str, tmp_path: Path) -> None:
    run = sync(seeded, tmp_path, moto_endpoint, "--include", "*.py", "--exclude", "ml/*")
    assert run.code == 0
    assert set(read_tree(tmp_path)) == {"top.py", "analytics/daily.py"}
    assert run.report["excluded"] == 5


def test_dry_run_reports_and_changes_nothing(seeded: str, moto_endpoint: str, tmp_path: Path) -> None:
    dest = tmp_path / "never"
    run = sync(seeded, dest, moto_endpoint, "--dry-run")
    assert (run.code, run.report["downloaded"], run.report["dry_run"]) == (0, 7, True)
    assert not dest.exists()


def test_kill_9_mid_pass_leaves_no_torn_file_and_resume_skips_installed_files(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    files = {f"t{i % 4}/f{i:03}.py": (f"# dag {i}\n" * (50 + i)).encode() for i in range(160)}
    put_all(s3, bucket, PREFIX, files)
    dest = tmp_path / "dags"
    with S3Proxy(moto_endpoint) as proxy:
        proxy.set_fault(
            lambda req: (
                Fault(status=None, delay=0.03)
                if req.method == "GET" and "list-type" not in req.query
                else None
            )
        )
        cmd = [sys.executable, "-m", "dagmirror", "sync", f"s3://{bucket}/{PREFIX}", str(dest)]
        cmd += ["--endpoint-url", proxy.endpoint_url, "--concurrency", "4"]
        child = subprocess.Popen(
            cmd, env=s3_env(proxy.endpoint_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(read_tree(dest) if dest.exists() else {}) < 40:
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        partial = read_tree(dest)
        assert 40 <= len(partial) < len(files)
        assert all(files[p] == body for p, body in partial.items())  # nothing torn, nothing foreign
        proxy.set_fault(None)
        proxy.reset()
        # --mode objects: every GET counted below is a file's (auto adds one pointer GET)
        run = dagmirror(
            "sync",
            f"s3://{bucket}/{PREFIX}",
            dest,
            "--json",
            "--mode",
            "objects",
            endpoint=proxy.endpoint_url,
        )
        gets = proxy.counts().get("GET", 0)
    assert run.code == 0, run.stderr
    assert read_tree(dest) == files
    assert gets <= len(files) - len(partial)  # what was installed before the kill is not fetched again
    assert list((dest / ".dagmirror/tmp").iterdir()) == []


def test_missing_bucket_is_one_clear_line_and_exit_2(moto_endpoint: str, tmp_path: Path) -> None:
    run = dagmirror("sync", "s3://no-such-bucket-here/dags", tmp_path, endpoint=moto_endpoint)
    assert run.code == 2
    assert run.stderr.strip().count("\n") == 0
    assert "bucket does not exist" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["s3:/bucket/x"], "s3://bucket/prefix"),
        (["http://bucket/x"], "s3://bucket/prefix"),
        (["s3://Bad_Bucket!/x"], "invalid bucket name"),
        (["s3://bkt/x", "--endpoint-url", "ftp://host"], "endpoint URL"),
        (["s3://bkt/x", "--endpoint-url", "http://h:notaport"], "endpoint URL"),
        (["s3://bkt/x", "--concurrency", "0"], "concurrency"),
        (["s3://bkt/x", "--max-delete-fraction", "2"], "max-delete-fraction"),
    ],
)
def test_bad_input_is_a_usage_error_with_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    run = dagmirror("sync", args[0], tmp_path / "d", *args[1:], endpoint="http://127.0.0.1:9")
    assert run.code == 2
    assert needle in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "d").exists()


def test_unreachable_endpoint_fails_cleanly_with_exit_1(tmp_path: Path) -> None:
    run = dagmirror("sync", "s3://bkt/x", tmp_path, endpoint="http://127.0.0.1:9")
    assert run.code == 1
    assert "nothing deleted" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_no_secret_appears_in_output_or_state(seeded: str, moto_endpoint: str, tmp_path: Path) -> None:
    secret, token = "sEcReT+KeY/do-not-print-0123456789", "SeSsIoN-ToKeN-do-not-print"
    env = s3_env(moto_endpoint) | {"AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": token}
    runs = [
        dagmirror(
            "sync", f"s3://{seeded}/{PREFIX}", tmp_path, "--json", "-vv", endpoint=moto_endpoint, env=env
        ),
        dagmirror("sync", "s3://no-such-bucket-x/", tmp_path / "x", "-vv", endpoint=moto_endpoint, env=env),
        dagmirror(
            "sync",
            "s3://bkt/",
            tmp_path / "y",
            "-vv",
            endpoint="http://user:pw-do-not-print@127.0.0.1:9",
            env=env,
        ),
    ]
    assert runs[0].code == 0
    state = (tmp_path / ".dagmirror/state.json").read_text()
    for text in [state] + [r.stdout + r.stderr for r in runs]:
        assert secret not in text
        assert token not in text
        assert "pw-do-not-print" not in text
