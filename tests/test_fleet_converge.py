"""Who is current, who lags, who is silent (dagmirror/fleet/converge.py): pure, tested with literals."""

from __future__ import annotations

import dataclasses
from typing import Any

from dagmirror.fleet.converge import Seen, State, Target, classify, judge, summary
from dagmirror.fleet.status import STOPPED, Status

PREFIX = "dags/production/"
NEW, OLD = "3f9c" + "1" * 60, "1a2b" + "2" * 60
NOW = 100_000.0
TARGET = Target(NEW, 12)


def seen(name: str, age: float = 5.0, **changes: Any) -> Seen:
    base = Status(name, PREFIX, NOW - age, 60.0, 0.0, "0.1.0", mode="releases", release=NEW, release_seq=12)
    return Seen(name, NOW - age, dataclasses.replace(base, **changes))


def state(s: Seen, target: Target = TARGET, silent_after: float | None = None) -> State:
    return classify(s, target, NOW, silent_after).state


def test_an_instance_on_the_target_release_is_current_and_one_on_another_lags() -> None:
    assert state(seen("a")) is State.CURRENT
    assert state(seen("a", release=OLD, release_seq=11)) is State.LAGGING
    assert state(seen("a", release=None, release_seq=None, mode="objects")) is State.LAGGING


def test_a_later_release_than_the_target_counts_as_current() -> None:
    # Another deploy came after ours: the instance is past our release, not behind it.
    assert state(seen("a", release=OLD, release_seq=13)) is State.CURRENT
    assert state(seen("a", release=OLD, release_seq=12)) is State.LAGGING


def test_silence_is_three_of_the_instances_own_heartbeats_unless_a_limit_is_given() -> None:
    assert state(seen("a", age=179)) is State.CURRENT
    assert state(seen("a", age=181)) is State.SILENT
    assert state(seen("a", age=181, heartbeat=300.0)) is State.CURRENT
    assert state(seen("a", age=31), silent_after=30) is State.SILENT


def test_a_clock_ahead_of_ours_is_not_silence() -> None:
    row = classify(seen("a", age=-120), TARGET, NOW)
    assert row.state is State.CURRENT
    assert row.age == 0


def test_a_stopped_instance_is_never_waited_on() -> None:
    assert state(seen("a", release=OLD, state=STOPPED)) is State.STOPPED


def test_an_unreadable_status_is_listed_apart_with_its_reason() -> None:
    row = classify(Seen("x", NOW - 30, None, "not JSON"), TARGET, NOW)
    assert (row.state, row.problem, row.age) == (State.UNREADABLE, "not JSON", 30)


def test_without_releases_a_pass_started_after_the_deploy_is_current() -> None:
    target = Target(since=NOW - 10)
    assert state(seen("a", release=None, last_success=NOW - 9), target) is State.CURRENT
    assert state(seen("a", release=None, last_success=NOW - 11), target) is State.LAGGING
    assert state(seen("a", release=None, last_success=None), target) is State.LAGGING


def test_the_live_fleet_converged_when_no_live_instance_lags() -> None:
    view = judge(PREFIX, [seen("a"), seen("b"), seen("c", age=3600, release=OLD)], TARGET, NOW)
    assert view.converged  # the silent one is listed apart, never waited on
    assert not judge(PREFIX, [seen("a"), seen("b", release=OLD)], TARGET, NOW).converged


def test_a_fleet_with_no_live_instance_has_not_shown_it_runs_the_release() -> None:
    assert not judge(PREFIX, [], TARGET, NOW).converged
    assert not judge(PREFIX, [seen("a", age=3600)], TARGET, NOW).converged
    unknown = judge(PREFIX, [seen("a")], Target(), NOW)
    assert not unknown.converged  # no release to compare with
    assert [r.state for r in unknown.rows] == [State.RUNNING]


def test_the_summary_line_counts_current_lagging_silent_stopped_and_unreadable() -> None:
    fleet = [seen(f"pod-{i:04d}") for i in range(995)]
    fleet += [seen("lag-1", release=OLD, release_seq=11), seen("lag-2", release=OLD, release_seq=11)]
    fleet += [seen("gone-1", age=12 * 60), seen("gone-2", age=40 * 60)]
    fleet += [Seen("bad", NOW, None, "not JSON"), seen("old", state=STOPPED)]
    view = judge(PREFIX, fleet, TARGET, NOW)
    assert summary(view) == (
        "995/1000 on 3f9c11111111 (#12), 2 lagging, 2 silent for 12 min to 40 min, 1 unreadable, 1 stopped"
    )
    assert [r.instance for r in view.of(State.LAGGING)] == ["lag-1", "lag-2"]


def test_a_fleet_that_all_stopped_says_so() -> None:
    view = judge(PREFIX, [seen("a", state=STOPPED), seen("b", state=STOPPED)], TARGET, NOW)
    assert summary(view) == "no live instance, 2 stopped"


def test_the_summary_of_the_issue() -> None:
    fleet = [seen(f"pod-{i:04d}") for i in range(998)] + [seen(f"gone-{i}", age=12 * 60) for i in range(2)]
    assert summary(judge(PREFIX, fleet, TARGET, NOW)) == "998/1000 on 3f9c11111111 (#12), 2 silent for 12 min"


def test_json_view_names_every_instance_with_its_state() -> None:
    doc = judge(PREFIX, [seen("a"), Seen("x", NOW, None, "not JSON")], TARGET, NOW).to_dict()
    assert doc["converged"] is True
    counts = {"current": 1, "lagging": 0, "running": 0, "silent": 0, "stopped": 0, "unreadable": 1}
    assert doc["counts"] == counts
    assert [(i["instance"], i["state"]) for i in doc["instances"]] == [("a", "current"), ("x", "unreadable")]
    assert doc["instances"][0]["status"]["release"] == NEW
    assert doc["instances"][1]["problem"] == "not JSON"
