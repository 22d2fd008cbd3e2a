"""`make demo` keeps working: the demo runs to the end in a fresh folder, and shows what it says it shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_demo_runs_to_the_end_and_ends_with_a_one_request_release_poll(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "dagmirror.devtools.demo"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    summaries = [line for line in lines if line.startswith("  mode ")]
    assert len(summaries) == 5
    assert summaries[0].startswith("  mode objects: downloaded 36,")
    assert "downloaded 2," in summaries[3]
    assert summaries[3].startswith("  mode releases, release ")
    assert summaries[4].endswith("requests {'GET 304': 1}")
    assert (tmp_path / "demo-dags" / "analytics" / "helpers.py").read_text() == "RETRIES = 3\n"
