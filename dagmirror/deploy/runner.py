"""The deploy pipeline: gather what each path should hold -> validate -> plan -> write -> record.

`Deployer` runs it for a deploy (local files), a promote (another environment's live versions) and a
rollback (the versions a record names). Decisions come from plan.py and validate.py, writes from
writer.py; every request goes through a `DeployStore` (source/store.py in production, source/memory.py in unit
tests). Nothing is written until every check has passed.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from dagmirror.config.deploy import DeployConfig, EnvPolicy
from dagmirror.deploy.airflow import dag_problems, parse_with_airflow
from dagmirror.deploy.local import git_info, local_user, read_local
from dagmirror.deploy.plan import (
    DeployPlan,
    Op,
    Origin,
    Step,
    Wanted,
    live_after,
    live_by_path,
    plan_deploy,
    settle,
)
from dagmirror.deploy.record import (
    DeployReport,
    check_deploy_id,
    deploy_id_of,
    new_deploy_id,
    parse_record,
    planned_results,
    records_prefix,
    summary,
    wanted_from_record,
)
from dagmirror.deploy.validate import budget_problems, collision_problems, compile_problems, key_problems
from dagmirror.deploy.writer import Writer
from dagmirror.errors import ConfigError, DagmirrorError, DeployRefused, GuardRefused
from dagmirror.keys import PathFilter
from dagmirror.pool import bounded_map
from dagmirror.retry import Sleep, retrying
from dagmirror.source import DeployStore, LiveObject
from dagmirror.verify import verify, xxh3_hex

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Job:
    """Everything one run needs besides the environment's listing."""

    kind: str
    env: str
    wanted: dict[str, Wanted]
    scopes: tuple[str, ...]
    problems: list[str]
    notes: list[str]
    dry_run: bool
    git: dict[str, Any] | None = None
    origin: dict[str, Any] = field(default_factory=dict)
    budgets: bool = True
    airflow: bool = False
    check_origins: bool = False


