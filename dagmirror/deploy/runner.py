"""One deploy, whatever asked for it: a `DeployRequest` (request.py) -> list the environment -> validate ->
plan -> settle -> write -> record.

Decisions come from plan.py and validate.py, writes from writer.py, requests from bucket.py. Nothing is
written until every check has passed, and a run that would change nothing writes nothing, not even a record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from dagmirror.config.deploy import DeployConfig, EnvPolicy
from dagmirror.deploy.airflow import dag_problems, parse_with_airflow
from dagmirror.deploy.bucket import Bucket
from dagmirror.deploy.plan import DeployPlan, Op, Step, live_after, live_by_path, plan_deploy, settle
from dagmirror.deploy.publish import About, Published, Publisher
from dagmirror.deploy.record import DeployReport, new_deploy_id, planned_results
from dagmirror.deploy.release import Current, bodies_of, next_tree, pin_unchanged
from dagmirror.deploy.request import DeployRequest
from dagmirror.deploy.validate import budget_problems, collision_problems
from dagmirror.deploy.writer import Writer
from dagmirror.errors import DeployRefused, GuardRefused
from dagmirror.models import BODY_ROOM
from dagmirror.source import DeployStore, LiveObject
from dagmirror.trust import Signing
from dagmirror.verify import verify

UNSAFE_NOTE = "published without compare-and-swap: the server ignores conditional writes (opted in)"


@dataclass(frozen=True)
class Pipeline:
    """Runs requests against one bucket; `wants` is the exclude filter (paths it leaves alone are never
    deleted), `user` and `host` go into every record."""

    bucket: Bucket
    wants: Callable[[str], bool]
    clock: Callable[[], float]
    user: str
    host: str
    signing: Signing | None = None  # signed releases: who signs each manifest and pointer

    @property
    def config(self) -> DeployConfig:
        return self.bucket.config

    async def run(self, request: DeployRequest) -> DeployReport:
        if request.problems:  # definitive without the bucket: refuse before any request
            raise DeployRefused(request.problems)
        started, t0 = self.clock(), time.monotonic()
        store = await self.bucket.store()
        prefix, policy = self.config.env_prefix(request.env), self.config.policy(request.env)
        listing, who = await self._listing(store, prefix)
        live, rejected = live_by_path(listing, prefix)
        notes = request.notes + [
            f"already in {request.env} and rejected by the mirror: {r}" for r in rejected
        ]
        publisher = self._publisher(request)
        current = await publisher.current() if publisher else None
        if current is not None and request.tree is not None:
            request = replace(
                request, wanted=pin_unchanged(request.wanted, current.files, request.tree, live)
            )
        plan, kept = await self._plan(request, policy, live, prefix)
        validation = await self._validation(request, policy, live, kept, notes)
        who_ = {"user": self.user, "identity": who}
        report = _report(self.config, request, started, who_, self.host, plan, validation)
        switching = current is not None and current.pointer is None  # the first release is published anyway
        # Signed, a rollback always publishes: to the current release, it re-signs it with a fresh expiry.
        resign = publisher is not None and publisher.signing is not None and request.release is not None
        if request.dry_run or not (plan.writes or plan.deletes or switching or resign):
            return replace(report, seconds=time.monotonic() - t0)  # nothing written, not even a record
        if publisher is not None and current is not None:
            published = await publish_release(publisher, current, request, plan, live, report)
            report = replace(report, release=published.release, pointer_seq=published.seq)
            if not published.cas:
                report.validation["warnings"].append(UNSAFE_NOTE)
        return await self._publish(store, plan, report, t0)

    def _publisher(self, request: DeployRequest) -> Publisher | None:
        if not (self.config.releases and request.publish):
            return None
        prefix = self.config.env_prefix(request.env)
        allow = self.config.allow_no_conditional_writes
        return Publisher(self.bucket, prefix, allow_no_cas=allow, signing=self.signing)

    async def _listing(self, store: DeployStore, prefix: str) -> tuple[tuple[LiveObject, ...], str | None]:
        """The environment's live versions, and who the credentials belong to (asked alongside: best effort,
        never raises, and not waited for when the listing fails)."""
        identity = asyncio.create_task(store.caller_identity())
        try:
            listing = await self.bucket.list_live(prefix)
        except BaseException:
            identity.cancel()
            raise
        return listing, await identity

    async def _plan(
        self, request: DeployRequest, policy: EnvPolicy, live: dict[str, LiveObject], prefix: str
    ) -> tuple[DeployPlan, list[str]]:
        """The plan once every check that needs the listing has passed, and the live paths it leaves."""
        plan = plan_deploy(
            request.wanted,
            live,
            request.scopes,
            wants=self.wants,
            max_fraction=self.config.max_delete_fraction,
            allow_mass_delete=self.config.allow_mass_delete,
        )
        kept = live_after(plan, live)
        _refuse_if_invalid(request, policy, kept)
        if plan.guard:
            raise GuardRefused(f"delete guard: {plan.guard}")
        plan = await self._settle(plan, prefix)
        if request.check_origins:
            await self._check_origins(plan)
        return plan, kept

    async def _settle(self, plan: DeployPlan, prefix: str) -> DeployPlan:
        """HEAD the objects whose ETag cannot tell (SSE-KMS, multipart): their x-amz-meta-xxh3 decides."""
        if not plan.to_check:
            return plan
        checks = list(plan.to_check)
        heads = await self.bucket.pool(checks, lambda s: self.bucket.head(prefix + s.path))
        settled = [settle(step, head) for step, head in zip(checks, heads, strict=True)]
        same = [s for s in settled if s.op is Op.UNCHANGED]
        changed = [s for s in settled if s.op is not Op.UNCHANGED]
        return replace(
            plan,
            writes=tuple(sorted((*plan.writes, *changed), key=_path)),
            unchanged=tuple(sorted((*plan.unchanged, *same), key=_path)),
            to_check=(),
        )

    async def _check_origins(self, plan: DeployPlan) -> None:
        """Every version a rollback copies must still exist (a lifecycle rule may have expired it)."""

        async def missing(step: Step) -> str | None:
            origin = step.wanted.origin
            if origin is None:
                return None
            head = await self.bucket.head(origin.key, origin.version_id)
            return None if head else f"{step.path}: version {origin.version_id} no longer exists"

        gone = [m for m in await self.bucket.pool(list(plan.writes), missing) if m]
        if gone:
            raise DeployRefused(gone)

    async def _validation(
        self,
        request: DeployRequest,
        policy: EnvPolicy,
        live: dict[str, LiveObject],
        kept: list[str],
        notes: list[str],
    ) -> dict[str, Any]:
        """The record's validation section; the Airflow check, when asked for, runs here and may refuse."""
        airflow, airflow_notes = (
            await self._airflow_check(request, live, kept) if request.airflow else (None, [])
        )
        return {
            "python_files": sum(p.endswith(".py") for p in request.wanted),
            "budgets": {"max_file_bytes": policy.max_file_bytes, "max_files": policy.max_files},
            "airflow": airflow,
            "warnings": notes + airflow_notes,
        }

    async def _airflow_check(
        self, request: DeployRequest, live: dict[str, LiveObject], kept: list[str]
    ) -> tuple[dict[str, Any], list[str]]:
        """Parse the environment as it will be: the deployed files plus every file the deploy leaves."""
        prefix = self.config.env_prefix(request.env)

        async def fetch(path: str) -> bytes:
            obj = await self.bucket.get_version(
                prefix + path, live[path].version_id, max_bytes=live[path].size + BODY_ROOM
            )
            verify(obj)
            return obj.body

        tree = {p: w.body for p, w in request.wanted.items() if w.body is not None}
        tree |= dict(zip(kept, await self.bucket.pool(kept, fetch), strict=True))
        result = await parse_with_airflow(
            tree,
            python=self.config.airflow_python,
            seconds=self.config.airflow_timeout,
            confine=self.config.airflow_sandbox,
        )
        problems, notes = dag_problems(result, set(request.wanted), request.env)
        if problems:
            raise DeployRefused(problems)
        summary = {
            "version": result.version,
            "files": len(result.dags),
            "dags": sum(map(len, result.dags.values())),
        }
        return summary, notes

    async def _publish(
        self, store: DeployStore, plan: DeployPlan, report: DeployReport, t0: float
    ) -> DeployReport:
        """Write the plan (writer.py: writes, then deletes only if every write landed), then the record."""
        writer = Writer(
            store, retry=self.config.retry, concurrency=self.config.concurrency, sleep=self.bucket.sleep
        )
        files = await writer.apply(plan, report.prefix)
        return await writer.record(replace(report, files=files, seconds=time.monotonic() - t0))


