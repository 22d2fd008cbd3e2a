"""`Deployer`: the four commands over the environments of one bucket. A deploy, promote or rollback builds its
`DeployRequest` (request.py) and hands it to the one `Pipeline` (runner.py); `history` only reads records."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dagmirror.config.deploy import DeployConfig
from dagmirror.deploy import request
from dagmirror.deploy.bucket import Bucket
from dagmirror.deploy.gc import Collector, GcReport
from dagmirror.deploy.local import local_user
from dagmirror.deploy.record import MAX_RECORD_BYTES, DeployReport, exact_records, records_prefix, summary
from dagmirror.deploy.runner import Pipeline
from dagmirror.deploy.signing import load_signing
from dagmirror.keys import PathFilter
from dagmirror.models import StoredObject
from dagmirror.retry import Sleep
from dagmirror.source import DeployStore


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
        self._bucket = Bucket(config, store, sleep=sleep)
        user, host = user or local_user(), host or socket.gethostname()
        self._filter = PathFilter.of((), config.exclude)
        signing = load_signing(config)
        self._pipeline = Pipeline(self._bucket, self._filter.wants, clock, user, host, signing)
        self._clock = clock

    async def __aenter__(self) -> Deployer:
        return self  # the bucket is opened on first use: a deploy refused locally never needs it

    async def __aexit__(self, *exc: object) -> None:
        await self._bucket.aclose()

    async def deploy(
        self, paths: Sequence[Path], env: str, *, dry_run: bool = False, airflow_check: bool | None = None
    ) -> DeployReport:
        """Make `env` hold `paths` (files, or directories whose removed files are deleted there too)."""
        asked = await request.from_local(
            self.config, paths, env, exclude=self._filter, dry_run=dry_run, airflow_check=airflow_check
        )
        return await self._pipeline.run(asked)

    async def promote(
        self, source: str, target: str, *, dry_run: bool = False, airflow_check: bool | None = None
    ) -> DeployReport:
        """Make `target` hold exactly the live versions of `source`, by server-side copies."""
        asked = await request.from_environment(
            self.config, self._bucket, source, target, dry_run=dry_run, airflow_check=airflow_check
        )
        return await self._pipeline.run(asked)

    async def rollback(self, env: str, deploy_id: str, *, dry_run: bool = False) -> DeployReport:
        """Make the paths of a recorded deploy hold the versions it recorded again (copies of them)."""
        asked = await request.from_record(self.config, self._bucket, env, deploy_id, dry_run=dry_run)
        return await self._pipeline.run(asked)

    async def history(self, env: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The newest `limit` deploys of `env`, newest first."""
        self.config.env_prefix(env)  # an unknown environment is a ConfigError before any request
        listed = await self._bucket.list_stamped(records_prefix(env))
        newest = exact_records(listed, env)[::-1][:limit]

        async def read(record: StoredObject) -> dict[str, Any]:
            if record.size > MAX_RECORD_BYTES:  # listed as unreadable, never read
                return summary(b"", record.key, oversized=True)
            fetched = await self._bucket.get_version(record.key, None, max_bytes=MAX_RECORD_BYTES)
            return summary(fetched.body, record.key)

        return await self._bucket.pool(newest, read)

    async def gc(
        self, envs: Sequence[str] | None, *, keep: int = 10, grace: float = 7 * 86400, dry_run: bool = False
    ) -> GcReport:
        """Remove the bodies, manifests and archives no kept release needs: releases of `envs` (None: of every
        environment of the bucket) beyond the last `keep` of theirs and older than `grace` seconds."""
        scope = None if envs is None else [self.config.env_prefix(env) for env in envs]
        return await Collector(self._bucket, clock=self._clock).run(
            scope, keep=keep, grace=grace, dry_run=dry_run
        )
