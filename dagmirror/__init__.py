"""dagmirror: mirror Airflow DAG folders from S3, fast, atomic, verified, and safe against bad listings.

Library use::

    import asyncio

    from dagmirror import Mirror, MirrorConfig


    async def main() -> None:
        config = MirrorConfig.create("s3://bucket/dags/prod", "/opt/airflow/dags")
        async with Mirror(config) as mirror:
            report = await mirror.sync_once()
        print(report.downloaded, report.deleted, report.failed)


    asyncio.run(main())
"""

from dagmirror.config import MirrorConfig, S3Url
from dagmirror.engine import Mirror
from dagmirror.errors import (
    ConfigError,
    DagmirrorError,
    DestLocked,
    InstallError,
    IntegrityError,
    PassFailed,
    SourceConfigError,
    SourceError,
    SourceUnavailable,
)
from dagmirror.models import SyncReport
from dagmirror.retry import RetryPolicy

__all__ = [
    "ConfigError",
    "DagmirrorError",
    "DestLocked",
    "InstallError",
    "IntegrityError",
    "Mirror",
    "MirrorConfig",
    "PassFailed",
    "RetryPolicy",
    "S3Url",
    "SourceConfigError",
    "SourceError",
    "SourceUnavailable",
    "SyncReport",
]
