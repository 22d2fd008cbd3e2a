"""Signed releases for tests against moto over HTTP: the real Deployer signs (a local key file or KMS), an
in-process Mirror with a trust file installs, and an attacker writes to the bucket with boto3."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagmirror import Mirror, MirrorConfig
from dagmirror.config.deploy import load_deploy_config
from dagmirror.deploy import Deployer, DeployReport
from dagmirror.models import SyncReport
from dagmirror.retry import RetryPolicy
from dagmirror.trust import KeySigner, generate_ed25519

from .helpers import no_sleep, write_tree


def new_key(folder: Path, name: str) -> Path:
    path = folder / f"{name}.key"
    path.write_bytes(generate_ed25519())
    return path


def trust_file(folder: Path, name: str, keys: dict[Path | str, list[str]], threshold: int = 1) -> Path:
    """A trust file: each private key file's (or PEM text's) public half, with the paths it may sign."""
    lines = [f"threshold = {threshold}"]
    for key, paths in keys.items():
        pem = KeySigner(key.read_bytes()).public.pem if isinstance(key, Path) else key
        quoted = ", ".join(f'"{p}"' for p in paths)
        lines += ["[[keys]]", f"paths = [{quoted}]", f'public = """\n{pem}"""']
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Fleet:
    """One bucket, its environments, a source folder to deploy from, and mirrors to sync."""

    bucket: str
    endpoint: str
    root: Path

    async def deploy(self, files: dict[str, bytes], env: str = "prod", **flags: Any) -> DeployReport:
        src = write_tree(self.root / f"src-{time.monotonic_ns()}", files)
        async with self.deployer(root=str(src), **flags) as deployer:
            return await deployer.deploy([src], env)

    async def promote(self, source: str, target: str, **flags: Any) -> DeployReport:
        async with self.deployer(**flags) as deployer:
            return await deployer.promote(source, target)

    async def rollback(self, env: str, to: str, **flags: Any) -> DeployReport:
        async with self.deployer(**flags) as deployer:
            return await deployer.rollback(env, to)

    def deployer(self, **flags: Any) -> Deployer:
        config = load_deploy_config(
            None,
            {},
            {
                "bucket_url": f"s3://{self.bucket}/dags/",
                "endpoint_url": self.endpoint,
                "environments": ["dev", "prod"],
            }
            | {k: v for k, v in flags.items() if v is not None},
        )
        return Deployer(config, sleep=no_sleep)

    def mirror(
        self, dest: Path, trust: Path | None, env: str = "prod", clock: Callable[[], float] = time.time
    ) -> Mirror:
        config = MirrorConfig.create(
            f"s3://{self.bucket}/dags/{env}/",
            dest,
            endpoint_url=self.endpoint,
            fsync=False,
            retry=RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0),
            trust=str(trust) if trust else None,
        )
        return Mirror(config, sleep=no_sleep, clock=clock)

    async def sync(self, dest: Path, trust: Path | None, env: str = "prod", **kw: Any) -> SyncReport:
        async with self.mirror(dest, trust, env, **kw) as mirror:
            return await mirror.sync_once()
