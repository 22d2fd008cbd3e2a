"""Real Airflow, end to end: `dagmirror run` mirrors DAGs from moto server; Airflow's DagBag parses the folder
while 50 rounds of edits, adds and deletes land in S3, and must never see a partial file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from dagmirror.devtools.servers import free_port, s3_env

from .airflow_env import parse_once, parses, start_parse_loop

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(600)]
PREFIX = "dags/dev/"


def dag_file(dag_id: str, version: int) -> bytes:
    """A valid DAG whose file ends in a long string literal: cut anywhere, it is a SyntaxError."""
    padding = "x" * (2000 + 997 * (version % 7))
    return f'''from datetime import datetime

from airflow.sdk import DAG
from airflow.providers.standard.operators.bash import BashOperator

with DAG(dag_id="{dag_id}", start_date=datetime(2024, 1, 1), schedule=None, tags=["v{version}"]):
    BashOperator(task_id="step", bash_command="echo {version}")

NOTES = """{padding}"""
'''.encode()


def wait_ready(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("dagmirror never became ready")


# How Airflow reports a file deleted between its listing and its read (not a torn file): Python's error, or
# its own "File not found: <path>".
DELETED_MID_PARSE = ("FileNotFoundError", "No such file", "File not found: ")


def test_airflow_parses_the_mirror_and_never_sees_a_partial_file(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    live = {f"team{i % 3}/dag_{i}.py": (f"e2e_{i}", 0) for i in range(12)}
    for rel, (dag_id, version) in live.items():
        s3.put_object(Bucket=bucket, Key=PREFIX + rel, Body=dag_file(dag_id, version))
    dest = tmp_path / "dags"
    port = free_port()
    cmd = [sys.executable, "-m", "dagmirror", "run", f"s3://{bucket}/{PREFIX}", str(dest)]
    cmd += [
        "--endpoint-url",
        moto_endpoint,
        "--interval",
        "0.3",
        "--jitter",
        "0",
        "--http",
        f"127.0.0.1:{port}",
    ]
    daemon = subprocess.Popen(
        cmd, env=s3_env(moto_endpoint), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_ready(port)
        first = parse_once(dest)
        assert first["dag_ids"] == sorted(d for d, _ in live.values())
        assert first["errors"] == {}

        stop, log = tmp_path / "stop", tmp_path / "parses.jsonl"
        parser = start_parse_loop(dest, stop, log)
        added: list[str] = []
        deleted: set[str] = set()  # files the bucket lost: a parse may find one gone, never one torn
        for n in range(50):
            rel = sorted(live)[n % len(live)]  # edit
            dag_id, version = live[rel]
            live[rel] = (dag_id, version + 1)
            s3.put_object(Bucket=bucket, Key=PREFIX + rel, Body=dag_file(dag_id, version + 1))
            rel = f"new/round_{n}.py"  # add
            live[rel] = (f"round_{n}", n)
            s3.put_object(Bucket=bucket, Key=PREFIX + rel, Body=dag_file(f"round_{n}", n))
            added.append(rel)
            if len(added) > 3:  # delete one added three rounds ago
                gone = added.pop(0)
                deleted.add(str(dest / gone))
                del live[gone]
                s3.delete_object(Bucket=bucket, Key=PREFIX + gone)
            time.sleep(0.15)
        expected = sorted(d for d, _ in live.values())
        deadline = time.monotonic() + 60
        while (final := parse_once(dest))["dag_ids"] != expected and time.monotonic() < deadline:
            time.sleep(0.5)
        stop.touch()
        parser.wait(timeout=120)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)

    records = parses(log.read_text())
    torn = [
        (p["t"], path, err[-200:])
        for p in records
        for path, err in p["errors"].items()
        if not (path in deleted and any(gone in err for gone in DELETED_MID_PARSE))
    ]
    assert len(records) >= 5, "the parse loop did not run while the mirror changed"
    assert torn == []
    assert final["dag_ids"] == expected
    assert final["errors"] == {}
    assert code == 0
