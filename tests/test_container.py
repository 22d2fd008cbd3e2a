"""The container image and its Kubernetes manifests.

Without a container engine: the Dockerfile's own install steps (docker/install.sh) run into a fresh venv, and
the installed `dagmirror run` mirrors moto server. With podman (marker `container`; .ci/run installs it, the
tests skip with the reason where containers cannot run): `make image` builds the image, and
deploy/kubernetes/pod.yaml plays as a pod on the host's network against moto server there. The Helm values
and docs/operations.md are checked against the same files.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import podman as pm
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
    steps = re.findall(
        r"^RUN (?:--mount=\S+ )*sh docker/install\.sh /opt/dagmirror /src (\w+)$", dockerfile, re.M
    )
    assert steps == ["deps", "app"]  # together, what the install-steps test below runs (step "all")
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


# --- the manifests and the docs -----------------------------------------------------------------------------

KUBE = ROOT / "deploy" / "kubernetes"


def load(name: str) -> Any:
    return yaml.safe_load((KUBE / name).read_text())


def dagmirror_containers(pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = pod["spec"]
    (init,) = spec["initContainers"]
    (sidecar,) = [c for c in spec["containers"] if c["name"] == "dagmirror"]
    return init, sidecar


# Each pod the container tests play, and the Helm values that must give Airflow's pods the same containers.
PAIRS = [("pod.yaml", "airflow-values.yaml"), ("pod-releases.yaml", "airflow-values-releases.yaml")]


@pytest.mark.parametrize(("pod_file", "values_file"), PAIRS)
def test_the_helm_values_give_every_dag_reading_pod_the_containers_of_the_played_pod(
    pod_file: str, values_file: str
) -> None:
    pod, values = load(pod_file), load(values_file)
    init, sidecar = dagmirror_containers(pod)
    for component in ("scheduler", "dagProcessor", "workers", "triggerer", "apiServer"):
        assert values[component]["extraInitContainers"] == [init], component
        assert values[component]["extraContainers"] == [sidecar], component
    pod_volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert {v["name"]: v for v in values["volumes"]} == pod_volumes
    (airflow,) = [c for c in pod["spec"]["containers"] if c["name"] == "airflow"]
    assert values["volumeMounts"] == airflow["volumeMounts"]
    dags_folder = {e["name"]: e["value"] for e in airflow.get("env", [])}.get("AIRFLOW__CORE__DAGS_FOLDER")
    assert values.get("config", {}).get("core", {}).get("dags_folder") == dags_folder


def test_the_releases_pod_links_dest_inside_the_volume_and_points_airflow_at_the_link() -> None:
    """A volume's mount point cannot become a link: DEST is /dags/current inside the `dags` volume, and
    Airflow's dags_folder is that link under its own mount of the same volume."""
    pod = load("pod-releases.yaml")
    for container in dagmirror_containers(pod):
        args = container["args"]
        assert args[2] == "/dags/current"
        assert args[args.index("--switch") + 1] == "symlink"
        assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["dags"] == "/dags"
    (airflow,) = [c for c in pod["spec"]["containers"] if c["name"] == "airflow"]
    (mount,) = airflow["volumeMounts"]
    assert mount["name"] == "dags"
    assert mount["readOnly"] is True
    assert airflow["env"] == [
        {"name": "AIRFLOW__CORE__DAGS_FOLDER", "value": f"{mount['mountPath']}/current"}
    ]


@pytest.mark.parametrize("pod_file", [pod for pod, _ in PAIRS])
def test_the_pod_runs_dagmirror_non_root_read_only_without_capabilities(pod_file: str) -> None:
    pod = load(pod_file)
    for container in dagmirror_containers(pod):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] != 0
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["requests"]
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/dags", "/tmp"}
    _, sidecar = dagmirror_containers(pod)
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["spec"]["terminationGracePeriodSeconds"] > 35  # --grace 30 + the audit upload's 5 s


