"""One mirror mapping's configuration: `S3Url` and `MirrorConfig`, immutable, validated at the edge.

`MirrorConfig.create` reports every bad field at once (one line each in one ConfigError) and takes the
environment it resolves `$AWS_REGION` / `$AWS_ENDPOINT_URL*` from as a parameter.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from dagmirror.config.toml import Problems, in_range, is_type, read_toml, type_name
from dagmirror.errors import ConfigError
from dagmirror.keys import PathFilter, normalize_prefix
from dagmirror.retry import RetryPolicy
from dagmirror.trust import TrustPolicy, parse_trust

# S3 bucket naming rules, relaxed to what S3-compatible servers also accept (dots, 3-63 chars).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")

DEFAULT_CONCURRENCY = 64
T = TypeVar("T")


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


# Numeric fields: (type, lowest, highest). The bounds keep a typo from becoming a pass that hangs, floods
# the server or never checkpoints; an int field refuses 2.5 because it would fail deep inside a pass.
_NUMBERS: dict[str, tuple[type, float, float]] = {
    "concurrency": (int, 1, 1024),
    "list_concurrency": (int, 1, 256),
    "fanout_depth": (int, 0, 8),
    "max_objects": (int, 1, 100_000_000),
    "max_delete_fraction": (float, 0.0, 1.0),
    "connect_timeout": (float, 0.1, 600.0),
    "read_timeout": (float, 0.1, 3600.0),
    "checkpoint_interval": (float, 0.05, 3600.0),
    "keep_generations": (int, 1, 1000),
    "generation_grace": (float, 0.0, 30 * 86400.0),
}
_FLAGS = ("allow_mass_delete", "dry_run", "fsync")
_TEXTS = ("region", "profile")  # None: the AWS chain decides
TRANSPORTS = ("lean", "sdk")
# auto: follow the prefix's release pointer when it has one, else list objects (docs/configuration.md).
MODES = ("auto", "objects", "releases")
# files: each changed file is renamed into DEST; symlink: DEST links to a whole generation (generations.py).
SWITCHES = ("files", "symlink")
# What `MirrorConfig.create(..., **options)` accepts; source, dest, include, exclude and endpoint_url are
# its named parameters.
OPTIONS = frozenset({*_NUMBERS, *_FLAGS, *_TEXTS, "transport", "mode", "switch", "retry", "filters", "trust"})


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
    fanout_depth: int = 0  # 0: flat, split in two; N: fan out N delimiter levels (docs/architecture.md)
    filters: PathFilter = field(default_factory=PathFilter)
    max_delete_fraction: float = 0.5
    # A listing of more entries fails the pass (nothing deleted): a hostile or runaway prefix must not
    # cost unbounded memory. Each entry costs the pass a few hundred bytes.
    max_objects: int = 1_000_000
    allow_mass_delete: bool = False
    dry_run: bool = False
    fsync: bool = True
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    checkpoint_interval: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    transport: str = "lean"  # "lean": GETs over aiohttp, signed by dagmirror's SigV4; "sdk": all via aioboto3
    mode: str = "auto"  # "auto": releases when the prefix has a pointer, else objects; or force either
    switch: str = "files"  # "symlink": DEST is a link to an immutable generation (releases only)
    keep_generations: int = 3  # symlink: generations kept whatever their age (the current one included)
    generation_grace: float = 3600.0  # symlink: seconds an older generation stays after it was replaced
    # Signed releases: install only releases these keys signed, refuse everything else (None: unsigned ok).
    # Given as a trust file's path to `create`; `--mode objects` cannot verify anything, so it is refused.
    trust: TrustPolicy | None = None

    @property
    def work_dir(self) -> Path:
        """Where passes install: DEST, or with --switch symlink the work tree the generations link to."""
        return self.dest if self.switch == "files" else generations_home(self.dest) / "work"

    @classmethod
    def create(
        cls,
        source: str,
        dest: str | os.PathLike[str],
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        endpoint_url: str | None = None,
        env: Mapping[str, str] | None = None,
        **options: object,
    ) -> MirrorConfig:
        """Validate user input; raises one ConfigError naming every bad field, one line each.

        The endpoint is resolved here (flag, then $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL) so that
        every S3-compatible endpoint gets path-style addressing, whichever way it was given. So is the region
        hint $AWS_REGION, which botocore itself does not read (only $AWS_DEFAULT_REGION and the profile).
        Both come from `env`; None means `os.environ`, read here and only here: this is the library's
        outermost edge. The CLI and `load_run_config` pass their environment explicitly.
        """
        env = os.environ if env is None else env
        if not options.get("region") and env.get("AWS_REGION"):
            options["region"] = env["AWS_REGION"]
        endpoint_url = endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        problems = Problems(f"unknown option {name!r}" for name in sorted(set(options) - OPTIONS))
        url = _attempt(lambda: S3Url.parse(source), problems)
        if endpoint_url is not None:
            _attempt(lambda: check_endpoint(endpoint_url), problems)
        if not str(dest):
            problems.append("DEST must be a directory path")
        else:
            _check_dest(Path(dest), problems)
            _check_files_dest(Path(dest), options.get("switch", "files"), problems)
        known = {k: v for k, v in options.items() if k in OPTIONS}
        trust_file = known.get("trust")
        if isinstance(trust_file, (str, os.PathLike)):
            path = Path(os.fspath(trust_file))
            known["trust"] = _attempt(lambda: load_trust(path), problems)
        check_options(known, problems)
        _check_switch(known, problems)
        problems.raise_if_any()
        assert url is not None  # S3Url.parse either returned or added a problem
        return cls(
            url,
            Path(dest),
            endpoint_url=endpoint_url,
            filters=PathFilter.of(include, exclude),
            **known,  # type: ignore[arg-type]  # check_options checked every type
        )

    def validate(self) -> None:
        """Check a config built directly (not through `create`): one ConfigError, one line per bad field."""
        problems = Problems()
        check_options({name: getattr(self, name) for name in OPTIONS}, problems)
        _check_switch({"mode": self.mode, "switch": self.switch, "trust": self.trust}, problems)
        _check_dest(self.dest, problems)
        problems.raise_if_any()


def check_options(options: Mapping[str, object], problems: Problems) -> None:
    """Type and range of each given `MirrorConfig` option; one line in `problems` per bad one."""
    for name, value in options.items():
        if name in _NUMBERS:
            typ, low, high = _NUMBERS[name]
            if not is_type(value, typ):
                word = "a whole number" if typ is int else "a number"
                problems.append(f"{name}: must be {word}, got {value!r}")
            else:
                in_range(name, value, low, high, problems)
        elif name in _FLAGS and not isinstance(value, bool):
            problems.append(f"{name}: expected {type_name(bool)}, got {value!r}")
        elif name in _TEXTS and value is not None and not isinstance(value, str):
            problems.append(f"{name}: expected {type_name(str)}, got {value!r}")
        elif name == "transport" and value not in TRANSPORTS:
            problems.append(f"transport: must be 'lean' or 'sdk', got {value!r}")
        elif name == "mode" and value not in MODES:
            problems.append(f"mode: must be 'auto', 'objects' or 'releases', got {value!r}")
        elif name == "retry":
            if isinstance(value, RetryPolicy):
                in_range("retry.attempts", value.attempts, 1, 100, problems)
            else:
                problems.append(f"retry: expected a RetryPolicy, got {value!r}")
        elif name == "filters" and not isinstance(value, PathFilter):
            problems.append(f"filters: expected a PathFilter, got {value!r}")


def load_trust(path: Path) -> TrustPolicy:
    """A trust file (TOML: `threshold`, `[[keys]]` with `public` PEM and optional `paths`)."""
    problems = Problems()
    doc = read_toml(path, problems)
    problems.raise_if_any()
    return parse_trust(doc, str(path))


def generations_home(dest: Path) -> Path:
    """With --switch symlink: the folder beside DEST holding the work tree and the generations."""
    return dest.parent / f".{dest.name}.dagmirror"


def _check_files_dest(dest: Path, switch: object, problems: Problems) -> None:
    """Going back to --switch files with DEST still the generations' link would install into a generation."""
    if switch == "files" and dest.is_symlink():
        with contextlib.suppress(OSError):
            if os.readlink(dest).startswith(f"{generations_home(dest).name}/generations/"):
                problems.append(
                    f"DEST {str(dest)!r} is the link of --switch symlink: keep that switch, or remove the "
                    "link (the generations stay beside it) to go back to --switch files"
                )


def _check_switch(options: Mapping[str, object], problems: Problems) -> None:
    if options.get("switch", "files") not in SWITCHES:
        problems.append(f"switch: must be 'files' or 'symlink', got {options['switch']!r}")
    elif options.get("switch") == "symlink" and options.get("mode") == "objects":
        problems.append(
            "switch: 'symlink' switches whole releases, so it needs --mode auto or releases, not objects"
        )
    trust = options.get("trust")
    if trust is not None and not isinstance(trust, TrustPolicy):
        problems.append(f"trust: expected a trust file path, got {trust!r}")
    elif trust is not None and options.get("mode") == "objects":
        problems.append("trust: signed releases need --mode auto or releases; objects mode verifies nothing")


def _check_dest(dest: Path, problems: Problems) -> None:
    if dest.exists() and not dest.is_dir():
        problems.append(f"DEST {str(dest)!r} exists and is not a directory")


def _attempt(make: Callable[[], T], problems: Problems) -> T | None:
    """`make()`, or None with its ConfigError's lines added to `problems`."""
    try:
        return make()
    except ConfigError as exc:
        problems.extend(str(exc).splitlines())
        return None
