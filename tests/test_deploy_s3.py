"""`dagmirror deploy`, `history`, `rollback` and `promote` against a real S3 server (moto server over HTTP on
loopback, bucket versioning on), driven through the CLI as a developer or CI job runs them."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from dagmirror.devtools.corpus import create_bucket
from dagmirror.devtools.proxy import Fault, ProxyRequest, S3Proxy
from dagmirror.devtools.servers import s3_env
from dagmirror.verify import xxh3_hex

from .helpers import Run, dagmirror, git, read_tree, write_tree

MOTO_ARN = "arn:aws:sts::123456789012:user/moto"  # what moto's STS says these credentials are
FILES = {
    "a.py": b"from datetime import datetime\n\nA = 1\n",
    "team/b.py": b"B = 2\n",
    "team/sql/report.sql": b"select 1;\n",
    ".airflowignore": b"tests/\n",
}


@pytest.fixture
def versioned(s3: Any) -> str:
    name = f"deploys-{uuid.uuid4().hex[:12]}"
    create_bucket(s3, name, versioned=True)
    return name


def cli(
    command: str, bucket: str, endpoint: str, *args: str | Path, env: dict[str, str] | None = None
) -> Run:
    return dagmirror(
        command, *args, "--bucket-url", f"s3://{bucket}/dags/", "--json", endpoint=endpoint, env=env
    )


def live(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {
        o["Key"][len(prefix) :]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed
    }


def versions(s3: Any, bucket: str) -> int:
    listed = s3.list_object_versions(Bucket=bucket)
    return len(listed.get("Versions", [])) + len(listed.get("DeleteMarkers", []))


def stored_record(s3: Any, report: dict[str, Any]) -> dict[str, Any]:
    bucket, _, key = str(report["record"]).removeprefix("s3://").partition("/")
    return dict(orjson.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_deploying_a_folder_and_a_file_uploads_with_xxh3_and_records_who_what_and_which_versions(
    s3: Any, versioned: str, moto_endpoint: str, tmp_path: Path
) -> None:
    repo = write_tree(tmp_path / "repo", {f"dags/{rel}": body for rel, body in FILES.items()})
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "dags")
    solo = write_tree(tmp_path / "elsewhere", {"solo.py": b"S = 3\n"}) / "solo.py"

    folder = cli("deploy", versioned, moto_endpoint, repo / "dags", "--env", "dev")
    assert folder.code == 0, folder.stderr
    single = cli("deploy", versioned, moto_endpoint, solo, "--env", "dev")
    assert single.code == 0, single.stderr

    assert live(s3, versioned, "dags/dev/") == FILES | {
        "solo.py": b"S = 3\n"
    }  # a file deploy deletes nothing
    report = folder.report
    record = stored_record(s3, report)
    assert record == {k: v for k, v in report.items() if k not in ("dry_run", "record", "record_error")}
    assert (record["kind"], record["env"], record["result"], record["scopes"]) == (
        "deploy",
        "dev",
        "ok",
        [""],
    )
    assert record["who"]["identity"] == MOTO_ARN
    assert record["who"]["user"]
    assert record["host"]
    assert record["git"] == {"commit": git(repo, "rev-parse", "HEAD").strip(), "dirty": False}
    assert record["duration"] > 0
    assert record["validation"]["python_files"] == 2
    for f in record["files"]:
        head = s3.head_object(Bucket=versioned, Key=f["key"])
        body = FILES[f["path"]]
        assert (f["action"], f["size"], f["xxh3"]) == ("upload", len(body), xxh3_hex(body))
        assert f["version_id"] == head["VersionId"]
        assert head["Metadata"] == {"xxh3": xxh3_hex(body)}
    assert sorted(f["path"] for f in record["files"]) == sorted(FILES)
    assert single.report["scopes"] == []


def test_redeploying_unchanged_files_sends_no_write_request(
    versioned: str, moto_endpoint: str, tmp_path: Path
) -> None:
    dags = write_tree(tmp_path, FILES)
    assert cli("deploy", versioned, moto_endpoint, dags, "--env", "dev").code == 0
    with S3Proxy(moto_endpoint) as proxy:
        run = cli(
            "deploy", versioned, proxy.endpoint_url, dags, "--env", "dev", env=s3_env(proxy.endpoint_url)
        )
        counts = proxy.counts()
    assert run.code == 0, run.stderr
    assert (run.report["result"], run.report["record"]) == ("unchanged", None)
    assert run.report["counts"]["unchanged"] == len(FILES)
    assert not {op for op in counts if op.startswith(("PUT", "DELETE"))}, counts


def test_a_syntax_error_refuses_the_deploy_with_file_and_line_and_uploads_nothing(
    s3: Any, versioned: str, moto_endpoint: str, tmp_path: Path
) -> None:
    dags = write_tree(tmp_path, FILES | {"team/broken.py": b"x = 1\nif x\n    pass\n"})
    run = cli("deploy", versioned, moto_endpoint, dags, "--env", "production")
    assert run.code == 4
    assert "team/broken.py:2: expected ':'" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.report == {"result": "refused", "exit": 4, "problems": ["team/broken.py:2: expected ':'"]}
    assert versions(s3, versioned) == 0  # not one file, not even a record


def test_local_names_the_mirror_would_reject_are_refused_before_any_upload(
    s3: Any, versioned: str, moto_endpoint: str, tmp_path: Path
) -> None:
    dags = write_tree(tmp_path / "dags", {"ok.py": b"ok = 1\n", "back\\slash.py": b"x", "ctl\x01.py": b"x"})
    write_tree(dags, {".dagmirror/state.json": b"{}"})
    with open(os.path.join(os.fsencode(dags), b"latin1-\xe9.py"), "wb") as fh:  # not UTF-8
        fh.write(b"x = 1\n")
    run = cli("deploy", versioned, moto_endpoint, dags, "--env", "dev")
    assert run.code == 4
    problems = run.report["problems"]
    for reason in ("backslash in key", "control character", "reserved for dagmirror", "not valid UTF-8"):
        assert sum(reason in p for p in problems) == 1, (reason, problems)
    assert len(problems) == 4
    assert versions(s3, versioned) == 0


def test_a_directory_deploy_deletes_removed_files_and_the_guard_stops_mass_removal(
    s3: Any, versioned: str, moto_endpoint: str, tmp_path: Path
) -> None:
    files = {f"team/dag_{i}.py": f"N = {i}\n".encode() for i in range(6)}
    dags = write_tree(tmp_path, files)
    assert cli("deploy", versioned, moto_endpoint, dags, "--env", "dev").code == 0
    (dags / "team/dag_0.py").unlink()
    run = cli("deploy", versioned, moto_endpoint, dags, "--env", "dev")
    assert run.code == 0, run.stderr
    assert [(f["path"], f["action"]) for f in run.report["files"] if f["action"] != "unchanged"] == [
        ("team/dag_0.py", "delete")
    ]
    assert sorted(live(s3, versioned, "dags/dev/")) == sorted(files)[1:]

    for i in range(1, 5):
        (dags / f"team/dag_{i}.py").unlink()
    (dags / "team/new.py").write_bytes(b"NEW = 1\n")
    before = versions(s3, versioned)
    run = cli("deploy", versioned, moto_endpoint, dags, "--env", "dev")
    assert run.code == 3
    assert "would delete 4 of the 5 files" in run.stderr
    assert versions(s3, versioned) == before  # refused as a whole: the new file is not uploaded either
    run = cli("deploy", versioned, moto_endpoint, dags, "--env", "dev", "--allow-mass-delete")
    assert run.code == 0, run.stderr
    assert sorted(live(s3, versioned, "dags/dev/")) == ["team/dag_5.py", "team/new.py"]


def test_history_lists_deploys_newest_first_and_rollback_restores_byte_identical_content(
    # the versioned path (deploys from before releases); release rollbacks: test_release_publish.py
    s3: Any,
    versioned: str,
    moto_endpoint: str,
    tmp_path: Path,
) -> None:
    dags = write_tree(tmp_path, FILES)
    first = cli("deploy", versioned, moto_endpoint, dags, "--env", "production", "--no-releases")
    (dags / "a.py").write_bytes(b"A = 'broken in prod'\n")
    (dags / "team/b.py").unlink()
    (dags / "team/c.py").write_bytes(b"C = 3\n")
    second = cli("deploy", versioned, moto_endpoint, dags, "--env", "production", "--no-releases")
    assert (first.code, second.code) == (0, 0)

    back = cli(
        "rollback",
        versioned,
        moto_endpoint,
        "--env",
        "production",
        "--to",
        first.report["deploy_id"],
        "--no-releases",
    )
    assert back.code == 0, back.stderr
    assert live(s3, versioned, "dags/production/") == FILES
    assert back.report["kind"] == "rollback"
    assert back.report["rollback_of"] == first.report["deploy_id"]
    restored = {f["path"]: f for f in back.report["files"]}
    assert (
        restored["a.py"]["source_version"]
        == {f["path"]: f for f in first.report["files"]}["a.py"]["version_id"]
    )
    assert restored["team/c.py"]["action"] == "delete"

    history = cli("history", versioned, moto_endpoint, "--env", "production")
    assert history.code == 0, history.stderr
    listed = history.report["deploys"]
    assert [d["deploy_id"] for d in listed] == [r.report["deploy_id"] for r in (back, second, first)]
    assert [d["kind"] for d in listed] == ["rollback", "deploy", "deploy"]
    assert listed[0]["origin"] == {"rollback_of": first.report["deploy_id"]}
    assert listed[1]["counts"] == {"upload": 2, "copy": 0, "unchanged": 2, "delete": 1, "failed": 0}


def test_rollback_without_bucket_versioning_is_a_clear_error_and_changes_nothing(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    deployed = cli(
        "deploy", bucket, moto_endpoint, write_tree(tmp_path, FILES), "--env", "dev", "--no-releases"
    )
    assert deployed.code == 0, deployed.stderr
    before = live(s3, bucket, "")
    run = cli(
        "rollback",
        bucket,
        moto_endpoint,
        "--env",
        "dev",
        "--to",
        deployed.report["deploy_id"],
        "--no-releases",
    )
    assert run.code == 2
    assert (
        run.stderr.strip()
        == f"dagmirror: error: rollback needs versioning on s3://{bucket} (it is off); nothing was changed"
    )
    assert live(s3, bucket, "") == before


def test_promote_copies_the_exact_versions_of_one_environment_to_another(
    s3: Any, versioned: str, moto_endpoint: str, tmp_path: Path
) -> None:
    off = "--no-releases"  # the plain-version path; release promotes are in test_release_publish.py
    staged = cli(
        "deploy", versioned, moto_endpoint, write_tree(tmp_path / "staging", FILES), "--env", "staging", off
    )
    old = FILES | {"a.py": b"A = 0\n", "retired.py": b"R = 1\n"}
    prod = write_tree(tmp_path / "production", old)
    cli("deploy", versioned, moto_endpoint, prod, "--env", "production", off)

    run = cli("promote", versioned, moto_endpoint, "--from", "staging", "--to", "production", off)
    assert run.code == 0, run.stderr
    assert live(s3, versioned, "dags/production/") == live(s3, versioned, "dags/staging/") == FILES
    staging_versions = {f["path"]: f["version_id"] for f in staged.report["files"]}
    copies = {f["path"]: f for f in run.report["files"] if f["action"] == "copy"}
    assert list(copies) == ["a.py"]  # the other files already held the same bytes
    assert copies["a.py"]["source_version"] == staging_versions["a.py"]
    assert copies["a.py"]["source_key"] == "dags/staging/a.py"
    assert [f["path"] for f in run.report["files"] if f["action"] == "delete"] == ["retired.py"]
    assert run.report["promoted_from"] == "staging"
    head = s3.head_object(Bucket=versioned, Key="dags/production/a.py")
    assert head["Metadata"] == {"xxh3": xxh3_hex(FILES["a.py"])}  # copied with the object's metadata


def test_the_mirror_verifies_the_deployed_xxh3_and_refuses_a_tampered_object(
    s3: Any, versioned: str, moto_endpoint: str, tmp_path: Path
) -> None:
    assert (
        cli("deploy", versioned, moto_endpoint, write_tree(tmp_path / "src", FILES), "--env", "dev").code == 0
    )
    dest = tmp_path / "mirror"
    # The plain objects' check (a release mirror never reads the plain objects: see test_release_mirror).
    objects = ("--json", "--mode", "objects")
    synced = dagmirror("sync", f"s3://{versioned}/dags/dev/", dest, *objects, endpoint=moto_endpoint)
    assert synced.code == 0, synced.stderr
    assert read_tree(dest) == FILES

    key = "dags/dev/a.py"
    meta = s3.head_object(Bucket=versioned, Key=key)["Metadata"]
    s3.put_object(Bucket=versioned, Key=key, Body=b"import os; os.system('evil')\n", Metadata=meta)
    run = dagmirror("sync", f"s3://{versioned}/dags/dev/", dest, *objects, endpoint=moto_endpoint)
    assert run.code == 1, run.stderr
    (failure,) = run.report["failures"]
    assert failure["key"] == key
    assert "does not match x-amz-meta-xxh3" in failure["error"]
    assert read_tree(dest) == FILES  # the deployed bytes stay; the tampered ones never land


def test_a_write_that_keeps_failing_is_reported_and_the_record_names_the_live_versions(
    s3: Any, versioned: str, moto_endpoint: str, tmp_path: Path
) -> None:
    dags = write_tree(tmp_path, FILES)
    first = cli("deploy", versioned, moto_endpoint, dags, "--env", "dev")
    (dags / "a.py").write_bytes(b"A = 2\n")
    (dags / "team/b.py").write_bytes(b"B = 3\n")

    def fail_a(request: ProxyRequest) -> Fault | None:
        broken = request.method == "PUT" and request.path.endswith("/dags/dev/a.py")
        return Fault(status=500, code="InternalError") if broken else None

    with S3Proxy(moto_endpoint) as proxy:
        proxy.set_fault(fail_a)
        run = cli(
            "deploy", versioned, proxy.endpoint_url, dags, "--env", "dev", env=s3_env(proxy.endpoint_url)
        )
        attempts = proxy.injected()
    assert run.code == 1
    assert sum(attempts.values()) == 5  # the default RetryPolicy: five attempts, then reported
    files = {f["path"]: f for f in run.report["files"]}
    was = {f["path"]: f["version_id"] for f in first.report["files"]}
    assert (files["a.py"]["action"], files["a.py"]["version_id"]) == ("failed", was["a.py"])
    assert "InternalError" in files["a.py"]["error"]
    assert files["team/b.py"]["action"] == "upload"
    record = stored_record(s3, run.report)
    assert record["result"] == "partial"
    live_now = {
        v["Key"].removeprefix("dags/dev/"): v["VersionId"]
        for v in s3.list_object_versions(Bucket=versioned, Prefix="dags/dev/")["Versions"]
        if v["IsLatest"]
    }
    assert {f["path"]: f["version_id"] for f in record["files"]} == live_now


def test_no_secret_appears_in_a_record_or_the_output(
    s3: Any, versioned: str, moto_endpoint: str, tmp_path: Path
) -> None:
    secret, token = "sEcReT+KeY/do-not-print-0123456789", "SeSsIoN-ToKeN-do-not-print"
    env = s3_env(moto_endpoint) | {"AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": token}
    run = cli("deploy", versioned, moto_endpoint, write_tree(tmp_path, FILES), "--env", "dev", "-vv", env=env)
    assert run.code == 0, run.stderr
    record = (
        s3.get_object(Bucket=versioned, Key=run.report["record"].split("/", 3)[3])["Body"].read().decode()
    )
    for text in (record, run.stdout, run.stderr):
        assert secret not in text
        assert token not in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--env", "prod"],
            "unknown environment 'prod': configured environments are dev, staging, production",
        ),
        (["--env", "dev", "--bucket-url", "s3:/x"], "bucket_url: source must look like s3://bucket/prefix"),
        (
            ["--env", "dev", "--airflow-check", "--airflow-python", sys.executable],
            "Airflow is not importable",
        ),
    ],
)
def test_bad_input_is_a_usage_error_with_one_clear_line(
    versioned: str, moto_endpoint: str, tmp_path: Path, args: list[str], needle: str
) -> None:
    run = dagmirror(
        "deploy",
        write_tree(tmp_path, FILES),
        "--bucket-url",
        f"s3://{versioned}/dags/",
        *args,
        endpoint=moto_endpoint,
    )
    assert run.code == 2
    assert run.stderr.startswith("dagmirror: error: ")
    assert needle in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_environments_and_budgets_come_from_the_deploy_table_of_the_config_file(
    s3: Any, versioned: str, moto_endpoint: str, tmp_path: Path
) -> None:
    config = tmp_path / "dagmirror.toml"
    config.write_text(
        f"""
[deploy]
bucket_url = "s3://{versioned}/airflow/"
environments = ["qa", "live"]

[deploy.env.live]
max_files = 3
"""
    )
    dags = write_tree(tmp_path / "dags", FILES)
    refused = dagmirror("deploy", dags, "--env", "live", "--config", config, endpoint=moto_endpoint)
    assert refused.code == 4
    assert "live would hold 4 files, over its budget of 3" in refused.stderr
    ok = dagmirror("deploy", dags, "--env", "qa", "--config", config, endpoint=moto_endpoint)
    assert ok.code == 0, ok.stderr
    assert live(s3, versioned, "airflow/qa/") == FILES
