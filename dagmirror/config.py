"""Immutable configuration, parsed and validated at the edge; one clear error per bad field."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dagmirror.errors import ConfigError
from dagmirror.keys import PathFilter, normalize_prefix
from dagmirror.retry import RetryPolicy

# S3 bucket naming rules, relaxed to what S3-compatible servers also accept (dots, 3-63 chars).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")

DEFAULT_CONCURRENCY = 64


@dataclass(frozen=True, slots=True)
class S3Url:
    bucket: str
    prefix: str  # normalized: '' or ending in '/'

    @classmethod
    def parse(cls, url: str) -> S3Url:
        if not url.startswith("s3://"):
            raise ConfigError(f"source must look like s3://bucket/prefix, got {url!r}")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not _BUCKET.match(bucket):
            raise ConfigError(f"invalid bucket name {bucket!r} in {url!r}")
        return cls(bucket, normalize_prefix(prefix))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def redact_url(url: str) -> str:
    """Drop user:password from a URL before it is shown anywhere, parsable or not."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. 'http://user:pw@[::1': still never shown with its credentials
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]  # not host:port: .port raises on a non-numeric port
    return urlunsplit((parts.scheme, f"***@{netloc}", parts.path, parts.query, parts.fragment))


def check_endpoint(url: str) -> str:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric port
    except ValueError as exc:
        raise ConfigError(f"invalid endpoint URL {redact_url(url)!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"endpoint URL must be http(s)://host[:port], got {redact_url(url)!r}")
    return url


@dataclass(frozen=True)
class MirrorConfig:
    """Everything one mirror mapping needs. Build it with `MirrorConfig.create(...)` to get validation."""

    source: S3Url
    dest: Path
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    list_concurrency: int = 8
    fanout_depth: int = 1  # delimiter levels listed before flat listing: see docs/architecture.md
    filters: PathFilter = field(default_factory=PathFilter)
    max_delete_fraction: float = 0.5
    allow_mass_delete: bool = False
    dry_run: bool = False
    fsync: bool = True
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    checkpoint_interval: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    transport: str = "lean"  # "lean": GETs over aiohttp, signed by the SDK; "sdk": every request via aioboto3

    @classmethod
    def create(
        cls,
        source: str,
        dest: str | os.PathLike[str],
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        endpoint_url: str | None = None,
        **options: object,
    ) -> MirrorConfig:
        """Validate user input; raises ConfigError naming the first bad field.

        The endpoint is resolved here (flag, then $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL) so that
        every S3-compatible endpoint gets path-style addressing, whichever way it was given. So is the region
        hint $AWS_REGION, which botocore itself does not read (only $AWS_DEFAULT_REGION and the profile).
        """
        if not options.get("region") and os.environ.get("AWS_REGION"):
            options["region"] = os.environ["AWS_REGION"]
        endpoint_url = (
            endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        if endpoint_url is not None:
            check_endpoint(endpoint_url)
        if not str(dest):
            raise ConfigError("DEST must be a directory path")
        cfg = cls(
            S3Url.parse(source),
            Path(dest),
            endpoint_url=endpoint_url,
            filters=PathFilter.of(include, exclude),
            **options,  # type: ignore[arg-type]
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in ("concurrency", "list_concurrency", "fanout_depth"):
            if not isinstance(getattr(self, name), int):  # 2.5 workers would fail deep inside a pass
                raise ConfigError(f"{name} must be a whole number, got {getattr(self, name)!r}")
        _in_range("concurrency", self.concurrency, 1, 1024)
        _in_range("list_concurrency", self.list_concurrency, 1, 256)
        _in_range("fanout_depth", self.fanout_depth, 0, 8)
        _in_range("max_delete_fraction", self.max_delete_fraction, 0.0, 1.0)
        _in_range("connect_timeout", self.connect_timeout, 0.1, 600.0)
        _in_range("read_timeout", self.read_timeout, 0.1, 3600.0)
        _in_range("checkpoint_interval", self.checkpoint_interval, 0.05, 3600.0)
        _in_range("retry.attempts", self.retry.attempts, 1, 100)
        if self.transport not in ("lean", "sdk"):
            raise ConfigError(f"transport must be 'lean' or 'sdk', got {self.transport!r}")
        if self.dest.exists() and not self.dest.is_dir():
            raise ConfigError(f"DEST {str(self.dest)!r} exists and is not a directory")


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value!r}")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_value(name: str, typ: type, raw: str, errors: list[str]) -> object:
    """A `DAGMIRROR_*` variable's text as `typ` (bool, list as comma-separated, or a scalar); a value that
    does not parse adds one line to `errors` and gives None. Shared by `run` settings and `deploy` config."""
    value: object = None
    if typ is bool:
        value = True if raw.lower() in _TRUE else False if raw.lower() in _FALSE else None
    elif typ is list:
        value = [part.strip() for part in raw.split(",") if part.strip()]
    else:
        try:
            value = typ(raw)
        except ValueError:
            value = None
    if value is None:
        errors.append(f"{name}: expected {typ.__name__}, got {raw!r}")
    return value
