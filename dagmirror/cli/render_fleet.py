"""What people and `--json` read about a fleet (`dagmirror fleet`, `--wait`): the table, the summary line,
the progress of a wait and its outcome. Every field of a status object passes through `render.shown()`:
instances write them, and no byte of theirs may drive the deployer's terminal."""

from __future__ import annotations

from typing import Any

import click

from dagmirror.cli.render import as_json, shown
from dagmirror.fleet.converge import LIVE, FleetView, Row, State, age_text, short_release, summary

_HEADER = ("INSTANCE", "RELEASE", "AGE", "STATE", "NOTE")


def fleet(view: FleetView, env: str, json: bool) -> None:
    """The table (one row per instance, by name), then the summary line; or one JSON object."""
    if json:
        as_json({"env": env, **view.to_dict()})
        return
    rows = [_HEADER, *(_cells(r) for r in view.rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER) - 1)]
    for row in rows:
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        click.echo(line.rstrip())
    click.echo(shown(f"{env}: {summary(view)}"))


def _cells(row: Row) -> tuple[str, ...]:
    s = row.status
    if s is None:
        release = "-"
    elif s.release is None:
        release = f"({s.mode or 'no pass yet'})"
    else:
        release = short_release(s.release, s.release_seq)
    note = row.problem or (s.last_error if s is not None and s.last_error else "") or ""
    if s is not None and s.failures:
        note = f"{s.failures} failed passes: {note}" if s.failures > 1 else f"failed pass: {note}"
    return tuple(shown(c) for c in (row.instance, release, age_text(row.age), str(row.state), note))


class WaitProgress:
    """`--wait`'s progress on stderr: a line each time the summary changes (not each look, so a CI log
    stays short), and the failed looks."""

    def __init__(self, env: str) -> None:
        self._env = env
        self._last = ""

    def __call__(self, view: FleetView, waited: float) -> None:
        line = summary(view)
        if line != self._last:
            click.echo(shown(f"  {waited:5.1f}s  {line}"), err=True)
            self._last = line

    def trouble(self, exc: Exception, waited: float) -> None:
        click.echo(shown(f"  {waited:5.1f}s  could not read the fleet, retrying: {exc}"), err=True)


def waiting(env: str, target: str, seconds: float) -> None:
    click.echo(
        shown(f"{env}: waiting up to {seconds:g}s for every live instance to report {target}"), err=True
    )


def waited(view: FleetView | None, env: str, seconds: float, json: bool) -> dict[str, Any]:
    """The outcome of a wait as the JSON report's `fleet` field; in text, the result (stdout) or, when the
    time ran out, the laggards as errors and the silent and stopped instances apart (stderr)."""
    if view is None:
        click.echo(f"dagmirror: error: {env}: the fleet could not be read within {seconds:g}s", err=True)
        return {"converged": False, "error": "the fleet could not be read"}
    if json:
        return view.to_dict()
    if view.converged:
        click.echo(shown(f"{env}: converged: {summary(view)}"))
        return view.to_dict()
    line = f"dagmirror: error: {env}: not converged after {seconds:g}s: {summary(view)}"
    click.echo(shown(line), err=True)
    for row in view.of(State.LAGGING):
        click.echo(f"dagmirror: error:   lagging {_line(row)}", err=True)
    if not view.count(*LIVE):
        click.echo("dagmirror: error:   no live instance reports a status for this environment", err=True)
    for row in view.of(State.SILENT, State.STOPPED, State.UNREADABLE):
        click.echo(f"  {row.state} (not waited on): {_line(row)}", err=True)
    return view.to_dict()


def _line(row: Row) -> str:
    instance, release, age, _, note = _cells(row)
    return f"{instance} on {release}, {age} ago" + (f": {note}" if note else "")
