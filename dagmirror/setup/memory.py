"""In-memory fakes of the ports.py Protocols, for unit tests of the planners' callers (no network)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dagmirror.errors import SourceConfigError
from dagmirror.setup.ports import WriteProbe


@dataclass
class MemoryBucket:
    """One bucket's configuration and objects; `writes` records every configuration write, in order."""

    exists: bool = True
    versioning: str = ""
    public_access_block: Mapping[str, Any] | None = None
    policy: Mapping[str, Any] | None = None
    lifecycle: tuple[Mapping[str, Any], ...] = ()
    notification: Mapping[str, Any] = field(default_factory=dict)
    objects: dict[str, bytes] = field(default_factory=dict)
    writable: tuple[str, ...] = (
        "metadata/fleet/",
        "metadata/sync-logs/",
    )  # PutObject allowed here (a mirror)
    denied: frozenset[str] = frozenset()  # method names that answer AccessDenied
    identity: str = "arn:aws:iam::123456789012:role/dagmirror-mirror"
    region: str = "us-east-1"
    date: str = "Mon, 30 Nov 2026 10:00:00 GMT"
    writes: list[str] = field(default_factory=list)


class MemoryAdmin:
    """`BucketAdmin` and `BucketProbe` over a MemoryBucket."""

    def __init__(self, bucket: MemoryBucket, endpoint: str = "memory://") -> None:
        self.state = bucket
        self.endpoint = endpoint
        self.region = bucket.region

    def _check(self, name: str) -> None:
        if name in self.state.denied:
            raise SourceConfigError(f"{name}: AccessDenied: Access Denied", code="AccessDenied")
        if not self.state.exists and name not in ("bucket_exists", "create_bucket", "caller_identity"):
            raise SourceConfigError(f"{name}: bucket does not exist", code="NoSuchBucket")

    def _write(self, name: str, attr: str, value: Any) -> None:
        self._check(name)
        setattr(self.state, attr, value)
        self.state.writes.append(name)

    async def bucket_exists(self) -> bool:
        self._check("bucket_exists")
        return self.state.exists

    async def create_bucket(self, region: str | None) -> None:
        self._write("create_bucket", "exists", True)

    async def get_versioning(self) -> str:
        self._check("get_versioning")
        return self.state.versioning

    async def enable_versioning(self) -> None:
        self._write("enable_versioning", "versioning", "Enabled")

    async def get_public_access_block(self) -> Mapping[str, Any] | None:
        self._check("get_public_access_block")
        return self.state.public_access_block

    async def put_public_access_block(self, config: Mapping[str, Any]) -> None:
        self._write("put_public_access_block", "public_access_block", dict(config))

    async def get_policy(self) -> Mapping[str, Any] | None:
        self._check("get_policy")
        return self.state.policy

    async def put_policy(self, policy: Mapping[str, Any]) -> None:
        self._write("put_policy", "policy", policy)

    async def get_lifecycle(self) -> tuple[Mapping[str, Any], ...]:
        self._check("get_lifecycle")
        return self.state.lifecycle

    async def put_lifecycle(self, rules: tuple[Mapping[str, Any], ...]) -> None:
        self._write("put_lifecycle", "lifecycle", rules)

    async def get_notification(self) -> Mapping[str, Any]:
        self._check("get_notification")
        return self.state.notification

    async def put_notification(self, config: Mapping[str, Any]) -> None:
        self._write("put_notification", "notification", config)

    async def caller_identity(self) -> str:
        self._check("caller_identity")
        return self.state.identity

    async def bucket_region(self) -> str:
        self._check("bucket_region")
        return self.state.region

    async def server_date(self) -> str:
        self._check("server_date")
        return self.state.date

    async def count_objects(self, prefix: str) -> int:
        self._check("count_objects")
        return sum(1 for key in self.state.objects if key.startswith(prefix))

    async def read(self, key: str) -> bytes | None:
        self._check("read")
        return self.state.objects.get(key)

    async def probe_write(self, key: str) -> WriteProbe:
        self._check("probe_write")
        return "allowed" if key.startswith(self.state.writable) else "denied"
