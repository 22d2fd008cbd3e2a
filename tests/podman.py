"""Drive podman for tests/test_container*.py: this project's settings (docker/containers.conf), why
containers cannot run on a machine (the skip reason), the image build through `make image`, the test-only
Airflow image (docker/airflow-test.Containerfile), and pods played from deploy/kubernetes/ with only what a
test must change."""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dagmirror.devtools.servers import CREDENTIALS, free_port

from .airflow_env import AIRFLOW_VERSION

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "docker" / "containers.conf"
# One tag per work tree, so two checkouts testing at once on one machine never move each other's image.
TREE = hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]
IMAGE = f"localhost/dagmirror:test-{TREE}"
AIRFLOW_IMAGE = f"localhost/dagmirror-airflow:{AIRFLOW_VERSION}-test-{TREE}"
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


def build_airflow_image() -> float:
    """docker/airflow-test.Containerfile into AIRFLOW_IMAGE: real Airflow from PyPI on the base image (about
    75 s and 550 MB the first time on a machine; then podman's layer cache answers at once). The proxy's CA
    goes in as the build secret "ca", as `make image` does; returns the seconds it took."""
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    old = image_id(AIRFLOW_IMAGE)
    started = time.monotonic()
    secret = ["--secret", f"id=ca,src={ca}"] if ca.exists() else []
    podman(
        "build", "--pull=never", "--format", "docker", *secret,
        "--build-arg", f"BASE={base_image()}", "--build-arg", f"AIRFLOW_VERSION={AIRFLOW_VERSION}",
        "--file", str(ROOT / "docker" / "airflow-test.Containerfile"), "--tag", AIRFLOW_IMAGE,
        str(ROOT / "docker"), timeout=1200,
    )  # fmt: skip
    took = time.monotonic() - started
    if old is not None and old != image_id(AIRFLOW_IMAGE):
        podman("rmi", old, check=False)
    return took


@functools.cache
def _prepared(what: str) -> tuple[str, str]:
    """(tag, "") once the image `what` ("dagmirror" or "airflow") is built, or ("", why it cannot be here);
    once per pytest run, whichever test module asks first."""
    reason = why_containers_cannot_run() or ensure_base_image()
    if reason:
        return "", reason
    probe = podman("run", "--rm", "--network", "none", base_image(), "true", check=False)
    if probe.returncode != 0:
        return "", f"podman cannot run a container here: {probe.stderr.strip()[-500:]}"
    stand_in = " on the stand-in base" if "base-image.sh" in podman(
        "image", "inspect", "--format", "{{json .Labels}}", base_image()
    ).stdout else ""  # fmt: skip
    tag, took = (IMAGE, build_image()) if what == "dagmirror" else (AIRFLOW_IMAGE, build_airflow_image())
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout)
    how = "`make image`" if what == "dagmirror" else "docker/airflow-test.Containerfile"
    REPORT.append(f"container image {tag}: {how} {took:.1f} s, {size / 1e6:.0f} MB{stand_in}")
    return tag, ""


def container(test: Callable[..., None]) -> Callable[..., None]:
    """Marks a test that needs podman (it skips with the reason where containers cannot run) and is slow:
    the first run on a machine builds the stand-in base (about 1 min) and the Airflow image (about 75 s),
    every run builds the dagmirror image (about 10 s when cached) and plays a pod."""
    return pytest.mark.container(pytest.mark.slow(pytest.mark.timeout(900)(test)))


def prepared_image(what: str = "dagmirror") -> str:
    """The image's tag, built for this run; skips the calling test with the reason where it cannot be."""
    tag, reason = _prepared(what)
    if reason:
        pytest.skip(reason)
    return tag


def _replace(value: str, old: str, new: str) -> str:
    assert old in value, (
        f"{old!r} not in {value!r}: deploy/kubernetes/pod.yaml changed, update tests/podman.py"
    )
    return value.replace(old, new)


def pod_for_test(
    manifest: dict[str, Any],
    *,
    name: str,
    bucket: str,
    endpoint: str,
    port: int,
    airflow: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The repo's pod with only what a test on this machine must change:
    - names: the pod's and its volumes' (podman makes an emptyDir a named volume, global on the machine);
    - dagmirror's image (IMAGE), bucket, HTTP port (the pod runs on the host's network) and S3 endpoint;
    - `ports` dropped: podman 4.3 refuses port mappings on the host's network;
    - restartPolicy OnFailure: under Always, podman 4.3 restarts an init container that exited 0, forever;
    - Airflow's container runs `airflow` = (image, Python code) instead, by default the base image printing
      the DAG folder as it finds it at its start, then sleeping until SIGTERM (apache/airflow cannot be
      pulled here). Its env (AIRFLOW__CORE__DAGS_FOLDER, for one) stays."""
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
            image, code = airflow or (base_image(), STAND_IN)
            container |= {"image": image, "command": ["python", "-c", code], "args": []}
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


class Pod:
    """deploy/kubernetes/pod.yaml played with podman (see pod_for_test for what the test changes)."""

    def __init__(self, manifest: dict[str, Any], path: Path, bucket: str, port: int) -> None:
        self.manifest = manifest
        self.bucket = bucket
        self.name = manifest["metadata"]["name"]
        self.path = path
        self.port = port
        path.write_text(json.dumps(manifest, indent=1))  # JSON is YAML, and no multi-line string can go wrong

    def container(self, name: str) -> str:
        return f"{self.name}-{name}"

    def exec(self, name: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.container(name), *cmd, check=check)

    def inspect(self, name: str, template: str) -> str:
        return podman("inspect", "--format", template, self.container(name)).stdout.strip()

    def logs(self, name: str) -> str:
        proc = podman("logs", self.container(name))
        return proc.stdout + proc.stderr

    def readyz(self) -> dict[str, Any]:
        """/readyz asked from inside the pod (Airflow's container, on the pod's network)."""
        url = f"http://127.0.0.1:{self.port}/readyz"
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
        return dict(json.loads(self.exec("airflow", "python", "-c", code).stdout))

    def remove(self) -> None:
        """What this pod started, by name: `kube down` removes the pod, its containers and its volumes."""
        podman("kube", "down", str(self.path), check=False)
        podman("pod", "rm", "--force", "--ignore", self.name, check=False)
        for volume in self.manifest["spec"]["volumes"]:
            if podman("volume", "exists", volume["name"], check=False).returncode == 0:
                podman("volume", "rm", "--force", volume["name"], check=False)


def until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def played(
    manifest: dict[str, Any], folder: Path, bucket: str, endpoint: str, airflow: tuple[str, str] | None = None
) -> Iterator[Pod]:
    """`podman kube play` of a repo manifest (through pod_for_test) on the host's network, until the sidecar
    answers /readyz; removed with everything it started on exit."""
    port = free_port()
    name = f"dagmirror-test-{uuid.uuid4().hex[:8]}"
    doc = pod_for_test(manifest, name=name, bucket=bucket, endpoint=endpoint, port=port, airflow=airflow)
    pod = Pod(doc, folder / "pod.yaml", bucket, port)
    try:
        podman("kube", "play", "--network", "host", str(pod.path), timeout=300)
        until(lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), "the sidecar's /readyz")
        yield pod
    finally:
        pod.remove()
