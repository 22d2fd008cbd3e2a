"""S3 key -> safe relative POSIX path under DEST, or a rejection reason. Pure: no I/O.

A key is mirrored only if its path cannot escape DEST, cannot alias another path, and can be created on a
POSIX filesystem. Everything else is rejected with a reason that names the rule it broke.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

from dagmirror.models import Rejection

RESERVED_DIR = ".dagmirror"  # dagmirror's own state and temp files live here
MAX_SEGMENT_BYTES = 255  # NAME_MAX on every common Linux filesystem
MAX_PATH_BYTES = 4000  # below PATH_MAX (4096) once DEST itself is prepended

# C0 controls, DEL and C1 controls: invisible in logs, and NUL cannot be in a path at all.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Bidirectional overrides and isolates make a name display as another ('evil\u202eyp.py' shows as
# 'evilpy.py'); line and paragraph separators split log lines. Neither has a place in a DAG path.
_DISGUISE = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
# Unicode noncharacters (U+FDD0..U+FDEF and the last two code points of every plane) are never text: a
# server may store such a key yet answer its 404 without a parseable NoSuchKey, so its deletion could never
# be confirmed and the file would stay forever.
_NONCHARACTER = re.compile(
    "[\ufdd0-\ufdef" + "".join(f"{chr(p << 16 | 0xFFFE)}{chr(p << 16 | 0xFFFF)}" for p in range(17)) + "]"
)


def key_to_path(key: str, prefix: str) -> str | Rejection | None:
    """Map `key` listed under `prefix` to a relative path; None for folder markers (skipped silently)."""
    if not key.startswith(prefix):
        return Rejection(key, "key is outside the source prefix")
    rel = key[len(prefix) :]
    if rel.endswith("/"):  # a folder marker: nothing to write, but a hostile one is still reported
        folder = rel.rstrip("/")
        reason = _unsafe_reason(folder) if folder else None
        return Rejection(key, reason) if reason else None
    if rel == "":
        return None
    reason = _unsafe_reason(rel)
    return Rejection(key, reason) if reason else rel


def _unsafe_reason(rel: str) -> str | None:  # noqa: PLR0911 - one return per rule reads best
    if _CONTROL.search(rel):
        return "control character in key"
    if _DISGUISE.search(rel):
        return "bidirectional-override or line-separator character in key"
    if _NONCHARACTER.search(rel):
        return "Unicode noncharacter in key"
    if "\\" in rel:
        return "backslash in key"
    if rel.startswith("/"):
        return "absolute path (leading '/')"
    try:
        encoded_len = len(rel.encode("utf-8"))
    except UnicodeEncodeError:
        return "key is not valid UTF-8"
    if encoded_len > MAX_PATH_BYTES:
        return f"path longer than {MAX_PATH_BYTES} bytes"
    segments = rel.split("/")
    if segments[0] == RESERVED_DIR:
        return f"'{RESERVED_DIR}/' is reserved for dagmirror's state"
    for segment in segments:
        if segment == "":
            return "empty path segment ('//')"
        if segment in (".", ".."):
            return f"'{segment}' path segment"
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return f"path segment longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def normalize_prefix(prefix: str) -> str:
    """'dags/dev' and 'dags/dev/' both mean the folder dags/dev/; '' means the whole bucket."""
    prefix = prefix.lstrip("/")
    return prefix if prefix == "" or prefix.endswith("/") else prefix + "/"


@dataclass(frozen=True, slots=True)
class PathFilter:
    """include/exclude globs over the relative path (fnmatch, case-sensitive, `*` also matches '/').

    A path is mirrored when it matches any include (or there are none) and no exclude.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, include: Sequence[str], exclude: Sequence[str]) -> PathFilter:
        return cls(tuple(include), tuple(exclude))

    def wants(self, path: str) -> bool:
        if self.include and not any(fnmatch.fnmatchcase(path, g) for g in self.include):
            return False
        return not any(fnmatch.fnmatchcase(path, g) for g in self.exclude)
