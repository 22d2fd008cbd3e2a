"""DagmirrorBundle in real Airflow (3.3.2, and 3.0.6 for the oldest API) against moto server: a dag-processor
(sqlite, `airflow db migrate`) configured with `dag_bundle_config_list` records each release id as the DAG's
bundle_version; a run started on A gets A's files after B is deployed; concurrent pinned initialisations
agree. Airflow and dagmirror share a venv built by the test (tests/airflow_env.py: `bundle_python`)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .airflow_env import AIRFLOW_VERSION, OLDEST_VERSION, bundle_python
from .releases import publish

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(1200)]
PREFIX = "dags/prod/"
NAME = "production"
CONN = "dagmirror_s3"

# Builds the bundle the way the task runner does (DagBundlesManager().get_bundle(name, version)), initialises
# it and prints what it holds: its path, version and every file (one JSON line, marked).
SHOW_BUNDLE = r"""
import json, os, sys, logging
logging.disable(logging.CRITICAL)
from airflow.dag_processing.bundles.manager import DagBundlesManager
version = sys.argv[1] or None
bundle = DagBundlesManager().get_bundle(name=sys.argv[2], version=version)
bundle.initialize()
root = bundle.path
files = {}
for folder, dirs, names in os.walk(root):
    dirs[:] = [d for d in dirs if d != ".dagmirror"]  # a plain (objects mode) mirror's own records
    for name in names:
        path = os.path.join(folder, name)
        files[os.path.relpath(path, root)] = open(path).read()
current = bundle.get_current_version()
refused = None
if version:
    try:
        bundle.refresh()
        refused = False
    except Exception:
        refused = True
print("@@BUNDLE " + json.dumps({
    "path": str(root), "files": files, "versioned": bundle.supports_versioning,
    "version": getattr(current, "version", current), "type": type(current).__name__,
    "refresh_refused": refused,
}), flush=True)
"""


def dag_file(tag: str) -> bytes:
    return f'''from datetime import datetime

from airflow.sdk import DAG
from airflow.providers.standard.operators.bash import BashOperator

with DAG(dag_id="bundle_dag", start_date=datetime(2024, 1, 1), schedule=None, tags=["{tag}"]):
    BashOperator(task_id="step", bash_command="echo {tag}")
'''.encode()


def release_files(tag: str) -> dict[str, bytes]:
    return {"team/bundle_dag.py": dag_file(tag), "team/helper.txt": f"helper {tag}\n".encode()}


class Airflow:
    """One AIRFLOW_HOME with a sqlite DB and the bundle configured, run through the venv's python."""

    def __init__(self, home: Path, storage: Path, bucket: str, endpoint: str, version: str) -> None:
        self.python = bundle_python(version)
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        bundle = {"source": f"s3://{bucket}/{PREFIX}", "aws_conn_id": CONN}
        conn = {"conn_type": "aws", "login": "test", "password": "test"}
        conn["extra"] = {"endpoint_url": endpoint, "region_name": "us-east-1"}  # type: ignore[assignment]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW"))}
        self.env = env | {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Airflow skips rewriting a serialized DAG changed less than this ago (default 30 s): two
            # dag-processor runs a few seconds apart must each record what they parsed
            "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0",
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(storage),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                [{"name": NAME, "classpath": "dagmirror.bundle.DagmirrorBundle", "kwargs": bundle}]
            ),
            # the credentials and the endpoint come from the Airflow connection only: no AWS_* variable
            f"AIRFLOW_CONN_{CONN.upper()}": json.dumps(conn),
        }

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [str(self.python), "-m", "airflow", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout + out.stderr

    def bundle(self, version: str | None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(self.python), "-c", SHOW_BUNDLE, version or "", NAME],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.home / "airflow.db") as db:
            return db.execute(sql).fetchall()


def shown(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("@@BUNDLE ")]
    assert lines, out[-3000:] + err[-3000:]
    return dict(json.loads(lines[-1][len("@@BUNDLE ") :]))


