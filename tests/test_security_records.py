"""Deploy records are whatever a bucket writer put under `metadata/deploys/` (docs/security.md, "Bucket
writers"): `rollback` counts only the exact record of a deploy and checks it against the ask; `history`
shows every record as typed, terminal-safe text and never reads a huge one."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from dagmirror.devtools.corpus import create_bucket

from .helpers import Run, dagmirror, write_tree

RECORDS = "metadata/deploys/production/"


def cli(command: str, bucket: str, endpoint: str, *args: str | Path) -> Run:
    return dagmirror(
        command, *args, "--env", "production", "--bucket-url", f"s3://{bucket}/dags/", endpoint=endpoint
    )


def three_deploys(s3: Any, endpoint: str, tmp_path: Path) -> tuple[str, list[dict[str, Any]]]:
    """A versioned bucket where a.py was deployed as v1, v2, v3: the bucket and the three reports."""
    bucket = f"records-{uuid.uuid4().hex[:12]}"
    create_bucket(s3, bucket, versioned=True)
    reports = []
    for n in (1, 2, 3):
        dags = write_tree(tmp_path / f"v{n}", {"a.py": f"A = {n}\n".encode()})
        run = cli("deploy", bucket, endpoint, dags, "--json")
        assert run.code == 0, run.stderr
        reports.append(run.report)
    return bucket, reports


def record_of(s3: Any, bucket: str, report: dict[str, Any]) -> dict[str, Any]:
    key = str(report["record"]).removeprefix(f"s3://{bucket}/")
    return dict(orjson.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def a_py(s3: Any, bucket: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key="dags/production/a.py")["Body"].read())


def test_rollback_counts_only_the_exact_record_of_a_deploy_not_planted_lookalikes(
    s3: Any, moto_endpoint: str, tmp_path: Path
) -> None:
    bucket, (first, second, _) = three_deploys(s3, moto_endpoint, tmp_path)
    planted = record_of(s3, bucket, second) | {"deploy_id": first["deploy_id"]}  # names release 2
    for key in (f"zz/shadow-{first['deploy_id']}", f"zz/99990101T000000.000000Z-{first['deploy_id']}.json"):
        s3.put_object(Bucket=bucket, Key=RECORDS + key, Body=orjson.dumps(planted))
    back = cli("rollback", bucket, moto_endpoint, "--to", first["deploy_id"])
    assert back.code == 0, back.stderr
    assert a_py(s3, bucket) == b"A = 1\n"


@pytest.mark.parametrize("planted_as", ["a second record of the deploy", "the record of another id"])
def test_rollback_refuses_two_records_of_one_deploy_and_a_record_about_another_deploy(
    s3: Any, moto_endpoint: str, tmp_path: Path, planted_as: str
) -> None:
    bucket, (first, second, _) = three_deploys(s3, moto_endpoint, tmp_path)
    if planted_as == "a second record of the deploy":
        asked, planted = first["deploy_id"], record_of(s3, bucket, second) | {"deploy_id": first["deploy_id"]}
        why = f"more than one record claims deploy {asked}"
    else:  # a well-named record whose contents say it is first's
        asked, planted = "0123456789ab", record_of(s3, bucket, first)
        why = f"is about deploy '{first['deploy_id']}'"
    key = f"{RECORDS}99990101T000000.000000Z-{asked}.json"
    s3.put_object(Bucket=bucket, Key=key, Body=orjson.dumps(planted))
    back = cli("rollback", bucket, moto_endpoint, "--to", asked)
    assert back.code == 2
    assert why in back.stderr
    assert a_py(s3, bucket) == b"A = 3\n"


def test_history_shows_planted_records_as_plain_text_and_skips_a_huge_one(
    s3: Any, moto_endpoint: str, tmp_path: Path
) -> None:
    bucket, (first, _, third) = three_deploys(s3, moto_endpoint, tmp_path)
    ids = ["0000000000a1", "0000000000a2", "0000000000a3"]
    escape = record_of(s3, bucket, first) | {
        "deploy_id": ids[0],
        "host": "x\x1b]0;pwned\x07\x1b[2J\ndagmirror: error: forged",
    }
    wrong = record_of(s3, bucket, first) | {"deploy_id": ids[1], "time": 1e20, "who": "x"}
    planted = {ids[0]: orjson.dumps(escape), ids[1]: orjson.dumps(wrong), ids[2]: b" " * (40 << 20)}
    for n, (deploy_id, body) in enumerate(planted.items()):
        s3.put_object(
            Bucket=bucket, Key=f"{RECORDS}2099010{n + 1}T000000.000000Z-{deploy_id}.json", Body=body
        )
    shown = cli("history", bucket, moto_endpoint)
    assert shown.code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 6, shown.stdout
    assert not any(c in shown.stdout for c in "\x1b\x07")
    assert [line.split()[0] for line in lines[:2]] == [ids[2], ids[1]]
    assert ids[0] in lines[2]
    assert "@x?]0;pwned??[2J?dagmirror: error: forged" in lines[2]
    assert "not read" in lines[0]
    assert "unreadable record" in lines[1]
    assert third["deploy_id"] in lines[3]
    listed = cli("history", bucket, moto_endpoint, "--json").report["deploys"]
    assert [d.get("error", "")[:10] for d in listed[:2]] == ["record ove", "unreadable"]
    assert listed[2]["host"] == escape["host"]  # --json keeps the text; JSON escapes the controls
