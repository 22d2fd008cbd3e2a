"""docs/setup.md's local walkthrough, run as it stands in the doc: moto with IAM enforcement, bucket init,
the three policies on three users, a deploy, doctor, a running mirror, its /readyz and /metrics."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dagmirror.devtools.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- walkthrough -->\n```bash\n(.*?)\n```", re.DOTALL)


def walkthrough() -> str:
    match = BLOCK.search((ROOT / "docs" / "setup.md").read_text())
    assert match is not None, "docs/setup.md has no walkthrough block"
    return match.group(1)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_local_walkthrough_of_the_setup_doc_runs_as_written(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("the walkthrough uses curl, which is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        "WORK": str(tmp_path / "walk"),
        "PORT": str(free_port()),
        "HTTP_PORT": str(free_port()),
    }
    proc = subprocess.run(
        ["bash", "-c", walkthrough()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert out.rstrip().endswith("walkthrough complete")
    assert out.count("nothing to change") == 2
    assert "ok    write: mirror: no write outside its status and audit objects" in out
    assert "ok    readyz: http://127.0.0.1:" in out
    assert "AccessDenied" in out  # the mirror's deploy was refused
    assert (
        tmp_path / "walk" / "airflow-dags" / "analytics" / "daily.py"
    ).read_bytes() == b"from datetime import datetime\n"