def test_dag_processor_records_release_ids_as_bundle_versions_and_pinned_runs_keep_their_release(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    airflow = Airflow(tmp_path / "home", tmp_path / "bundles", bucket, moto_endpoint, AIRFLOW_VERSION)
    release_a = publish(s3, bucket, PREFIX, release_files("A"), seq=1)
    airflow.cli("db", "migrate")
    airflow.cli("dag-processor", "-n", "1")
    assert airflow.query("select name, version from dag_bundle") == [(NAME, release_a)]
    assert airflow.query("select dag_id, version_number, bundle_version from dag_version") == [
        ("bundle_dag", 1, release_a)
    ]

    airflow.cli("dags", "trigger", "bundle_dag")  # a run on A: it pins A (and keeps version 1 from reuse)
    assert airflow.query("select bundle_version from dag_run") == [(release_a,)]
    release_b = publish(s3, bucket, PREFIX, release_files("B"), seq=2)
    airflow.cli("dag-processor", "-n", "1")
    assert airflow.query("select name, version from dag_bundle") == [(NAME, release_b)]
    assert airflow.query("select version_number, bundle_version from dag_version order by 1") == [
        (1, release_a),
        (2, release_b),
    ]

    (pinned_run,) = airflow.query("select bundle_version from dag_run")[0]
    pinned, unpinned = shown(airflow.bundle(pinned_run)), shown(airflow.bundle(None))
    assert pinned["files"] == {p: b.decode() for p, b in release_files("A").items()}
    assert (pinned["version"], pinned["type"], pinned["versioned"]) == (release_a, "BundleVersion", True)
    assert pinned["path"] == str(tmp_path / "bundles" / NAME / "versions" / release_a)
    assert pinned["refresh_refused"] is True
    assert unpinned["files"] == {p: b.decode() for p, b in release_files("B").items()}
    assert (unpinned["version"], unpinned["versioned"]) == (release_b, True)


def test_two_processes_initialising_one_pinned_version_at_once_both_succeed_and_agree(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    airflow = Airflow(tmp_path / "home", tmp_path / "worker", bucket, moto_endpoint, AIRFLOW_VERSION)
    release_a = publish(s3, bucket, PREFIX, release_files("A"), seq=1)
    publish(s3, bucket, PREFIX, release_files("B"), seq=2)
    procs = [airflow.bundle(release_a) for _ in range(2)]  # a cold worker: nothing on disk yet
    first, second = (shown(p) for p in procs)
    assert first == second
    assert first["files"] == {p: b.decode() for p, b in release_files("A").items()}
    versions = tmp_path / "worker" / NAME / "versions"
    assert sorted(n for n in os.listdir(versions) if not n.startswith(".")) == [release_a]


@pytest.mark.parametrize("version", [OLDEST_VERSION, AIRFLOW_VERSION])
def test_current_version_is_a_plain_string_before_airflow_3_3_and_a_bundle_version_after(
    version: str, s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    airflow = Airflow(tmp_path / "home", tmp_path / "bundles", bucket, moto_endpoint, version)
    release = publish(s3, bucket, PREFIX, release_files("A"), seq=1)
    got = shown(airflow.bundle(None))
    assert got["version"] == release
    assert got["type"] == ("str" if version.startswith(("3.0.", "3.1.", "3.2.")) else "BundleVersion")
    assert got["files"] == {p: b.decode() for p, b in release_files("A").items()}


def test_an_environment_without_releases_is_an_unversioned_bundle(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    airflow = Airflow(tmp_path / "home", tmp_path / "bundles", bucket, moto_endpoint, AIRFLOW_VERSION)
    for path, body in release_files("plain").items():
        s3.put_object(Bucket=bucket, Key=PREFIX + path, Body=body)
    got = shown(airflow.bundle(None))
    assert (got["versioned"], got["version"]) == (False, None)
    assert got["files"] == {p: b.decode() for p, b in release_files("plain").items()}
