"""The container image without a Docker engine: run the Dockerfile's own install steps (docker/install.sh)
into a fresh venv from a copy of the build context, then start the installed `dagmirror run` against moto
server and check it mirrors, turns ready, and stops cleanly."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .daemon import Daemon
from .helpers import put_all, read_tree

ROOT = Path(__file__).resolve().parents[1]


def build_context(dest: Path) -> Path:
    """Copy what .dockerignore lets into the build context, so a file the image needs but the context
    omits fails here as it would in `docker build`."""
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]  # fmt: skip
    dest.mkdir(parents=True)
    for name in allowed:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def test_the_dockerfile_installs_through_the_shared_script() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN (--mount=\S+ )*sh docker/install\.sh /opt/dagmirror /src$", dockerfile, re.M)
    assert 'ENTRYPOINT ["dagmirror"]' in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert re.search(r"^USER 10001", dockerfile, re.M)
    pins = (ROOT / "docker/requirements.lock").read_text().split()
    assert all("==" in line for line in pins if not line.startswith("#") and "==" in line)


@pytest.mark.slow
def test_image_install_steps_give_a_working_daemon(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    context = build_context(tmp_path / "context")
    venv = tmp_path / "opt-dagmirror"
    install = subprocess.run(
        ["sh", "docker/install.sh", str(venv), str(context)],
        cwd=context, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    assert install.stdout.strip().startswith("dagmirror, version")
    files = {"team/a.py": b"a = 1\n", "team/b.py": b"b = 2\n"}
    put_all(s3, bucket, "dags/", files)
    dest = tmp_path / "dags"
    exe = (str(venv / "bin" / "dagmirror"),)
    with Daemon(f"s3://{bucket}/dags", dest, moto_endpoint, "--interval", "1", exe=exe) as daemon:
        daemon.until(lambda: daemon.get("/readyz")[0] == 200, what="ready")
        assert read_tree(dest) == files
        daemon.signal(signal.SIGTERM)
        assert daemon.finish() == 0
