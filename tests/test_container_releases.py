"""deploy/kubernetes/pod-releases.yaml played with podman (marker `container`): releases mirrored with
`--switch symlink` into a link that lives inside the pod's volume, and real Apache Airflow (from PyPI, on the
stand-in base: docker/airflow-test.Containerfile) in a second container of the pod, whose dags_folder is that
link as it sees it through its read-only mount. While releases switch, Airflow parses the folder again and
again, and a reader in the same container resolves the link once per round and reads the whole set behind it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import podman as pm
from .releases import publish

PREFIX = "dags/production/"
MARK = "@@POD "
RELEASES = 5

# Airflow's container: every round, one marked JSON line with (1) the link read once and the whole set behind
# it (each file's first line names its release), (2) a DagBag parse of dags_folder, the link itself, as the
# scheduler and dag-processor parse it. Until SIGTERM. (No leading newline: podman 4.3's kube play.)
AIRFLOW = """import json, logging, os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
logging.disable(logging.CRITICAL)
from airflow.configuration import conf
from airflow.dag_processing.dagbag import DagBag
link = conf.get("core", "dags_folder")
def whole_set():
    try:
        target = os.readlink(link)
    except OSError as exc:
        return {"link_error": repr(exc)}
    root = os.path.join(os.path.dirname(link), target)
    found = {}
    for top, dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(top, name)) as fh:
                found[os.path.relpath(os.path.join(top, name), root)] = fh.readline().strip()
    return {"target": target, "files": found}
while True:
    record = {"dags_folder": link, **whole_set()}
    bag = DagBag(dag_folder=link)
    record |= {"dag_ids": sorted(bag.dag_ids), "errors": {k: str(v) for k, v in bag.import_errors.items()}}
    print("@@POD " + json.dumps(record), flush=True)
    time.sleep(0.1)
"""


def dag(dag_id: str, release: int) -> str:
    return f'''# release {release}
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG(dag_id="{dag_id}", start_date=datetime(2024, 1, 1), schedule=None, tags=["release-{release}"]):
    EmptyOperator(task_id="step")
'''


def release(n: int) -> dict[str, str]:
    """Release n: two DAGs in every release, one only in this one (so each switch adds and removes a file),
    and a helper module that is no DAG. Every file's first line names its release."""
    return {
        "common/release.py": f"# release {n}\nRELEASE = {n}\n",
        "team0/dag_a.py": dag("pod_a", n),
        "team1/dag_b.py": dag("pod_b", n),
        f"team{n % 2}/only_{n}.py": dag(f"pod_only_{n}", n),
    }


def dag_ids(n: int) -> list[str]:
    return sorted(["pod_a", "pod_b", f"pod_only_{n}"])


def records(pod: pm.Pod) -> list[dict[str, Any]]:
    lines = pod.logs("airflow").splitlines()
    return [json.loads(line[len(MARK) :]) for line in lines if line.startswith(MARK)]


def release_of(record: dict[str, Any]) -> int:
    """The one release whose whole set the record read through the link; fails on a mixed or partial set."""
    marks = set(record["files"].values())
    assert len(marks) == 1, f"one read of the link saw several releases: {record}"
    n = int(marks.pop().removeprefix("# release "))
    assert {path: f"# release {n}" for path in release(n)} == record["files"], record
    return n


@pytest.fixture(scope="module")
def pod(s3: Any, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[pm.Pod]:
    pm.prepared_image()
    airflow = pm.prepared_image("airflow")
    bucket = f"pod-releases-{os.getpid()}"
    s3.create_bucket(Bucket=bucket)
    publish(s3, bucket, PREFIX, {k: v.encode() for k, v in release(1).items()}, seq=1)
    manifest = yaml.safe_load((pm.ROOT / "deploy" / "kubernetes" / "pod-releases.yaml").read_text())
    folder = tmp_path_factory.mktemp("pod-releases")
    with pm.played(manifest, folder, bucket, moto_endpoint, airflow=(airflow, AIRFLOW)) as played:
        yield played


@pm.container
def test_airflow_parses_the_link_in_the_volume_and_every_read_sees_one_whole_release(
    pod: pm.Pod, s3: Any
) -> None:
    pm.until(lambda: records(pod) != [], "Airflow's first parse", timeout=180)
    first = records(pod)[0]
    assert first["dags_folder"] == "/opt/airflow/dags/current"
    assert release_of(first) == 1
    assert first["dag_ids"] == dag_ids(1)
    for n in range(2, RELEASES + 1):
        publish(s3, pod.bucket, PREFIX, {k: v.encode() for k, v in release(n).items()}, seq=n)
        pm.podman("kill", "--signal", "USR1", pod.container("dagmirror"))  # the deploy hook
        pm.until(lambda n=n: release_of(records(pod)[-1]) == n, f"Airflow to read release {n}", timeout=120)
    pm.until(lambda: records(pod)[-1]["dag_ids"] == dag_ids(RELEASES), "a parse of the last release")
    seen = records(pod)
    assert not [r for r in seen if "link_error" in r], "the link was missing while releases switched"
    order = [release_of(r) for r in seen]
    assert order == sorted(order)
    assert set(order) == set(range(1, RELEASES + 1))
    assert [r["errors"] for r in seen if r["errors"]] == []


@pm.container
def test_the_link_and_its_generations_live_inside_the_volume(pod: pm.Pod) -> None:
    """What Airflow resolved above is the layout docs/operations.md gives: the mount point stays a folder,
    DEST is a relative link inside it, the generations are beside it in the same volume."""
    volume = pod.manifest["spec"]["volumes"][0]["name"]
    mount = Path(pm.podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip())
    link = mount / "current"
    assert link.is_symlink()
    assert not mount.is_symlink()
    target = os.readlink(link)
    assert target.startswith(".current.dagmirror/generations/")
    assert link.resolve().is_relative_to(mount.resolve())
    assert (mount / ".current.dagmirror" / "work").is_dir()
    assert sorted(os.listdir(mount)) == [".current.dagmirror", "current"]
    assert pod.readyz()["ready"] is True
