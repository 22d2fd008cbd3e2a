"""`DagmirrorBundle`: an Airflow 3 DAG bundle that versions an S3 environment by its dagmirror releases.

    [dag_processor]
    dag_bundle_config_list = [{"name": "production", "classpath": "dagmirror.bundle.DagmirrorBundle",
      "kwargs": {"source": "s3://acme-airflow/dags/production/"}}]

The only module of dagmirror that imports Airflow (an import-linter contract keeps it out of the rest), and
dagmirror does not depend on Airflow. Everything but the Airflow glue is `engine/versioned.py`:

- unpinned (the dag-processor): `refresh()` is one mirror pass under `self.lock()`; `path` is the current
  release's immutable generation directory; `get_current_version()` answers from memory (no request) with the
  release id, a `BundleVersion` on Airflow 3.3+ and a plain string on 3.0-3.2;
- pinned (`version=<release id>`, how a task runner builds it): `initialize()` builds `versions/<id>/` once
  from the local content store and the bucket; `refresh()` raises;
- an environment without releases is mirrored unversioned (`supports_versioning` is False then).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from airflow.dag_processing.bundles.base import BaseDagBundle, get_bundle_tracking_dir

from dagmirror.config import MirrorConfig, check_endpoint
from dagmirror.engine.versioned import VERSION_GRACE, Layout, VersionedMirror
from dagmirror.errors import ConfigError
from dagmirror.source import ObjectSource
from dagmirror.source.lean import LeanSource
from dagmirror.source.sigv4 import Credentials

try:  # Airflow 3.3+
    from airflow.dag_processing.bundles.base import BundleVersion
except ImportError:  # 3.0-3.2: get_current_version() returns a plain string
    BundleVersion = None

log = logging.getLogger("dagmirror")


class DagmirrorBundle(BaseDagBundle):  # type: ignore[misc]  # Airflow ships no type information
    """kwargs: `source` (s3://bucket/prefix/ of the environment), `endpoint_url`, `region`, `aws_conn_id`
    (an Airflow AWS connection: its login/password are the keys, `endpoint_url`/`region_name` in its extra),
    `version_grace` (seconds an untracked pinned version is kept), `trust` (a trust file: only signed
    releases, docs/security.md); anything else goes to BaseDagBundle
    (`refresh_interval`, and `version_data`, `view_url_template` where the Airflow version has them)."""

    def __init__(
        self,
        *,
        source: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        aws_conn_id: str | None = None,
        version_grace: float = VERSION_GRACE,
        trust: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.aws_conn_id = aws_conn_id
        self._endpoint_url, self._region = endpoint_url, region
        layout = Layout(self.base_dir, self.versions_dir, get_bundle_tracking_dir(self.name))
        options: dict[str, Any] = {"region": region} if region else {}
        if trust:  # a trust file (docs/security.md): only releases its keys signed, pinned ones included
            options["trust"] = trust
        try:
            self._mirror = VersionedMirror(
                source,
                layout,
                endpoint_url=endpoint_url,
                options=options,
                open_source=self._open_source,
                version_grace=float(version_grace),
            )
        except ConfigError as exc:
            raise ValueError(f"DagmirrorBundle {self.name!r}: {exc}") from None
        self._pinned: Path | None = None

    # -- what Airflow reads ------------------------------------------------------------------------------
    @property
    def supports_versioning(self) -> bool:
        """True for a pinned bundle, and for an unpinned one whose environment publishes releases."""
        if self.version:
            return True
        current = self._mirror.current()
        return current is not None and current.release is not None

    @property
    def path(self) -> Path:
        """The files Airflow parses: the pinned version's directory, or the current release's generation
        (before any refresh: what the last process left, else where the link will be)."""
        if self.version:
            return self._pinned or self.versions_dir / self.version
        current = self._mirror.current()
        return current.path if current is not None else self._mirror.layout.link

    def get_current_version(self) -> Any:
        """The release id of `path`, from memory: no request (the dag-processor calls it before refresh)."""
        if self.version:
            version: str | None = self.version
        else:
            current = self._mirror.current()
            version = current.release if current is not None else None
        if version is None or BundleVersion is None:
            return version
        return BundleVersion(version=version)

    # -- what Airflow calls ------------------------------------------------------------------------------
    def initialize(self) -> None:
        if self.version:
            self._pinned = self._mirror.pin(self.version).path
        else:
            self.refresh()
        super().initialize()

    def refresh(self) -> None:
        if self.version:
            raise ValueError(f"DagmirrorBundle {self.name!r} is pinned to version {self.version}: no refresh")
        with self.lock():
            report = self._mirror.refresh()
        log.info(
            "bundle %s: release %s, %d downloaded, %d deleted, requests %s",
            self.name,
            report.release,
            report.downloaded,
            report.deleted,
            report.requests,
        )

    def __repr__(self) -> str:
        return f"DagmirrorBundle(name={self.name!r}, source={self.source!r}, version={self.version!r})"

    # -- credentials -------------------------------------------------------------------------------------
    async def _open_source(self, config: MirrorConfig) -> ObjectSource:
        """The lean transport; with `aws_conn_id`, its keys, endpoint and region instead of the AWS chain."""
        if self.aws_conn_id is None:
            return await LeanSource.open(config)
        keys, extra = _connection(self.aws_conn_id)
        endpoint = self._endpoint_url or extra.get("endpoint_url") or config.endpoint_url
        region = self._region or extra.get("region_name") or config.region
        config = replace(config, endpoint_url=endpoint and check_endpoint(endpoint), region=region)
        return await LeanSource.open(config, keys)


def _connection(conn_id: str) -> tuple[Credentials | None, Mapping[str, Any]]:
    """An Airflow AWS connection: (keys or None for the AWS chain, its extra)."""
    try:
        from airflow.sdk import BaseHook
    except ImportError:  # Airflow 3.0
        from airflow.hooks.base import BaseHook
    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    if not conn.login:
        return None, extra
    token = extra.get("aws_session_token")
    return Credentials(conn.login, conn.password or "", token or None), extra
