"""What people and machines read: one-line summaries and details on stdout, `--json` as one object on the
last line, a progress line on a terminal. Everything a record or a key supplies is shown through `shown()`,
so no byte from the bucket can drive the terminal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
import orjson

from dagmirror.engine import Mirror
from dagmirror.errors import printable
from dagmirror.models import SyncReport

if TYPE_CHECKING:  # deploy's code is loaded only by the commands that deploy
    from dagmirror.deploy import DeployReport
    from dagmirror.deploy.gc import GcReport


def shown(value: object) -> str:
    """`value` as text safe for a terminal: control and disguising characters become '?'."""
    return printable(value)


def as_json(doc: Mapping[str, Any]) -> None:
    click.echo(orjson.dumps(doc).decode())


# -- sync ------------------------------------------------------------------------------------------------
def sync_report(report: SyncReport, json: bool) -> None:
    if json:
        as_json(report.to_dict())
        return
    verb = "would download" if report.dry_run else "downloaded"
    click.echo(
        f"{report.source} -> {report.dest}: listed {report.listed}, {verb} {report.downloaded} "
        f"({report.bytes / 1e6:.2f} MB), unchanged {report.unchanged}, deleted {report.deleted}, "
        f"rejected {report.rejected}, failed {report.failed} in {report.seconds:.2f}s"
    )
    if report.release:
        click.echo(f"  release {report.release} (seq {report.release_seq})")
    if report.generation:
        removed = f", removed {len(report.generations_removed)} older" if report.generations_removed else ""
        click.echo(f"  generation {report.generation}{removed}")
    if report.requests:
        click.echo("  requests: " + ", ".join(f"{k} {v}" for k, v in sorted(report.requests.items())))
    for t in report.tombstones:
        click.echo(f"  {'would delete' if report.dry_run else 'deleted'} {t.path}")
    for r in report.rejections:
        click.echo(shown(f"  rejected {r.key!r}: {r.reason}"))
    for f in report.failures:
        click.echo(shown(f"  failed {f.key!r}: {f.error}"))


async def progress_line(mirror: Mirror) -> None:
    """A one-line progress display on a terminal, shown only once a pass has run for a second."""
    await asyncio.sleep(1.0)
    while True:
        p = mirror.progress
        listing = "listed" if p.listing_done else "listing"
        line = f"{listing} {p.listed} · downloaded {p.downloaded}/{p.queued} · {p.bytes / 1e6:.1f} MB"
        click.echo(f"\r\033[K{line}", nl=False, err=True)
        await asyncio.sleep(0.25)


# -- deploy ----------------------------------------------------------------------------------------------
_VERB = {"deploy": "deploy", "rollback": "roll back", "promote": "promote"}


def deploy_report(report: DeployReport, json: bool) -> None:
    if report.record_error:
        click.echo(f"dagmirror: error: {shown(report.record_error)}", err=True)
    if json:
        as_json(report.to_dict())
        return
    click.echo(_deploy_headline(report))
    for f in report.files:
        if f.action != "unchanged" or f.error:
            version = f" (version {f.version_id})" if f.version_id and f.action != "failed" else ""
            error = f": {f.error}" if f.error else ""
            click.echo(shown(f"  {f.action:<9} {f.path}{version}{error}"))
    if airflow := report.validation.get("airflow"):
        version, files = airflow["version"], airflow["files"]
        click.echo(shown(f"  airflow check: Airflow {version} parsed {files} DAG files, no errors"))
    for note in report.validation.get("warnings", ()):
        click.echo(shown(f"  warning: {note}"))
    if report.release:
        click.echo(f"  release {report.release} (pointer seq {report.pointer_seq})")
    if report.record_key:
        click.echo(f"  record s3://{report.bucket}/{report.record_key}")


def _deploy_headline(report: DeployReport) -> str:
    c = report.counts()
    origin = "".join(f" ({k.replace('_', ' ')} {v})" for k, v in report.origin.items())
    if report.dry_run:
        return (
            f"{report.env}: dry run of a {report.kind}{origin}: would upload {c['upload']}, "
            f"copy {c['copy']}, delete {c['delete']}; {c['unchanged']} unchanged"
        )
    if report.result == "unchanged":
        verb = _VERB[report.kind]
        return f"{report.env}: nothing to {verb}{origin}: {c['unchanged']} files unchanged (no record)"
    return (
        f"{report.env}: {report.kind} {report.deploy_id}{origin}: uploaded {c['upload']}, copied "
        f"{c['copy']}, unchanged {c['unchanged']}, deleted {c['delete']}, failed {c['failed']} "
        f"in {report.seconds:.2f}s"
    )


def refused(headline: str, problems: list[str], exit_code: int, json: bool) -> None:
    click.echo(f"dagmirror: error: {shown(headline)}", err=True)
    for line in problems:  # problems name keys, paths and Airflow's words: never raw
        click.echo(f"dagmirror: error:   {shown(line)}", err=True)
    if json:
        as_json({"result": "refused", "exit": exit_code, "problems": problems})


# -- history ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HistoryLine:
    """One deploy record as `history` shows it, every field checked for its type (a record is whatever
    someone with write access to the bucket put there)."""

    deploy_id: str
    time: float
    kind: str
    result: str
    user: str
    identity: str
    host: str
    commit: str
    dirty: bool
    origin: tuple[tuple[str, str], ...]
    counts: tuple[tuple[str, int], ...]
    release: str = ""

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> HistoryLine:
        """Raises TypeError or ValueError (naming nothing secret) when a field is not what a record holds."""
        who, git = _mapping(d.get("who")), _mapping(d.get("git") or {})
        when = d["time"]
        if isinstance(when, bool) or not isinstance(when, (int, float)) or not 0 <= when < 1e11:
            raise ValueError(f"time {when!r} is not a time")
        counts = _mapping(d.get("counts") or {})
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values()):
            raise TypeError("counts are not whole numbers")
        return cls(
            deploy_id=_text(d["deploy_id"]),
            time=float(when),
            kind=_text(d.get("kind", "deploy")),
            result=_text(d.get("result") or ""),
            user=_text(who.get("user") or "?"),
            identity=_text(who.get("identity") or ""),
            host=_text(d.get("host") or ""),
            commit=_text(git.get("commit") or ""),
            dirty=bool(git.get("dirty")),
            origin=tuple((_text(k), _text(v)) for k, v in _mapping(d.get("origin") or {}).items()),
            counts=tuple((_text(k), int(v)) for k, v in counts.items()),
            release=_text(d.get("release") or ""),
        )

    def line(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(self.time))
        who = self.user + (f" ({self.identity})" if self.identity else "")
        commit = f"git {self.commit[:10]}{'+dirty' if self.dirty else ''}" if self.commit else ""
        origin = " ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.origin)
        counts = ", ".join(f"{k} {v}" for k, v in self.counts if v)
        release = f"release {self.release[:12]}" if self.release else ""
        fields = [when, self.deploy_id, f"{self.kind:<8}", self.result, release, who, f"@{self.host}", commit]
        fields.append(origin)
        return shown("  ".join(f for f in [*fields, counts] if f))


def gc_report(report: GcReport, json: bool) -> None:
    if json:
        as_json(report.to_dict())
        return
    verb = "would delete" if report.dry_run else "deleted"
    d = report.deleted
    click.echo(
        f"gc s3://{shown(report.bucket)}: {verb} {d['bodies']} bodies, {d['manifests']} manifests, "
        f"{d['archives']} archives ({report.bytes_freed:,} bytes); kept {len(report.plan.kept)} releases of "
        f"{len(report.environments)} environments (last {report.keep} each), "
        f"{report.plan.protected_young} objects younger than the grace period"
    )
    for line in report.unreadable:
        click.echo(shown(f"warning: unreadable manifest kept: {line}"), err=True)
    for line in report.restored:
        click.echo(shown(f"warning: {line}"), err=True)
    for line in (*report.failed, *report.damaged):
        click.echo(shown(f"dagmirror: error: {line}"), err=True)


def history(deploys: list[dict[str, Any]], json: bool) -> None:
    if json:
        as_json({"deploys": deploys})  # newest first
        return
    if not deploys:
        click.echo("no deploys recorded")
    for d in deploys:
        if "error" in d:
            click.echo(shown(f"{d['deploy_id']}  {d['error']}"))
            continue
        try:
            click.echo(HistoryLine.parse(d).line())
        except (KeyError, TypeError, ValueError) as exc:
            click.echo(shown(f"{d.get('deploy_id')}  unreadable record: {exc}"))


def _mapping(value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value
