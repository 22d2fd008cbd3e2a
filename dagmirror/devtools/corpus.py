"""Deterministic DAG corpora: a few dozen realistic Airflow DAGs for the demo and tests, and large synthetic
trees (log-normal sizes, nested team folders) for benchmarks."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_TEAMS = {
    "analytics": [
        "daily_revenue",
        "weekly_kpis",
        "user_retention",
        "funnel_events",
        "ab_test_results",
        "churn_report",
    ],
    "ml/training": [
        "train_ranker",
        "train_fraud_model",
        "feature_backfill",
        "hyperparam_sweep",
        "evaluate_models",
    ],
    "ml/serving": ["refresh_embeddings", "batch_scoring", "model_registry_sync"],
    "platform": [
        "warehouse_vacuum",
        "s3_lifecycle_audit",
        "secrets_rotation_check",
        "airflow_db_cleanup",
        "cost_export",
    ],
    "marketing/etl": [
        "ingest_ads_spend",
        "ingest_crm_contacts",
        "attribution_model",
        "campaign_rollup",
        "email_events",
    ],
    "finance": ["ledger_close", "invoice_sync", "fx_rates", "revenue_recognition"],
    "data_quality": ["freshness_checks", "row_count_checks", "schema_drift"],
}

_CLASSIC = '''"""{title}: owned by the {team} team."""

from datetime import datetime, timedelta

from airflow.sdk import DAG
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator

default_args = {{
    "owner": "{owner}",
    "retries": {retries},
    "retry_delay": timedelta(minutes={delay}),
}}


def _check(**context):
    print("checking {dag_id} for", context["ds"])


with DAG(
    dag_id="{dag_id}",
    description="{title}",
    schedule="{schedule}",
    start_date=datetime(2024, {month}, 1),
    catchup=False,
    default_args=default_args,
    tags=["{team}", "dagmirror-demo"],
) as dag:
    extract = BashOperator(task_id="extract", bash_command="echo extract {dag_id} {{{{ ds }}}}")
    check = PythonOperator(task_id="check", python_callable=_check)
    load = BashOperator(task_id="load", bash_command="echo load {dag_id}")
    extract >> check >> load
'''

_TASKFLOW = '''"""{title}: owned by the {team} team (TaskFlow API)."""

from datetime import datetime

from airflow.sdk import dag, task


@dag(
    dag_id="{dag_id}",
    schedule="{schedule}",
    start_date=datetime(2024, {month}, 1),
    catchup=False,
    default_args={{"owner": "{owner}", "retries": {retries}}},
    tags=["{team}", "dagmirror-demo"],
)
def {func}():
    @task
    def fetch() -> list[int]:
        return list(range({retries} + 3))

    @task
    def summarise(values: list[int]) -> int:
        return sum(values)

    summarise(fetch())


{func}()
'''

_EXTRAS = {
    "common/__init__.py": b"",
    "common/utils.py": b'"""Helpers shared by several DAGs."""\n\n\n'
    b"def table_name(team: str, name: str) -> str:\n"
    b'    return f"{team}__{name}"\n',
    "analytics/sql/daily_revenue.sql": b"SELECT order_date, SUM(amount) AS revenue\nFROM orders\n"
    b"WHERE order_date = '{{ ds }}'\nGROUP BY order_date;\n",
    "platform/config/retention.yaml": b"tables:\n  events: 90d\n  logs: 30d\n  audit: 3650d\n",
    "README.md": b"# DAGs\n\nDeployed by dagmirror; one folder per team.\n",
}

_SCHEDULES = ["@daily", "@hourly", "0 6 * * *", "30 2 * * 1", "@weekly"]


def sample_dags() -> dict[str, bytes]:
    """About 35 valid Airflow 3 DAG files across team folders, plus a few non-DAG files. Deterministic."""
    files: dict[str, bytes] = {}
    n = 0
    for team, names in _TEAMS.items():
        for name in names:
            n += 1
            fields = {
                "title": name.replace("_", " ").capitalize(),
                "team": team.split("/")[0],
                "owner": f"{team.split('/')[0]}-oncall",
                "dag_id": f"{team.replace('/', '_')}__{name}",
                "schedule": _SCHEDULES[n % len(_SCHEDULES)],
                "month": 1 + n % 12,
                "retries": 1 + n % 3,
                "delay": 5 * (1 + n % 4),
                "func": name,
            }
            template = _TASKFLOW if n % 3 == 0 else _CLASSIC
            files[f"{team}/{name}.py"] = template.format(**fields).encode()
    return files | _EXTRAS


def dag_ids(files: Mapping[str, bytes]) -> list[str]:
    """The dag_ids declared in files made by sample_dags()."""
    found = []
    for body in files.values():
        text = body.decode()
        start = text.find('dag_id="')
        if start >= 0:
            found.append(text[start + 8 : text.index('"', start + 8)])
    return sorted(found)


def synthetic_corpus(n: int, seed: int = 0) -> dict[str, bytes]:
    """`n` DAG-like files: log-normal sizes clipped to 1-50 KB (median ~8 KB), ~35 files per folder in
    `team<i>/sub<j>/`, ~10% non-.py files. Deterministic for a seed; 100k files in a few seconds."""
    rng = random.Random(seed)
    line = b"# generated DAG-like content, padded to a realistic size; " + b"x" * 40 + b"\n"
    pad = line * (50_000 // len(line) + 2)
    files: dict[str, bytes] = {}
    for i in range(n):
        folder = i // 35
        ext = (".sql", ".yaml", ".json")[i % 3] if rng.random() < 0.1 else ".py"
        path = f"team{folder // 10:03d}/sub{folder % 10:02d}/dag_{i:06d}{ext}"
        size = int(min(50_000, max(1_000, math.exp(rng.gauss(math.log(8_000), 0.8)))))
        head = f'dag_id = "synthetic_{seed}_{i}"  # {path}\n'.encode()
        files[path] = (head + pad)[:size]
    return files


def create_bucket(client: Any, bucket: str, *, versioned: bool = False) -> None:
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
    if versioned:
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def upload(client: Any, bucket: str, prefix: str, files: Mapping[str, bytes], threads: int = 16) -> None:
    def put(item: tuple[str, bytes]) -> None:
        client.put_object(Bucket=bucket, Key=prefix + item[0], Body=item[1])

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, files.items()))


def delete_keys(client: Any, bucket: str, keys: Iterable[str]) -> None:
    batch: list[dict[str, str]] = []
    for key in keys:
        batch.append({"Key": key})
        if len(batch) == 1000:
            client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            batch = []
    if batch:
        client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
