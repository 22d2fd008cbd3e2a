"""Has the fleet converged? Pure: the statuses read from the bucket and a target in, one verdict per
instance and a summary out.

An instance is
- **current** when it reports the target release (or a later one: a deploy that came after ours), or, for an
  environment without releases, a complete pass that started after the target time;
- **lagging** when it is live and not current: `--wait` waits for it, `fleet` exits 5 while there is one;
- **silent** when its last status is older than its silence limit (by default 3 of its own heartbeats): it
  may be dead, so it is listed apart and never waited on;
- **running** when it is live but there is nothing to compare it with (no release pointer);
- **stopped** when its last status says it shut down cleanly (listed apart, never waited on);
- **unreadable** when its status object is not a status (listed apart with the reason).

The live fleet has converged when it has at least one live instance and none of them lags: an environment
whose every mirror is silent has not shown that it runs the release.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dagmirror.fleet.status import STOPPED, Status

SILENT_HEARTBEATS = 3  # a status older than this many of its heartbeats is silent


class State(enum.StrEnum):
    CURRENT = "current"
    LAGGING = "lagging"
    RUNNING = "running"  # live, with no release to compare with (an environment without a pointer)
    SILENT = "silent"
    STOPPED = "stopped"
    UNREADABLE = "unreadable"


LIVE = frozenset({State.CURRENT, State.LAGGING, State.RUNNING})


@dataclass(frozen=True, slots=True)
class Target:
    """What every live instance should have: a release (and its pointer seq), or for an environment without
    releases, a complete pass started at or after `since` (epoch seconds)."""

    release: str | None = None
    seq: int | None = None
    since: float | None = None

    @property
    def known(self) -> bool:
        return self.release is not None or self.since is not None

    def reached_by(self, status: Status) -> bool:
        if self.release is not None:
            if status.release == self.release:
                return True
            newer = status.release_seq is not None and self.seq is not None and status.release_seq > self.seq
            return newer and status.release is not None
        if self.since is not None:
            return status.last_success is not None and status.last_success >= self.since
        return False


@dataclass(frozen=True, slots=True)
class Seen:
    """One status object as read: its parsed status, or why it could not be read, and its LastModified."""

    instance: str
    modified: float
    status: Status | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Row:
    instance: str
    state: State
    age: float  # seconds since the status was written (by its own clock), or since LastModified
    status: Status | None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"instance": self.instance, "state": str(self.state), "age": round(self.age, 1)}
        if self.status is not None:
            doc["status"] = self.status.to_dict()  # what the instance said, as it said it
        if self.problem is not None:
            doc["problem"] = self.problem
        return doc


def classify(seen: Seen, target: Target, now: float, silent_after: float | None = None) -> Row:
    """The verdict on one instance at `now`; `silent_after` (seconds) replaces 3 heartbeats when given."""
    status = seen.status
    if status is None:
        return Row(seen.instance, State.UNREADABLE, max(0.0, now - seen.modified), None, seen.problem)
    age = max(0.0, now - status.written)  # a clock ahead of ours is not a reason to call it silent
    limit = silent_after if silent_after is not None else SILENT_HEARTBEATS * status.heartbeat
    if status.state == STOPPED:
        state = State.STOPPED
    elif age > limit:
        state = State.SILENT
    elif not target.known:
        state = State.RUNNING
    elif target.reached_by(status):
        state = State.CURRENT
    else:
        state = State.LAGGING
    return Row(seen.instance, state, age, status)


@dataclass(frozen=True)
class FleetView:
    """Every instance of one environment, judged against one target at one moment."""

    prefix: str
    target: Target
    rows: tuple[Row, ...]

    def count(self, *states: State) -> int:
        return sum(1 for r in self.rows if r.state in states)

    def of(self, *states: State) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.state in states)

    @property
    def converged(self) -> bool:
        return self.target.known and self.count(*LIVE) > 0 and not self.count(State.LAGGING)

    def to_dict(self) -> dict[str, Any]:
        counts = Counter(str(r.state) for r in self.rows)
        return {
            "prefix": self.prefix,
            "target": {"release": self.target.release, "seq": self.target.seq, "since": self.target.since},
            "converged": self.converged,
            "counts": {str(s): counts[str(s)] for s in State},
            "summary": summary(self),
            "instances": [r.to_dict() for r in self.rows],
        }


def judge(
    prefix: str, seen: Sequence[Seen], target: Target, now: float, silent_after: float | None = None
) -> FleetView:
    rows = sorted((classify(s, target, now, silent_after) for s in seen), key=lambda r: r.instance)
    return FleetView(prefix, target, tuple(rows))


def short_release(release: str | None, seq: int | None = None) -> str:
    if release is None:
        return "-"
    return f"{release[:12]}" + (f" (#{seq})" if seq is not None else "")


def describe_target(target: Target) -> str:
    if target.release is not None:
        return short_release(target.release, target.seq)
    if target.since is not None:
        return "a pass after the deploy"
    return "no release"


def summary(view: FleetView) -> str:
    """One line: '998/1000 on 3f9c1a2b4d5e (#12), 2 silent for 12 min' (lagging, stopped, unreadable too)."""
    total = len(view.rows) - view.count(State.STOPPED)
    if not total:
        head = "no live instance"
    elif not view.target.known:
        head = f"{view.count(*LIVE)}/{total} live; no release pointer, so no release to compare with"
    else:
        head = f"{view.count(State.CURRENT)}/{total} on {describe_target(view.target)}"
    parts = [head]
    if lagging := view.count(State.LAGGING):
        parts.append(f"{lagging} lagging")
    if silent := view.of(State.SILENT):
        parts.append(f"{len(silent)} silent for {_minutes([r.age for r in silent])}")
    if unreadable := view.count(State.UNREADABLE):
        parts.append(f"{unreadable} unreadable")
    if stopped := view.count(State.STOPPED):
        parts.append(f"{stopped} stopped")
    if not view.rows:
        parts = ["no instance has reported a status"]
    return ", ".join(parts)


def age_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _minutes(ages: list[float]) -> str:
    low, high = age_text(min(ages)), age_text(max(ages))
    return low if low == high else f"{low} to {high}"
