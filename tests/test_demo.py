"""`make demo` tells the whole story: it runs to the end in a fresh folder, says what each step shows (both
dev instances converge, a broken DAG is refused, promote, rollback), prints no raw JSON, and leaves no
process behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_the_demo_tells_the_story_to_the_end_and_stops_everything_it_started(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "dagmirror.devtools.demo"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    lines = out.splitlines()
    steps = [line.removeprefix("== ") for line in lines if line.startswith("== ")]
    assert steps == [
        "a local S3 server on 127.0.0.1",
        "the analytics team's repository",
        "three Airflow instances run `dagmirror run`: worker-1 and worker-2 on dev, prod-1 on production",
        "deploy to dev, and wait until every dev instance has it",
        "the fleet view: who runs which release",
        "promote dev to production",
        "a broken DAG is refused before anything is uploaded",
        "fixed: a change that needs a new helper file, deployed to dev as one release",
        "promote it to production",
        "something is wrong in production: roll back to the first release",
        "stopping everything, each process by its pid",
    ]
    # Both dev instances picked the first deploy up, and the fleet view shows them on it.
    converged = [line.strip() for line in lines if ": converged: " in line]
    assert [re.sub(r"on \w{12} \(#\d+\)", "on R", c) for c in converged] == [
        "dev: converged: 2/2 on R",
        "production: converged: 1/1 on R",
        "dev: converged: 2/2 on R",
        "production: converged: 1/1 on R",
        "production: converged: 1/1 on R",
    ]
    table = lines.index("$ dagmirror fleet --env dev")
    assert lines[table + 1].split() == ["INSTANCE", "RELEASE", "AGE", "STATE", "NOTE"]
    assert [line.split()[0] for line in lines[table + 2 : table + 4]] == ["worker-1", "worker-2"]
    assert all(line.split()[-1] == "current" for line in lines[table + 2 : table + 4])
    # The broken DAG: refused with file and line, exit 4, nothing uploaded.
    assert "  dagmirror: error: deploy refused, nothing was written:" in lines
    assert any(re.match(r"  dagmirror: error:   analytics/broken_report\.py:3: ", line) for line in lines)
    assert "  (exit 4)" in lines
    assert "  s3://dagmirror-demo/dags/dev/analytics/broken_report.py exists: False" in lines
    # The rollback put production back on its first release: the helper file is gone again.
    assert "  demo-dags/prod-1/analytics/helpers.py exists: False" in lines
    assert not (tmp_path / "demo-dags" / "prod-1" / "analytics" / "helpers.py").exists()
    assert (tmp_path / "demo-dags" / "worker-1" / "analytics" / "helpers.py").read_text() == "RETRIES = 3\n"
    # Stopped instances said so, and every process the demo started is gone.
    assert "  dev: no live instance, 2 stopped" in lines
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", out)]
    assert len(set(pids)) == 4  # the S3 server and three instances
    assert not [pid for pid in pids if running(pid)]
    assert not [line for line in lines if line.lstrip().startswith("{")]  # no raw JSON
