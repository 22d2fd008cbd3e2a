"""A real Apache Airflow in its own virtualenv, built on demand by the tests (about 35 s, cached); for the
bundle tests, Airflow with dagmirror beside it in another (`bundle_python`).

Airflow pins many packages that would clash with dagmirror's own, so it never shares a venv with it.
The venv lives in `.venv-airflow/` at the repo root (override with $DAGMIRROR_AIRFLOW_VENV).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

AIRFLOW_VERSION = "3.3.2"
MARK = "@@PARSE "
ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("DAGMIRROR_AIRFLOW_VENV", ROOT / ".venv-airflow"))
# Airflow plus dagmirror (the bundle tests): `<this>-<airflow version>`.
BUNDLE_VENV = Path(os.environ.get("DAGMIRROR_AIRFLOW_BUNDLE_VENV", ROOT / ".venv-airflow-bundle"))
OLDEST_VERSION = "3.0.6"  # the oldest Airflow 3 the bundle supports (tests/test_bundle_airflow.py)

# Parses DAG_FOLDER with DagBag again and again until STOP exists; one marked JSON line per parse
# (Airflow logs to stdout too, so records are found by their marker).
PARSE_LOOP = r"""
import json, os, sys, tempfile, time
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp())
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
import logging
logging.disable(logging.CRITICAL)
from airflow.dag_processing.dagbag import DagBag
folder, stop, once = sys.argv[1], sys.argv[2], sys.argv[3] == "once"
while True:
    bag = DagBag(dag_folder=folder)
    record = {"t": time.time(), "dag_ids": sorted(bag.dag_ids), "errors": bag.import_errors}
    print("@@PARSE " + json.dumps(record), flush=True)
    if once or os.path.exists(stop):
        break
"""


def airflow_python() -> Path:
    """The venv's python, installing Airflow first if needed (serialised by a lock file)."""
    return _venv(VENV, f".airflow-{AIRFLOW_VERSION}", [f"apache-airflow=={AIRFLOW_VERSION}"])


def bundle_python(version: str = AIRFLOW_VERSION) -> Path:
    """A venv with Airflow `version` and dagmirror installed from this checkout (editable), as a user does
    it: `pip install dagmirror` next to Airflow. Its own venv per Airflow version (about 2.5 min each, once;
    rebuilt when dagmirror's dependencies change), so the tests of the plain Airflow venv are not touched."""
    venv = BUNDLE_VENV.with_name(f"{BUNDLE_VENV.name}-{version}")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    digest = hashlib.sha256(json.dumps(project["dependencies"]).encode()).hexdigest()[:12]
    return _venv(
        venv, f".airflow-{version}-dagmirror-{digest}", [f"apache-airflow=={version}", "-e", str(ROOT)]
    )


def _venv(venv: Path, marker_name: str, packages: list[str]) -> Path:
    python = venv / "bin" / "python"
    marker = venv / marker_name
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(str(venv) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *packages],
                check=True,
                timeout=900,
            )
            marker.touch()
    return python


def parse_once(folder: Path) -> dict[str, object]:
    """dag_ids and import errors of one DagBag parse of `folder` by real Airflow."""
    out = subprocess.run(
        [str(airflow_python()), "-c", PARSE_LOOP, str(folder), "/nonexistent", "once"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return parses(out.stdout)[-1]


def parses(output: str) -> list[dict[str, object]]:
    """The parse records in the output of PARSE_LOOP, in order."""
    return [dict(json.loads(line[len(MARK) :])) for line in output.splitlines() if line.startswith(MARK)]


def start_parse_loop(folder: Path, stop: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(
            [str(airflow_python()), "-c", PARSE_LOOP, str(folder), str(stop), "loop"],
            stdout=fh,
            stderr=subprocess.DEVNULL,
        )
