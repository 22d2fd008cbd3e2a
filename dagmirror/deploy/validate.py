"""Pure checks that refuse a deploy before anything is written: key safety (the mirror's own rules),
paths that would collide with files already in the environment, Python syntax, and budgets."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

from dagmirror.config.deploy import EnvPolicy
from dagmirror.keys import key_to_path
from dagmirror.models import Rejection
from dagmirror.plan import PathClaims

MAX_KEY_BYTES = 1024  # S3's limit on a key, prefix included


def key_problems(paths: Iterable[str], prefix: str) -> list[str]:
    """Paths the mirror would reject under `prefix` (keys.py decides), and keys too long for S3."""
    problems = []
    for path in sorted(paths):
        mapped = key_to_path(prefix + path, prefix)
        if isinstance(mapped, Rejection):
            problems.append(f"{path!r}: {mapped.reason}")
        elif mapped is None:
            problems.append(f"{path!r}: not a file name")
        elif len((prefix + path).encode("utf-8")) > MAX_KEY_BYTES:
            problems.append(f"{path!r}: key longer than {MAX_KEY_BYTES} bytes (S3's limit)")
    return problems


def collision_problems(deployed: Iterable[str], kept: Iterable[str], env: str) -> list[str]:
    """A file and a folder of the same name cannot both be mirrored (the mirror would reject the file).
    Deployed paths are claimed first, so a clash is reported on the path already in the environment."""
    claims = PathClaims()
    problems = [f"{p}: {why}" for p in sorted(deployed) if (why := claims.claim(p))]
    problems += [f"{p} (already in {env}): {why}" for p in sorted(kept) if (why := claims.claim(p))]
    return problems


def compile_problems(files: Mapping[str, bytes]) -> tuple[list[str], list[str]]:
    """Compile every `.py` (nothing runs): errors as 'path:line: message', and compiler warnings."""
    errors: list[str] = []
    notes: list[str] = []
    for path in sorted(p for p in files if p.endswith(".py")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                compile(files[path], path, "exec", dont_inherit=True)
            except SyntaxError as exc:
                where = f"{path}:{exc.lineno}" if exc.lineno else path
                errors.append(f"{where}: {exc.msg}")
            except ValueError as exc:  # e.g. a NUL byte in the source
                errors.append(f"{path}: {exc}")
        notes += [f"{path}:{w.lineno}: {w.category.__name__}: {w.message}" for w in caught]
    return errors, notes


def budget_problems(sizes: Mapping[str, int], files_after: int, policy: EnvPolicy, env: str) -> list[str]:
    problems = []
    if policy.max_file_bytes is not None:
        problems += [
            f"{path}: {size} bytes, over the {env} budget of {policy.max_file_bytes} bytes per file"
            for path, size in sorted(sizes.items())
            if size > policy.max_file_bytes
        ]
    if policy.max_files is not None and files_after > policy.max_files:
        problems.append(f"{env} would hold {files_after} files, over its budget of {policy.max_files}")
    return problems