def test_operations_doc_points_to_the_manifests_and_quotes_them_verbatim() -> None:
    """docs/operations.md includes the manifests by link; any YAML it shows from them must be cut from the
    real file, so the docs cannot drift from what the container test plays."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    for name in [name for pair in PAIRS for name in pair]:
        assert f"](../deploy/kubernetes/{name})" in doc, name
    quotes = re.findall(r"<!-- quote: deploy/kubernetes/(\S+) -->\n```yaml\n(.*?)```", doc, re.S)
    assert quotes, "operations.md quotes no manifest"
    for name, text in quotes:
        assert text in (KUBE / name).read_text(), f"operations.md quotes {name} but the file differs"


# --- the image and the pod, with podman ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> str:
    return pm.prepared_image()


def run(image: str, *args: str, entrypoint: str | None = None) -> str:
    flags = [
        "--rm",
        "--no-healthcheck",
        "--network",
        "none",
        *(["--entrypoint", entrypoint] if entrypoint else []),
    ]
    return pm.podman("run", *flags, image, *args).stdout


@pm.container
def test_image_runs_dagmirror_as_a_non_root_user_with_a_healthcheck(image: str) -> None:
    assert run(image, "--version").startswith("dagmirror, version")
    assert run(image, "-u", entrypoint="id").strip() == "10001"
    check = json.loads(
        pm.podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", image).stdout
    )
    assert check["Test"][0] == "CMD"
    assert "/healthz" in check["Test"][-1]


@pm.container
def test_image_keeps_no_compiler_pip_cache_or_build_secret(image: str) -> None:
    found = run(image, "-c", "command -v gcc cc; ls -d /run/secrets ~/.cache /root/.cache 2>/dev/null; env",
                entrypoint="sh")  # fmt: skip
    assert "gcc" not in found
    assert "/cc" not in found
    assert ".cache" not in found
    assert "/run/secrets" not in found
    assert "PIP_CERT" not in found


def pins(text: str) -> set[str]:
    """`name==version` lines, names normalised (PEP 503), comments and blank lines dropped."""
    found = set()
    for line in text.splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.strip().split("==")
            found.add(f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}")
    return found


# Every distribution in the image's venv, one `name==version` per line.
INSTALLED = (
    "import importlib.metadata as m; "
    "print('\\n'.join(f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions()))"
)


@pm.container
def test_image_holds_exactly_the_pinned_packages_and_no_installer(image: str) -> None:
    """The final stage's venv is docker/requirements.lock plus dagmirror: no unpinned package, and neither
    pip nor setuptools (an image that runs dagmirror has nothing to install)."""
    installed = pins(run(image, "-c", INSTALLED, entrypoint="python"))
    locked = pins((ROOT / "docker" / "requirements.lock").read_text())
    version = run(image, "--version").split()[-1]
    assert installed == locked | {f"dagmirror=={version}"}


FIRST = {"team/a.py": "a = 1\n", "team/sub/b.py": "b = 2\n"}


@pytest.fixture(scope="module")
def pod(
    image: str, s3: Any, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[pm.Pod]:
    bucket = f"pod-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    put_all(s3, bucket, "dags/production/", {k: v.encode() for k, v in FIRST.items()})
    with pm.played(load("pod.yaml"), tmp_path_factory.mktemp("pod"), bucket, moto_endpoint) as played:
        yield played


@pm.container
def test_pod_init_container_fills_the_volume_before_the_main_containers_start(pod: pm.Pod) -> None:
    pm.until(lambda: pod.logs("airflow").strip() != "", "Airflow's stand-in to list the DAG folder")
    seen_at_start = json.loads(pod.logs("airflow").splitlines()[0])
    assert seen_at_start == FIRST


@pm.container
def test_pod_sidecar_answers_readyz_and_keeps_the_volume_mirrored(pod: pm.Pod, s3: Any) -> None:
    ready = pod.readyz()
    assert ready["ready"] is True
    s3.put_object(Bucket=pod.bucket, Key="dags/production/team/c.py", Body=b"c = 3\n")
    pm.podman(
        "kill", "--signal", "USR1", pod.container("dagmirror")
    )  # the deploy hook: a pass now, not in 30 s

    def airflow_sees_it() -> bool:
        read = pod.exec("airflow", "cat", "/opt/airflow/dags/team/c.py", check=False)
        return read.returncode == 0 and read.stdout == "c = 3\n"

    pm.until(airflow_sees_it, "the new upload in Airflow's DAG folder")


@pm.container
def test_pod_sidecar_writes_only_its_volumes_as_non_root_without_capabilities(pod: pm.Pod) -> None:
    sidecar = "dagmirror"
    assert pod.inspect(sidecar, "{{.HostConfig.ReadonlyRootfs}}") == "true"
    assert pod.exec(sidecar, "id", "-u").stdout.strip() == "10001"
    status = pod.exec(sidecar, "cat", "/proc/1/status").stdout
    assert re.search(r"^CapEff:\s+0+$", status, re.M)
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    for path in ("/home/dagmirror/x", "/opt/dagmirror/x", "/x"):
        denied = pod.exec(sidecar, "touch", path, check=False)
        assert "Read-only file system" in denied.stderr, path
    assert pod.exec(sidecar, "touch", "/tmp/x", "/dags/.dagmirror/x").returncode == 0
    assert (
        pod.exec("airflow", "touch", "/opt/airflow/dags/x", check=False).returncode != 0
    )  # mounted readOnly


@pm.container
def test_pod_stop_sends_sigterm_and_the_sidecar_exits_0_within_its_grace_period(pod: pm.Pod) -> None:
    """`podman pod stop -t <terminationGracePeriodSeconds>` is what Kubernetes does: SIGTERM to every
    container, SIGKILL after the grace period. (`podman kube down` of podman 4.3 kills without a grace period:
    the pod fixture uses it only to remove what is left.)"""
    grace = pod.manifest["spec"]["terminationGracePeriodSeconds"]
    started = time.monotonic()
    pm.podman("pod", "stop", "--time", str(grace), pod.name, timeout=grace + 30)
    took = time.monotonic() - started
    assert pod.inspect("dagmirror", "{{.State.ExitCode}}") == "0"
    assert pod.inspect("airflow", "{{.State.ExitCode}}") == "0"
    assert took < grace
    logs = pod.logs("dagmirror")
    assert "SIGTERM" in logs
    assert '"level":"error"' not in logs
    assert "Traceback" not in logs
    # Nothing torn: the volume (it outlives the stopped containers until the pod is removed) holds exactly
    # the bucket's files and no temp file.
    volume = pod.manifest["spec"]["volumes"][0]["name"]
    dags = Path(pm.podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip())
    assert {k: v.decode() for k, v in read_tree(dags).items()} == FIRST | {"team/c.py": "c = 3\n"}
    assert list((dags / ".dagmirror" / "tmp").iterdir()) == []
