"""Airflow's own S3 sync (what its S3 DAG bundle calls), run by the Airflow venv's python.

Usage: airflow_s3hook.py BUCKET PREFIX DEST
"""

import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp())
logging.disable(logging.CRITICAL)

from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # noqa: E402 - AIRFLOW_HOME must be set first

bucket, prefix, dest = sys.argv[1:4]
Path(dest).mkdir(parents=True, exist_ok=True)
S3Hook(aws_conn_id="aws_default").sync_to_local_dir(
    bucket_name=bucket, s3_prefix=prefix, local_dir=Path(dest), delete_stale=True
)