def _report(
    config: DeployConfig,
    request: DeployRequest,
    started: float,
    who: dict[str, Any],
    host: str,
    plan: DeployPlan,
    validation: dict[str, Any],
) -> DeployReport:
    """The report as planned: what a dry run prints, and what the writes then replace `files` of."""
    prefix = config.env_prefix(request.env)
    return DeployReport(
        deploy_id=new_deploy_id(),
        kind=request.kind,
        env=request.env,
        bucket=config.bucket.bucket,
        prefix=prefix,
        scopes=request.scopes,
        started_at=started,
        seconds=0.0,
        who=who,
        host=host,
        git=request.git,
        files=planned_results(plan, prefix),
        validation=validation,
        origin=request.origin,
        dry_run=request.dry_run,
    )


async def publish_release(
    publisher: Publisher,
    current: Current,
    request: DeployRequest,
    plan: DeployPlan,
    live: dict[str, LiveObject],
    report: DeployReport,
) -> Published:
    """Publish the release this run makes (pointer last), before any plain file is written."""
    about = About(report.started_at, report.who, report.host, report.git)
    if request.release is not None and request.tree is not None:  # rollback: the pointer moves
        return await publisher.move(current, request.release, request.tree, about)
    if current.pointer is None:  # switching to releases: the plain files this deploy leaves, read once
        with_body = {p for p, w in request.wanted.items() if w.body is not None}
        current = await publisher.from_plain({p: o for p, o in live.items() if p not in with_body})
    mine = next_tree(current.files, [r.path for r in plan.deletes], request.wanted)
    return await publisher.publish(current, mine, bodies_of(request.wanted), about)


def _refuse_if_invalid(request: DeployRequest, policy: EnvPolicy, kept: list[str]) -> None:
    problems = collision_problems(request.wanted, kept, request.env)
    if request.budgets:
        sizes = {p: w.size for p, w in request.wanted.items()}
        problems += budget_problems(sizes, len(kept) + len(request.wanted), policy, request.env)
    if problems:
        raise DeployRefused(problems)


def _path(step: Step) -> str:
    return step.path