class Deployer:
    """Deploys to the environments of one bucket. Use as `async with Deployer(config) as d`."""

    def __init__(
        self,
        config: DeployConfig,
        *,
        store: DeployStore | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        user: str | None = None,
        host: str | None = None,
    ) -> None:
        self.config = config
        self._store = store
        self._owns_store = store is None
        self._sleep = sleep
        self._clock = clock
        self._user = user or local_user()
        self._host = host or socket.gethostname()
        self._filter = PathFilter.of((), config.exclude)

    async def __aenter__(self) -> Deployer:
        return self  # the bucket is opened on first use: a deploy refused locally never needs it

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None and self._owns_store:
            await self._store.aclose()
            self._store = None

    # -- the four commands -----------------------------------------------------------------------------------
    async def deploy(
        self, paths: Sequence[Path], env: str, *, dry_run: bool = False, airflow_check: bool | None = None
    ) -> DeployReport:
        """Make `env` hold `paths` (files, or directories whose removed files are deleted there too)."""
        prefix = self.config.env_prefix(env)
        tree = await asyncio.to_thread(read_local, paths, root=self.config.root, exclude=self._filter)
        syntax, notes = compile_problems(tree.files)
        wanted = {p: _from_body(p, body) for p, body in tree.files.items()}
        problems = tree.problems + key_problems(wanted, prefix) + syntax
        job = _Job("deploy", env, wanted, tuple(tree.scopes), problems, notes, dry_run)
        job.git = await asyncio.to_thread(git_info, paths)
        job.airflow = self._wants_airflow(env, airflow_check)
        return await self._run(job)

    async def promote(
        self, source: str, target: str, *, dry_run: bool = False, airflow_check: bool | None = None
    ) -> DeployReport:
        """Make `target` hold exactly the live versions of `source`, by server-side copies."""
        source_prefix, target_prefix = self.config.env_prefix(source), self.config.env_prefix(target)
        if source == target:
            raise ConfigError("promote needs two different environments")
        store = await self._open()
        objects, rejected = live_by_path(
            await self._retry(lambda: store.list_live(source_prefix)), source_prefix
        )
        if not objects:
            raise ConfigError(
                f"nothing to promote: s3://{self.config.bucket.bucket}/{source_prefix} is empty"
            )
        fetched = await self._pool(list(objects.items()), self._fetch_verified)
        wanted = {w.path: w for w in fetched if isinstance(w, Wanted)}
        problems = [f"{source} has {r}" for r in rejected] + [p for p in fetched if isinstance(p, str)]
        syntax, notes = compile_problems({p: w.body for p, w in wanted.items() if w.body is not None})
        problems += key_problems(wanted, target_prefix) + syntax
        job = _Job(
            "promote", target, wanted, ("",), problems, notes, dry_run, origin={"promoted_from": source}
        )
        job.airflow = self._wants_airflow(target, airflow_check)
        return await self._run(job)

    async def rollback(self, env: str, deploy_id: str, *, dry_run: bool = False) -> DeployReport:
        """Make the paths of a recorded deploy hold the versions it recorded again (copies of them)."""
        prefix = self.config.env_prefix(env)
        check_deploy_id(deploy_id)
        store = await self._open()
        status = await self._retry(store.versioning)
        if status != "Enabled":
            raise ConfigError(
                f"rollback needs versioning on s3://{self.config.bucket.bucket} "
                f"(it is {status.lower() or 'off'}); nothing was changed"
            )
        key = await self._find_record(env, deploy_id)
        stored = parse_record((await self._retry(lambda: store.get_version(key, None))).body, key)
        wanted, problems = wanted_from_record(stored, prefix)
        job = _Job("rollback", env, wanted, stored.scopes, problems, [], dry_run)
        job.origin, job.budgets, job.check_origins = {"rollback_of": deploy_id}, False, True
        return await self._run(job)

    async def history(self, env: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The newest `limit` deploys of `env`, newest first."""
        self.config.env_prefix(env)
        store = await self._open()
        keys = await self._retry(lambda: store.list_keys(records_prefix(env)))
        newest = sorted((k for k in keys if k.endswith(".json")), reverse=True)[:limit]
        bodies = await self._pool(newest, lambda k: self._retry(lambda: store.get_version(k, None)))
        return [summary(fetched.body, key) for key, fetched in zip(newest, bodies, strict=True)]

    # -- one run ---------------------------------------------------------------------------------------------
    async def _run(self, job: _Job) -> DeployReport:
        if job.problems:  # definitive without the bucket: refuse before any request
            raise DeployRefused(job.problems)
        started, t0 = self._clock(), time.monotonic()
        store = await self._open()
        prefix, policy = self.config.env_prefix(job.env), self.config.policy(job.env)
        identity = asyncio.create_task(store.caller_identity())  # best effort, never raises
        try:
            listing = await self._retry(lambda: store.list_live(prefix))
        except BaseException:
            identity.cancel()
            raise
        who = await identity  # ran alongside the listing
        live, rejected = live_by_path(listing, prefix)
        job.notes += [f"already in {job.env} and rejected by the mirror: {r}" for r in rejected]
        plan = plan_deploy(
            job.wanted,
            live,
            job.scopes,
            wants=self._filter.wants,
            max_fraction=self.config.max_delete_fraction,
            allow_mass_delete=self.config.allow_mass_delete,
        )
        kept = live_after(plan, live)
        self._refuse_if_invalid(job, policy, kept)
        if plan.guard:
            raise GuardRefused(f"delete guard: {plan.guard}")
        plan = await self._settle(plan, prefix)
        if job.check_origins:
            await self._check_origins(plan)
        report = DeployReport(
            deploy_id=new_deploy_id(),
            kind=job.kind,
            env=job.env,
            bucket=self.config.bucket.bucket,
            prefix=prefix,
            scopes=job.scopes,
            started_at=started,
            seconds=0.0,
            who={"user": self._user, "identity": who},
            host=self._host,
            git=job.git,
            files=planned_results(plan, prefix),
            validation=await self._validation(job, policy, live, kept),
            origin=job.origin,
            dry_run=job.dry_run,
        )
        if job.dry_run or not (plan.writes or plan.deletes):
            return replace(report, seconds=time.monotonic() - t0)  # nothing written, not even a record
        writer = Writer(
            store, retry=self.config.retry, concurrency=self.config.concurrency, sleep=self._sleep
        )
        files = await writer.apply(plan, prefix)
        return await writer.record(replace(report, files=files, seconds=time.monotonic() - t0))

    def _refuse_if_invalid(self, job: _Job, policy: EnvPolicy, kept: list[str]) -> None:
        problems = collision_problems(job.wanted, kept, job.env)
        if job.budgets:
            sizes = {p: w.size for p, w in job.wanted.items()}
            problems += budget_problems(sizes, len(kept) + len(job.wanted), policy, job.env)
        if problems:
            raise DeployRefused(problems)

    async def _settle(self, plan: DeployPlan, prefix: str) -> DeployPlan:
        """HEAD the objects whose ETag cannot tell (SSE-KMS, multipart): their x-amz-meta-xxh3 decides."""
        if not plan.to_check:
            return plan
        store = await self._open()
        checks = list(plan.to_check)
        heads = await self._pool(checks, lambda s: self._retry(lambda: store.head(prefix + s.path)))
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
        store = await self._open()

        async def missing(step: Step) -> str | None:
            origin = step.wanted.origin
            if origin is None:
                return None
            head = await self._retry(lambda: store.head(origin.key, origin.version_id))
            return None if head else f"{step.path}: version {origin.version_id} no longer exists"

        gone = [m for m in await self._pool(list(plan.writes), missing) if m]
        if gone:
            raise DeployRefused(gone)

    async def _validation(
        self, job: _Job, policy: EnvPolicy, live: dict[str, LiveObject], kept: list[str]
    ) -> dict[str, Any]:
        airflow = await self._airflow_check(job, live, kept) if job.airflow else None
        return {
            "python_files": sum(p.endswith(".py") for p in job.wanted),
            "budgets": {"max_file_bytes": policy.max_file_bytes, "max_files": policy.max_files},
            "airflow": airflow,
            "warnings": job.notes,
        }

    async def _airflow_check(self, job: _Job, live: dict[str, LiveObject], kept: list[str]) -> dict[str, Any]:
        """Parse the environment as it will be: the deployed files plus every file the deploy leaves."""
        store = await self._open()
        prefix = self.config.env_prefix(job.env)

        async def fetch(path: str) -> bytes:
            obj = await self._retry(lambda: store.get_version(prefix + path, live[path].version_id))
            verify(obj)
            return obj.body

        tree = {p: w.body for p, w in job.wanted.items() if w.body is not None}
        tree |= dict(zip(kept, await self._pool(kept, fetch), strict=True))
        result = await parse_with_airflow(
            tree, python=self.config.airflow_python, seconds=self.config.airflow_timeout
        )
        problems, notes = dag_problems(result, set(job.wanted), job.env)
        if problems:
            raise DeployRefused(problems)
        job.notes += notes
        return {
            "version": result.version,
            "files": len(result.dags),
            "dags": sum(map(len, result.dags.values())),
        }

    # -- helpers ---------------------------------------------------------------------------------------------
    async def _open(self) -> DeployStore:
        if self._store is None:
            from dagmirror.source.store import S3Store  # the SDK loads only when a real bucket is needed

            cfg = self.config
            self._store = await S3Store.open(
                cfg.bucket.bucket,
                endpoint_url=cfg.endpoint_url,
                region=cfg.region,
                profile=cfg.profile,
                concurrency=cfg.concurrency,
                sts=cfg.sts,
            )
        return self._store

    async def _find_record(self, env: str, deploy_id: str) -> str:
        store = await self._open()
        keys = await self._retry(lambda: store.list_keys(records_prefix(env)))
        found = [k for k in keys if deploy_id_of(k) == deploy_id]
        if not found:
            raise ConfigError(f"no deploy {deploy_id} in {env} (see: dagmirror history --env {env})")
        return found[-1]

    async def _fetch_verified(self, item: tuple[str, LiveObject]) -> Wanted | str:
        """One live version of the promoted environment, checked as the mirror checks it; or why not."""
        path, obj = item
        store = await self._open()

        async def once() -> Wanted:
            fetched = await store.get_version(obj.key, obj.version_id)
            digest = verify(fetched)
            body = fetched.body
            return Wanted(path, len(body), _md5(body), digest, body, Origin(obj.key, obj.version_id))

        try:
            return await self._retry(once)
        except DagmirrorError as exc:
            return f"{path}: {exc}"

    def _wants_airflow(self, env: str, flag: bool | None) -> bool:
        return self.config.policy(env).airflow_check if flag is None else flag

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        return await retrying(call, self.config.retry, sleep=self._sleep)

    async def _pool(self, items: Sequence[T], work: Callable[[T], Awaitable[R]]) -> list[R]:
        return await bounded_map(items, work, concurrency=self.config.concurrency)


def _from_body(path: str, body: bytes) -> Wanted:
    return Wanted(path, len(body), _md5(body), xxh3_hex(body), body)


def _md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def _path(step: Step) -> str:
    return step.path
