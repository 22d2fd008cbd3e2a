"""`dagmirror deploy --airflow-check` with a real Apache Airflow (the venv of the end-to-end test): DagBag
parses the environment as it would be after the deploy; import errors or duplicated dag_ids refuse it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .airflow_env import AIRFLOW_VERSION, airflow_python
from .helpers import dagmirror, put_all

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(900)]


def dag(dag_id: str, head: str = "") -> bytes:
    return f'''{head}
from datetime import datetime

from airflow.sdk import DAG
from airflow.providers.standard.operators.bash import BashOperator

with DAG(dag_id="{dag_id}", start_date=datetime(2024, 1, 1), schedule=None):
    BashOperator(task_id="step", bash_command="echo hi")
'''.encode()


def test_real_airflow_refuses_import_errors_and_dag_ids_taken_by_other_files_of_the_environment(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    python = str(airflow_python())
    env_files = {
        "team/daily.py": dag("daily_report"),
        "common/__init__.py": b"",
        "common/names.py": b"OWNER = 'x'\n",
    }
    put_all(s3, bucket, "dags/production/", env_files)

    def deploy(name: str, body: bytes) -> Any:
        (tmp_path / name).write_bytes(body)
        return dagmirror(
            "deploy", tmp_path / name, "--env", "production", "--bucket-url", f"s3://{bucket}/dags/",
            "--airflow-check", "--airflow-python", python, "--json", endpoint=moto_endpoint,
        )  # fmt: skip

    clash = deploy("copy_of_daily.py", dag("daily_report"))
    assert clash.code == 4, clash.stderr
    assert clash.report["problems"] == [
        "dag_id 'daily_report' is defined by more than one file: copy_of_daily.py, team/daily.py"
    ]
    broken = deploy("broken.py", dag("broken", head="import no_such_module_anywhere"))
    assert broken.code == 4, broken.stderr
    assert broken.report["problems"] == [
        "broken.py: import error: ModuleNotFoundError: No module named 'no_such_module_anywhere'"
    ]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="dags/production/")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(f"dags/production/{rel}" for rel in env_files)

    good = deploy("weekly.py", dag("weekly_report", head="from common.names import OWNER"))  # imports the env
    assert good.code == 0, good.stderr
    airflow = good.report["validation"]["airflow"]
    assert airflow == {"version": AIRFLOW_VERSION, "files": 2, "dags": 2}
