"""Drive podman for tests/test_container.py: this project's settings (docker/containers.conf), why containers
cannot run on a machine (the skip reason), the image build through `make image`, and a pod played from
deploy/kubernetes/pod.yaml with only what a test must change."""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from dagmirror.devtools.servers import CREDENTIALS

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "docker" / "containers.conf"
# One tag per work tree, so two checkouts testing at once on one machine never move each other's image.
IMAGE = f"localhost/dagmirror:test-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]}"
# Lines for the end of the pytest run (conftest.py prints them): build time and size of the image.
REPORT: list[str] = []
INSTALL = "apt-get install -y podman runc catatonit debootstrap (.ci/run does)"


class PodmanError(Exception):
    pass


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"CONTAINERS_CONF": str(CONF)}
    proc = subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise PodmanError(f"podman {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def base_image() -> str:
    """The Dockerfile's base image, as podman names it (also the stand-in for Airflow's image in the pod)."""
    match = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert match is not None
    return match[1] if "/" in match[1] else f"docker.io/library/{match[1]}"


def why_containers_cannot_run() -> str | None:
    """None when podman can build and run here; else the reason, for pytest.skip. Installs nothing."""
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: {INSTALL}"
    if os.geteuid() != 0:
        return "the container tests run podman as root (as CI does); rootless podman is not set up here"
    info = podman("info", check=False)
    if info.returncode != 0:
        return f"podman cannot start here: {info.stderr.strip()[-500:]}"
    return None


def ensure_base_image() -> str | None:
    """Keep the base image if podman has it, else pull it, else build the stand-in (docker/base-image.sh).
    Returns the reason to skip when it cannot be pulled and debootstrap is missing; raises on other errors."""
    env = os.environ | {"CONTAINERS_CONF": str(CONF)}
    proc = subprocess.run(
        ["sh", str(ROOT / "docker" / "base-image.sh")],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if proc.returncode == 0:
        return None
    if shutil.which("debootstrap") is None:
        return f"{base_image()} cannot be pulled here and debootstrap is missing: {INSTALL}"
    raise PodmanError(f"docker/base-image.sh: exit {proc.returncode}\n{proc.stderr[-3000:]}")


def image_id(name: str) -> str | None:
    proc = podman("image", "inspect", "--format", "{{.Id}}", name, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def make(*args: str) -> None:
    env = os.environ | {"CONTAINERS_CONF": str(CONF)}
    proc = subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise PodmanError(
            f"make {' '.join(args)}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )


def build_image() -> float:
    """`make image` with podman into IMAGE; returns the seconds it took. Its build stage is then tagged
    IMAGE-build (from the layer cache, at once), so that the images a rebuild replaces (same tags, from an
    earlier run of these tests) can be removed by id and reruns do not pile up unnamed images."""
    tags = (IMAGE, f"{IMAGE}-build")
    before = [image_id(tag) for tag in tags]
    started = time.monotonic()
    make("image", "ENGINE=podman", f"IMAGE={IMAGE}")
    took = time.monotonic() - started
    make("image", "ENGINE=podman", f"IMAGE={tags[1]}", "BUILD_FLAGS=--target build")
    for old, tag in zip(before, tags, strict=True):
        if old is not None and old != image_id(tag):
            podman("rmi", old, check=False)  # still used by another tag or container: leave it
    return took


def _replace(value: str, old: str, new: str) -> str:
    assert old in value, (
        f"{old!r} not in {value!r}: deploy/kubernetes/pod.yaml changed, update tests/podman.py"
    )
    return value.replace(old, new)


def pod_for_test(
    manifest: dict[str, Any], *, name: str, bucket: str, endpoint: str, port: int
) -> dict[str, Any]:
    """The repo's pod with only what a test on this machine must change:
    - names: the pod's and its volumes' (podman makes an emptyDir a named volume, global on the machine);
    - dagmirror's image (IMAGE), bucket, HTTP port (the pod runs on the host's network) and S3 endpoint;
    - `ports` dropped: podman 4.3 refuses port mappings on the host's network;
    - restartPolicy OnFailure: under Always, podman 4.3 restarts an init container that exited 0, forever;
    - Airflow's container runs the base image instead (no registry), printing the DAG folder as it finds it
      at its start, then sleeping until SIGTERM."""
    doc = copy.deepcopy(manifest)
    doc["metadata"]["name"] = name
    spec = doc["spec"]
    spec["restartPolicy"] = "OnFailure"
    volumes = {volume["name"]: f"{name}-{volume['name']}" for volume in spec["volumes"]}
    for volume in spec["volumes"]:
        volume["name"] = volumes[volume["name"]]
    env = CREDENTIALS | {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    for container in spec["initContainers"] + spec["containers"]:
        for mount in container.get("volumeMounts", []):
            mount["name"] = volumes[mount["name"]]
        if container["name"] == "airflow":
            container |= {"image": base_image(), "command": ["python", "-c", STAND_IN], "args": []}
            continue
        container["image"] = IMAGE
        container["args"] = [
            _replace(arg, "s3://company-airflow/", f"s3://{bucket}/") if arg.startswith("s3://") else arg
            for arg in container["args"]
        ]
        if "--http" in container["args"]:
            at = container["args"].index("--http") + 1
            container["args"][at] = _replace(container["args"][at], "0.0.0.0:9090", f"127.0.0.1:{port}")
        for probe in ("readinessProbe", "livenessProbe"):
            if probe in container:
                container[probe]["httpGet"]["port"] = port
        container.pop("ports", None)
        container["env"] = [{"name": key, "value": value} for key, value in env.items()]
    return doc


# What stands in for Airflow: one JSON line with the DAG files it finds at its start, then wait for SIGTERM.
# (No leading newline: podman 4.3's kube play fails to parse a string that starts with one.)
STAND_IN = """import json, os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
root = "/opt/airflow/dags"
found = {}
for top, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if d != ".dagmirror"]
    for f in files:
        path = os.path.join(top, f)
        found[os.path.relpath(path, root)] = open(path).read()
print(json.dumps(found), flush=True)
while True:
    time.sleep(60)
"""
