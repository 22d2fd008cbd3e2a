"""The instance status record: what one `dagmirror run` says about one environment it mirrors, stored at
`s3://BUCKET/metadata/fleet/<env prefix><instance id>.json` (`metadata/fleet/dags/production/pod-a.json`).
Pure: building, naming, encoding and parsing.

Mirrors write these objects and deployers read them, so a status is untrusted input: `parse_status` checks
every field's type and range, caps every text, and refuses a body larger than `MAX_STATUS_BYTES`; whoever
prints a field still passes it through the terminal filter (cli/render.py `shown`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from dagmirror.config.fleet import HEARTBEAT_RANGE, instance_id_problem

ROOT = "metadata/fleet/"
FORMAT = "dagmirror.status/1"
MAX_STATUS_BYTES = 16 << 10  # a status is a few hundred bytes
MAX_ERROR_CHARS = 300
MAX_TEXT_CHARS = 64  # version, mode, state
MAX_PREFIX_CHARS = 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_LATEST = 1e11  # epoch seconds in year 5138: anything later is not a time a mirror wrote

RUNNING, STOPPED = "running", "stopped"


class StatusError(ValueError):
    """A status object that is not one: the message names the field, never more than a short excerpt."""


def status_prefix(prefix: str) -> str:
    """Where the statuses of the environment at `prefix` ('' or ending in '/') live."""
    return f"{ROOT}{prefix}"


def status_key(prefix: str, instance: str) -> str:
    return f"{status_prefix(prefix)}{instance}.json"


def instance_of(key: str, prefix: str) -> str | None:
    """The instance id a status key names, or None when the key is not one (a deeper key, another name)."""
    name = key.removeprefix(status_prefix(prefix))
    if name == key or not name.endswith(".json"):
        return None
    instance = name.removesuffix(".json")
    return instance if instance_id_problem(instance) is None else None


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` as one bounded line: runs of control characters (newlines, ESC) become one space."""
    flat = _CONTROLS.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class Status:
    """One instance's view of one environment. Times are epoch seconds of the instance's clock."""

    instance: str
    prefix: str  # the environment's prefix, e.g. 'dags/production/'
    written: float  # when this record was written
    heartbeat: float  # the instance writes at least this often while it runs
    started: float  # when the instance started
    version: str  # dagmirror's version on the instance
    state: str = RUNNING  # RUNNING, or STOPPED after a clean shutdown
    mode: str = ""  # how the last complete pass learned what changed: 'objects', 'releases' ('' before one)
    release: str | None = None  # the release installed in DEST (releases mode)
    release_seq: int | None = None
    last_success: float | None = None  # when the last complete pass started: it saw what was published before
    last_error: str | None = None  # why the last pass failed or was partial; None after a clean pass
    failures: int = 0  # failed passes in a row

    def encode(self) -> bytes:
        doc = {
            "format": FORMAT,
            "instance": self.instance,
            "prefix": self.prefix,
            "written": round(self.written, 3),
            "heartbeat": self.heartbeat,
            "started": round(self.started, 3),
            "version": self.version,
            "state": self.state,
            "mode": self.mode,
            "release": self.release,
            "release_seq": self.release_seq,
            "last_success": None if self.last_success is None else round(self.last_success, 3),
            "last_error": self.last_error,
            "failures": self.failures,
        }
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    def to_dict(self) -> dict[str, Any]:
        return dict(orjson.loads(self.encode()))


def parse_status(body: bytes, *, prefix: str, instance: str) -> Status:
    """The status of `instance` in the environment at `prefix`; StatusError (one line) for anything else."""
    if len(body) > MAX_STATUS_BYTES:
        raise StatusError(f"larger than {MAX_STATUS_BYTES} bytes")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise StatusError("not JSON") from None
    if not isinstance(doc, dict):
        raise StatusError("not a JSON object")
    if doc.get("format") != FORMAT:
        raise StatusError(f"format {_excerpt(doc.get('format'))}, expected {FORMAT!r}")
    try:
        status = _status(doc)
    except KeyError as exc:
        raise StatusError(f"missing field {exc}") from None
    except (TypeError, ValueError) as exc:
        raise StatusError(str(exc)) from None
    if status.instance != instance:
        raise StatusError(f"names instance {_excerpt(status.instance)}, but is stored as {instance!r}")
    if status.prefix != prefix:
        raise StatusError(f"names prefix {_excerpt(status.prefix)}, expected {prefix!r}")
    return status


def _status(doc: dict[str, Any]) -> Status:
    instance = _text(doc, "instance", 253)
    if problem := instance_id_problem(instance):
        raise ValueError(problem)
    release = doc.get("release")
    if release is not None and not (isinstance(release, str) and _SHA256.fullmatch(release)):
        raise ValueError(f"release {_excerpt(release)} is not a release id")
    error = doc.get("last_error")
    return Status(
        instance=instance,
        prefix=_text(doc, "prefix", MAX_PREFIX_CHARS),
        written=_time(doc, "written"),
        heartbeat=_number(doc, "heartbeat", *HEARTBEAT_RANGE),  # what `dagmirror run` accepts
        started=_time(doc, "started"),
        version=one_line(_text(doc, "version", MAX_TEXT_CHARS), MAX_TEXT_CHARS),
        state=_choice(doc, "state", (RUNNING, STOPPED)),
        mode=_choice(doc, "mode", ("", "objects", "releases")),
        release=release,
        release_seq=None if doc.get("release_seq") is None else _count(doc, "release_seq"),
        last_success=None if doc.get("last_success") is None else _time(doc, "last_success"),
        last_error=None if error is None else one_line(_text(doc, "last_error", MAX_ERROR_CHARS)),
        failures=_count(doc, "failures"),
    )


def _text(doc: dict[str, Any], name: str, limit: int) -> str:
    value = doc[name]
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected text, got {type(value).__name__}")
    if len(value) > limit:
        raise ValueError(f"{name}: longer than {limit} characters")
    return value


def _choice(doc: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = doc[name]
    if value not in allowed:
        raise ValueError(f"{name}: {_excerpt(value)} is not one of {', '.join(map(repr, allowed))}")
    return str(value)


def _number(doc: dict[str, Any], name: str, low: float, high: float) -> float:
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name}: {value!r:.40} is out of range")
    return float(value)


def _time(doc: dict[str, Any], name: str) -> float:
    return _number(doc, name, 0.0, _LATEST)


def _count(doc: dict[str, Any], name: str) -> int:
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError(f"{name}: expected a whole number >= 0, got {_excerpt(value)}")
    return value


def _excerpt(value: object) -> str:
    return f"{value!r:.60}"
