"""The developer's side of a deploy: which local files map to which paths of an environment, and who and
what (user, git commit) is deploying them."""

from __future__ import annotations

import getpass
import os
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagmirror.errors import ConfigError
from dagmirror.keys import PathFilter

SKIPPED_DIRS = frozenset({".git", "__pycache__"})


@dataclass
class LocalTree:
    """Files by environment-relative path; the folders directory arguments own (removals there delete);
    and problems that refuse the deploy (symlinks, special files, two files for one path)."""

    files: dict[str, bytes] = field(default_factory=dict)
    origins: dict[str, Path] = field(default_factory=dict)
    scopes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_local(paths: Sequence[Path], *, root: Path | None, exclude: PathFilter) -> LocalTree:
    """Map PATH arguments to environment paths.

    Without `root`, a file goes to the environment's top level under its own name and a directory's
    contents go to the top level (the directory owns the whole environment). With `root`, every PATH maps to
    its path relative to `root`, and a directory owns only its own folder of the environment.
    """
    tree = LocalTree()
    for path in paths:
        if not path.exists() and not path.is_symlink():
            raise ConfigError(f"{path}: no such file or directory")
        rel = _relative(path, root)
        if path.is_dir() and not path.is_symlink():
            tree.scopes.append(rel + "/" if rel else "")
            _walk(path, rel, exclude, tree)
        else:
            _add(path, rel, exclude, tree)
    tree.scopes = sorted(set(tree.scopes))
    return tree


def _relative(path: Path, root: Path | None) -> str:
    if root is None:
        return "" if path.is_dir() and not path.is_symlink() else path.name
    base = root.resolve()
    where = path.parent.resolve() / path.name  # resolve the folders, never the (possibly symlinked) file
    try:
        rel = where.relative_to(base)
    except ValueError:
        raise ConfigError(f"{path} is not inside the deploy root {root}") from None
    return "" if rel == Path(".") else rel.as_posix()


def _walk(top: Path, rel_top: str, exclude: PathFilter, tree: LocalTree) -> None:
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            if name in SKIPPED_DIRS:
                continue
            if (here / name).is_symlink():
                tree.problems.append(f"{here / name}: symlinked folder; deploy the folder it points to")
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            full = here / name
            rel = os.path.relpath(full, top)
            _add(full, f"{rel_top}/{rel}" if rel_top else rel, exclude, tree)


def _add(full: Path, rel: str, exclude: PathFilter, tree: LocalTree) -> None:
    if not exclude.wants(rel):
        return
    mode = full.lstat().st_mode
    if stat.S_ISLNK(mode):
        tree.problems.append(f"{full}: symlink; deploy the file it points to")
    elif not stat.S_ISREG(mode):
        tree.problems.append(f"{full}: not a regular file")
    elif rel in tree.origins and tree.origins[rel].resolve() != full.resolve():
        tree.problems.append(f"{rel}: given twice, by {tree.origins[rel]} and {full}")
    else:
        tree.files[rel] = full.read_bytes()
        tree.origins[rel] = full


def local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return f"uid-{os.getuid()}"


def git_info(paths: Sequence[Path]) -> dict[str, Any] | None:
    """The commit checked out where the deploy runs, and whether the deployed paths differ from it
    (modified, staged or untracked); None outside a git repository or without git."""
    if not paths:
        return None
    first = paths[0].absolute()
    where = first if first.is_dir() else first.parent
    targets = [str(p.absolute()) for p in paths]
    try:
        commit = _git(where, "rev-parse", "HEAD")
        status = _git(where, "status", "--porcelain", "--", *targets)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.strip(), "dirty": bool(status.strip())}


def _git(where: Path, *args: str) -> str:
    return subprocess.run(  # noqa: S603 - fixed git subcommands; the only variable parts are paths
        ["git", "-C", str(where), *args],  # noqa: S607 - git is whatever `git` the developer runs
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
