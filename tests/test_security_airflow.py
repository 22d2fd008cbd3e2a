"""`deploy --airflow-check` runs DAG code; that code must not reach the deployer (docs/security.md, "DAG
authors"): not its environment (credentials), its files, its processes or the network."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from dagmirror.devtools.servers import s3_env

from .airflow_env import airflow_python
from .helpers import dagmirror, put_all

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(900)]

CANARY = "canary-secret-0c4f6a"

# Runs at parse time and reports, as its import error, everything of the deployer's it could reach.
PROBE = """# an airflow DAG file (the words make Airflow's safe mode parse it)
import json, os, socket, sys
leaks = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if CANARY.encode() in f.read():
                    leaks.append("environ of pid " + pid)
        except OSError:
            pass
if CANARY in os.environ.values():
    leaks.append("own environment")
try:
    with open(CREDENTIALS) as f:
        leaks.append("credentials file: " + f.read().strip()[-20:])
except OSError:
    pass
try:
    os.listdir(DEPLOYER_FOLDER)
    leaks.append("deployer folder listed")
except OSError:
    pass
try:
    with open(OUTSIDE, "w") as f:
        f.write("escaped")
    leaks.append("wrote outside")
except OSError:
    pass
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=3).close()
    leaks.append("reached the S3 endpoint")
except OSError:
    pass
raise RuntimeError("probe " + json.dumps(leaks))
"""


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bwrap (bubblewrap) is not installed")
def test_dag_code_parsed_by_the_airflow_check_reaches_no_credential_file_process_or_network(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    python = str(airflow_python())
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    credentials = home / ".aws" / "credentials"
    credentials.write_text(f"[default]\naws_secret_access_key = {CANARY}\n")
    outside = tmp_path / "escaped.txt"
    port = int(moto_endpoint.rsplit(":", 1)[1].strip("/"))
    head = (
        f"CANARY = {CANARY!r}\nCREDENTIALS = {str(credentials)!r}\nDEPLOYER_FOLDER = {str(tmp_path)!r}\n"
        f"OUTSIDE = {str(outside)!r}\nPORT = {port}\n"
    )
    put_all(s3, bucket, "dags/production/", {"team/old.py": b"X = 1\n"})
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "probe.py").write_text(head + PROBE)
    env = s3_env(moto_endpoint) | {"AWS_SECRET_ACCESS_KEY": CANARY, "HOME": str(home)}
    run = dagmirror(
        "deploy", tmp_path / "src" / "probe.py", "--env", "production", "--bucket-url", f"s3://{bucket}/dags/",
        "--airflow-check", "--airflow-python", python, "--json", endpoint=moto_endpoint, env=env, timeout=600,
    )  # fmt: skip
    assert run.code == 4, run.stderr
    assert run.report["problems"] == ["probe.py: import error: RuntimeError: probe []"]
    assert not outside.exists()
    assert CANARY not in run.stdout + run.stderr
