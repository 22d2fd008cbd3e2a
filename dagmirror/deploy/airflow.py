"""`--airflow-check`: real Airflow parses the environment as it would be after the deploy (DagBag, in a
subprocess of a configurable interpreter, under a timeout). Airflow stays optional: nothing here imports it.

DAG files run at parse time, and files already in the bucket must not see the deployer's credentials: the
subprocess runs inside the sandbox of sandbox.py (no network, no deployer files or processes), with a
throwaway AIRFLOW_HOME and an environment of only what Python needs to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from collections.abc import Mapping, Set
from dataclasses import dataclass
from pathlib import Path

import orjson

from dagmirror.deploy import sandbox
from dagmirror.errors import ConfigError, DeployRefused

MARK = b"@@DAGMIRROR "
OUTPUT_KEPT = 8 << 20  # bytes of the child's stdout (and of its stderr) kept: the result line is the last

# Parses each file on its own (the bag is emptied between files) so that dagmirror, not the order of the
# walk, decides which file a duplicated dag_id is reported on. Files come from Airflow's own listing, so
# .airflowignore and the safe-mode heuristic apply as they do in production.
SCRIPT = r"""
import json, os, sys
MARK = "@@DAGMIRROR "
folder = sys.argv[1]
try:
    import logging
    logging.disable(logging.CRITICAL)
    import airflow
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:
        from airflow.models.dagbag import DagBag
except ImportError as exc:
    print(MARK + json.dumps({"missing": str(exc)}), flush=True)
    sys.exit(3)
if folder not in sys.path:
    sys.path.append(folder)
try:
    from airflow.dag_processing.importers import get_importer_registry
    files = get_importer_registry().list_dag_files(folder, safe_mode=True)
except ImportError:
    from airflow.utils.file import list_py_file_paths
    files = list_py_file_paths(folder, safe_mode=True)
bag = DagBag(dag_folder=folder, collect_dags=False)
dags, errors = {}, {}
for path in sorted(files):
    rel = os.path.relpath(path, folder)
    bag.dags.clear()
    bag.import_errors.clear()
    try:
        found = bag.process_file(path, only_if_updated=False, safe_mode=True)
    except Exception as exc:
        errors[rel] = f"{type(exc).__name__}: {exc}"
        continue
    dags[rel] = sorted({dag.dag_id for dag in found})
    for message in bag.import_errors.values():
        errors[rel] = str(message)
print(MARK + json.dumps({"version": airflow.__version__, "dags": dags, "errors": errors}), flush=True)
"""


# Not PYTHONPATH, VIRTUAL_ENV or TMPDIR: they name folders of the deployer's that the sandbox does not show.
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


@dataclass(frozen=True)
class AirflowResult:
    version: str
    dags: dict[str, list[str]]  # path -> dag_ids it defines
    errors: dict[str, str]  # path -> import error (last line of the traceback)


async def parse_with_airflow(
    files: Mapping[str, bytes], *, python: str, seconds: float, confine: str = "bwrap"
) -> AirflowResult:
    """Write `files` (already validated paths) to a temporary DAG folder and let Airflow parse it, confined
    by `confine` (sandbox.py: "bwrap", or "none" when configured so)."""
    sandbox.forbid_dumping()
    with tempfile.TemporaryDirectory(prefix="dagmirror-airflow-") as tmp:
        folder, home = Path(tmp, "dags"), Path(tmp, "home")
        await asyncio.to_thread(_materialize, files, folder, home)
        argv = await asyncio.to_thread(sandbox.command, confine, python, Path(tmp))
        # DAG code runs here: give it nothing of the deployer's (no cloud credentials, no CI OIDC token, no
        # ~/.aws), only what Python needs to start.
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env |= {
            "HOME": str(home),
            "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's own tmpfs (under "none", the system's)
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        out, err, code = await _run([*argv, "-c", SCRIPT, str(folder)], env, seconds)
    return parse_output(out, err, code, python)


def _materialize(files: Mapping[str, bytes], folder: Path, home: Path) -> None:
    home.mkdir()
    for path, body in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)


async def _run(argv: list[str], env: dict[str, str], seconds: float) -> tuple[bytes, bytes, int]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group: a timeout stops everything it started
        )
    except OSError as exc:
        raise ConfigError(f"cannot run the Airflow interpreter {argv[0]!r}: {exc.strerror or exc}") from None
    if proc.stdout is None or proc.stderr is None:  # pragma: no cover - both are pipes, above
        raise RuntimeError("the Airflow child has no output pipes")
    try:
        out, err, _ = await asyncio.wait_for(
            asyncio.gather(_tail(proc.stdout), _tail(proc.stderr), proc.wait()), seconds
        )
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise DeployRefused([f"airflow check: DagBag did not finish within {seconds:g}s"]) from None
    return out, err, proc.returncode or 0


async def _tail(stream: asyncio.StreamReader, keep: int = OUTPUT_KEPT) -> bytes:
    """What the child printed, its last `keep` bytes only: DAG code can print without end, and the marked
    result line comes last."""
    kept = bytearray()
    while chunk := await stream.read(1 << 16):
        kept += chunk
        if len(kept) > keep:
            del kept[: len(kept) - keep]
    return bytes(kept)


def parse_output(out: bytes, err: bytes, code: int, python: str) -> AirflowResult:
    lines = [line for line in out.splitlines() if line.startswith(MARK)]
    if not lines:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {code}"]
        raise ConfigError(f"airflow check: {python} failed: {tail[0][:300]}")
    try:  # the child ran DAG code: its output is checked like anything else from outside
        doc = orjson.loads(lines[-1][len(MARK) :])
        if "missing" in doc:
            raise ConfigError(
                f"airflow check: Airflow is not importable by {python} ({str(doc['missing'])[:300]}); point "
                "--airflow-python (or airflow_python in [deploy]) at the python of an Airflow installation"
            )
        errors = {str(p): _last_line(str(m)) for p, m in dict(doc.get("errors", {})).items()}
        dags = {str(p): [str(d) for d in ids] for p, ids in dict(doc.get("dags", {})).items()}
        return AirflowResult(str(doc.get("version", ""))[:100], dags, errors)
    except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"airflow check: unreadable result from {python}: {type(exc).__name__}") from None


def dag_problems(result: AirflowResult, deployed: Set[str], env: str) -> tuple[list[str], list[str]]:
    """Refusals (import errors in deployed files; a dag_id defined by a deployed file and any other file)
    and warnings (import errors in files already in the environment, which this deploy did not cause)."""
    problems = [f"{p}: import error: {m}" for p, m in sorted(result.errors.items()) if p in deployed]
    notes = [
        f"{p} (already in {env}): import error: {m}"
        for p, m in sorted(result.errors.items())
        if p not in deployed
    ]
    owners: dict[str, list[str]] = {}
    for path, ids in sorted(result.dags.items()):
        for dag_id in ids:
            owners.setdefault(dag_id, []).append(path)
    for dag_id, paths in sorted(owners.items()):
        if len(paths) > 1 and any(p in deployed for p in paths):
            problems.append(f"dag_id {dag_id!r} is defined by more than one file: {', '.join(paths)}")
    return problems, notes


def _last_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error")[:300]
