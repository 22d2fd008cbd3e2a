"""The boundary around DAG code that `--airflow-check` runs (docs/security.md, "DAG authors").

A DAG file runs at parse time, with whatever the parsing process can reach. A cleaned environment is not a
boundary: a process of the same user reads `/proc/<deployer>/environ`, `~/.aws/credentials` by path, or asks
the instance metadata service for the role's keys. So the parse runs under bubblewrap (`bwrap`, Debian's
`bubblewrap`): new user, pid, network, ipc, uts and cgroup namespaces (no network at all, no deployer process
visible), no capabilities, its own session (no TIOCSTI on the deployer's terminal), killed with the deployer,
and a filesystem of the system folders, the interpreter's installation and the throwaway work folder only,
read-only except that folder. The deployer also makes itself undumpable (`PR_SET_DUMPABLE` 0), so even
without the sandbox a same-user process cannot ptrace it or read its environ.

Where bwrap is missing (macOS, a container without user namespaces) the check refuses to run unless
`airflow_sandbox = "none"` says to run DAG code unconfined; what that leaves open is in docs/security.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from dagmirror.errors import ConfigError

# Read-only system folders and files the interpreter needs; `-try`: absent ones are skipped.
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = (
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/alternatives",
    "/etc/mime.types",
)
_NOBODY = "65534"
_PR_SET_DUMPABLE = 4
_PROBE = (
    "import json, sys; "
    "print(json.dumps(sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix})))"
)


def forbid_dumping() -> None:
    """Make this process undumpable: other processes of its user can no longer ptrace it or read its
    /proc files (environ, mem, fds). Linux only; elsewhere nothing happens (docs/security.md)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def command(sandbox: str, python: str, work: Path) -> list[str]:
    """The argv that runs `python` inside the sandbox (without the script's own arguments). Blocking: it
    finds bwrap and asks the interpreter where it is installed."""
    interpreter = shutil.which(python)
    if interpreter is None:
        raise ConfigError(f"cannot run the Airflow interpreter {python!r}: not found")
    if sandbox == "none":
        return [interpreter]
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise ConfigError(
            "airflow check: bwrap (Debian/Ubuntu package bubblewrap) is not installed, and DAG code must not "
            'run with the deployer\'s access; install it, or set airflow_sandbox = "none" in [deploy] '
            "to parse unconfined (docs/security.md says what that leaves open)"
        )
    return bwrap_argv(bwrap, os.path.abspath(interpreter), interpreter_roots(interpreter), work)


def interpreter_roots(interpreter: str) -> list[str]:
    """The folders the interpreter runs from (its venv and the base installation). `-I`: no environment
    variables or user site; the installation's own site hooks run, as they do for the parse itself."""
    try:
        done = subprocess.run(  # noqa: S603 - the deployer's own interpreter, no DAG code yet
            [interpreter, "-I", "-c", _PROBE],
            capture_output=True,
            timeout=60,
            check=True,
            stdin=subprocess.DEVNULL,
        )
        roots = orjson.loads(done.stdout.splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise ConfigError(f"cannot run the Airflow interpreter {interpreter!r}: {exc}") from None
    return [str(r) for r in roots if isinstance(r, str) and r.startswith("/")]


def bwrap_argv(bwrap: str, interpreter: str, roots: Sequence[str], work: Path) -> list[str]:
    """bwrap's arguments (pure): what the parse can see is exactly what is bound here."""
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    argv += ["--uid", _NOBODY, "--gid", _NOBODY, "--hostname", "dagmirror-airflow-check"]
    for path in _SYSTEM + _ETC:
        argv += ["--ro-bind-try", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 - a fresh tmpfs
    for root in sorted(set(roots)):
        if not any(root == s or root.startswith(s + "/") for s in _SYSTEM):
            argv += ["--ro-bind", root, root]
    argv += ["--bind", str(work), str(work), "--chdir", str(work), "--", interpreter]
    return argv
