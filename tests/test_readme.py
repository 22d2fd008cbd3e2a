"""The README's library example runs as written (against moto server instead of AWS)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from dagmirror.devtools.servers import s3_env

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_library_example_runs_as_written(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    example = re.search(r"### As a library\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert example is not None
    code = example.group(1)
    assert "s3://my-bucket/dags/production" in code
    assert '"/opt/airflow/dags"' in code
    s3.put_object(Bucket=bucket, Key="dags/production/a.py", Body=b"a = 1\n")
    code = code.replace("s3://my-bucket/", f"s3://{bucket}/").replace(
        "/opt/airflow/dags", str(tmp_path / "d")
    )
    env = s3_env(moto_endpoint) | {"AWS_ENDPOINT_URL": moto_endpoint}
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1", "0", "0"]
    assert (tmp_path / "d" / "a.py").read_bytes() == b"a = 1\n"
