"""Settings for `dagmirror run`: a TOML file, then DAGMIRROR_* environment variables, then flags.

    interval = 30                 # service keys at the top level
    http = "127.0.0.1:9090"
    concurrency = 32              # any mirror key here is a default for every [[mirror]]

    [[mirror]]
    name = "analytics"
    source = "s3://bucket/dags/prod/analytics"
    dest = "/opt/airflow/dags/analytics"
    exclude = ["*_test.py"]

`load_run_config` returns a finished `ServiceConfig` (typed fields, `http = "off"` already None, paths as
Path, the audit URL parsed), so `dagmirror run` only parses flags, calls it, and builds the service.
Every bad field is reported, one line each (ConfigError's message has one line per problem).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagmirror.config.fleet import (
    DEFAULT_HEARTBEAT,
    HEARTBEAT_RANGE,
    default_instance_id,
    instance_id_problem,
)
from dagmirror.config.mirror import MirrorConfig, S3Url, check_endpoint, check_options
from dagmirror.config.toml import Problems, env_value, in_range, read_toml, typed
from dagmirror.errors import ConfigError

Environ = collections.abc.Mapping[str, str]
Flags = collections.abc.Mapping[str, Any]  # click's parameters: None means 'not given'

SERVICE_KEYS: dict[str, type] = {
    "interval": float,
    "jitter": float,
    "http": str,
    "staleness": float,
    "grace": float,
    "max_backoff": float,
    "audit_dir": str,
    "audit_s3": str,
    "sqs_queue": str,
    "sqs_endpoint_url": str,
    "exec_on_change": str,
    "webhook": str,
    "hook_timeout": float,
    "instance_id": str,
    "heartbeat": float,
    "status": bool,
}
MIRROR_KEYS: dict[str, type] = {
    "name": str,
    "source": str,
    "dest": str,
    "endpoint_url": str,
    "region": str,
    "profile": str,
    "concurrency": int,
    "include": list,
    "exclude": list,
    "max_delete_fraction": float,
    "max_objects": int,
    "allow_mass_delete": bool,
    "transport": str,
    "mode": str,
    "switch": str,
    "keep_generations": int,
    "generation_grace": float,
    "fsync": bool,
    "trust": str,  # a trust file: install only releases its keys signed (docs/security.md)
}
_PER_MAPPING = ("name", "source", "dest")
_RANGES = {
    "interval": (0.1, 86400.0),
    "jitter": (0.0, 1.0),
    "staleness": (1.0, 365 * 86400.0),  # 0, negative, inf or NaN would make /readyz never (or always) ready
    "grace": (0.0, 3600.0),
    "max_backoff": (0.1, 86400.0),
    "hook_timeout": (0.1, 3600.0),
    "heartbeat": HEARTBEAT_RANGE,
}
# The default interval by how a pass learns what changed (docs/operations.md, "What a poll costs"): a release
# poll is one conditional GET at any number of files, so it can run every few seconds for cents a month;
# a listing costs one LIST per 1,000 files and stays at 30 s.
RELEASES_INTERVAL = 5.0
OBJECTS_INTERVAL = 30.0
_URLS = ("sqs_queue", "sqs_endpoint_url", "webhook")


@dataclass(frozen=True)
class Mapping:
    """One mirror of the daemon: its name (in logs, metrics and audit records) and its config."""

    name: str
    config: MirrorConfig


@dataclass(frozen=True)
class ServiceConfig:
    mappings: tuple[Mapping, ...]
    interval: float | None = None  # None: RELEASES_INTERVAL while following a release, else OBJECTS_INTERVAL
    jitter: float = 0.1
    http: str | None = "127.0.0.1:9090"  # None: no HTTP server
    staleness: float | None = None  # default: max(120 s, 4 intervals)
    grace: float = 30.0
    max_backoff: float = 300.0
    audit_dir: Path | None = None  # default: <first DEST>/.dagmirror/audit
    audit_s3: S3Url | None = None  # its prefix, when given, replaces metadata/sync-logs/
    host: str = field(default_factory=socket.gethostname)
    sqs_queue: str | None = None  # S3 event notifications wake a pass at once (docs/operations.md)
    sqs_endpoint_url: str | None = None  # None: the SDK's ($AWS_ENDPOINT_URL_SQS, $AWS_ENDPOINT_URL, AWS)
    exec_on_change: tuple[str, ...] = ()  # a command run after each pass that changed DEST (no shell)
    webhook: str | None = None  # POSTed a JSON body after each pass that changed DEST
    hook_timeout: float = 30.0  # each hook run, or each webhook attempt, is bounded by this

    # The instance status (docs/operations.md, "The fleet"): who this is, how often it says it is alive.
    # `load_run_config` (so `dagmirror run`) turns it on unless told not to; a ServiceConfig built in code
    # opts in, so a library user or a test never writes to a bucket unasked.
    instance_id: str = field(default_factory=socket.gethostname)
    heartbeat: float = DEFAULT_HEARTBEAT
    status: bool = False

    def interval_for(self, mode: str) -> float:
        """Seconds between passes of a mapping whose last pass ran in `mode` ('releases' or 'objects')."""
        if self.interval is not None:
            return self.interval
        return RELEASES_INTERVAL if mode == "releases" else OBJECTS_INTERVAL

    @property
    def staleness_limit(self) -> float:
        if self.staleness is not None:
            return self.staleness
        return max(120.0, 4 * (self.interval or OBJECTS_INTERVAL))

    @property
    def audit_directory(self) -> Path:
        return self.audit_dir or self.mappings[0].config.work_dir / ".dagmirror" / "audit"


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 in brackets) as (host, port); an empty host is loopback."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--http must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def load_run_config(path: Path | None, env: Environ, flags: Flags) -> ServiceConfig:
    """Merge file < env < flags; `flags` may carry `source`/`dest` for a single mapping named 'default'.
    `env` is also where each mapping's `$AWS_REGION` and `$AWS_ENDPOINT_URL*` come from."""
    problems = Problems()
    doc = read_toml(path, problems) if path else {}
    # `[deploy]` belongs to `dagmirror deploy` (dagmirror/config/deploy.py): one file can serve both.
    unknown = set(doc) - set(SERVICE_KEYS) - set(MIRROR_KEYS) - {"mirror", "deploy"}
    problems += [f"{path}: unknown key {k!r}" for k in sorted(unknown)]
    service = _merged(SERVICE_KEYS, doc, env, flags, problems)
    defaults = _merged(
        {k: t for k, t in MIRROR_KEYS.items() if k not in _PER_MAPPING}, doc, env, flags, problems
    )
    tables = _mirror_tables(doc, flags, env, problems)
    mappings = [_build(i, table, defaults, env, problems) for i, table in enumerate(tables)]
    options = _service_options(service, problems)
    options.setdefault("status", True)
    options.setdefault("instance_id", default_instance_id(env))
    if problem := instance_id_problem(options["instance_id"]):
        problems.append(f"instance_id: {problem} (set --instance-id)")
    built = tuple(m for m in mappings if m is not None)
    _check_dests(built, problems)
    if not tables and not problems:
        problems.append("no mirror configured: give SOURCE DEST, or --config with [[mirror]] tables")
    problems.raise_if_any()
    return dataclasses.replace(ServiceConfig(built), **options)


def _merged(
    keys: dict[str, type], doc: dict[str, Any], env: Environ, flags: Flags, problems: Problems
) -> dict[str, Any]:
    """The values of `keys`: the file's, overridden by DAGMIRROR_<KEY>, overridden by flags. A variable
    that does not parse is one problem and is dropped, so it is not reported again as a bad value."""
    values = {k: doc[k] for k in keys if k in doc}
    for key, typ in keys.items():
        raw = env.get(f"DAGMIRROR_{key.upper()}")
        if raw is not None:
            value = env_value(f"DAGMIRROR_{key.upper()}", typ, raw, problems)
            if value is not None:
                values[key] = value
    return values | {k: v for k, v in flags.items() if k in keys and v is not None}


def _mirror_tables(doc: dict[str, Any], flags: Flags, env: Environ, problems: Problems) -> list[Any]:
    tables = doc.get("mirror", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append("'mirror' must be an array of tables: [[mirror]]")
        tables = []
    source = flags.get("source") or env.get("DAGMIRROR_SOURCE")
    dest = flags.get("dest") or env.get("DAGMIRROR_DEST")
    if source or dest:
        tables = [*tables, {"name": "default", "source": source, "dest": dest}]
    return list(tables)


def _build(
    index: int, table: dict[str, Any], defaults: dict[str, Any], env: Environ, problems: Problems
) -> Mapping | None:
    """One [[mirror]]: every bad key is reported, and the keys that are fine are still validated by
    `MirrorConfig.create`, so a bad type never hides a bad source URL or an out-of-range value."""
    where = f"mirror[{index}]"
    before = len(problems)
    problems += [f"{where}: unknown key {k!r}" for k in sorted(set(table) - set(MIRROR_KEYS))]
    merged = {
        key: typed(f"{where}.{key}", MIRROR_KEYS[key], value, problems)
        for key, value in (defaults | table).items()
        if key in MIRROR_KEYS and value is not None
    }
    merged = {k: v for k, v in merged.items() if v is not None}
    for key in ("source", "dest"):
        if not merged.get(key):
            problems.append(f"{where}.{key}: missing")
    name = str(merged.pop("name", None) or f"mirror{index}")
    options = {k: v for k, v in merged.items() if k not in _PER_MAPPING}
    mine = Problems()
    config: MirrorConfig | None = None
    if merged.get("source") and merged.get("dest"):
        try:
            config = MirrorConfig.create(merged["source"], merged["dest"], env=env, **options)
        except ConfigError as exc:
            mine += str(exc).splitlines()
    else:  # no config to build, but its other values can still be wrong
        check_options(options, mine)
    problems += [f"{where} ({name}): {line}" for line in mine]
    return Mapping(name, config) if config is not None and len(problems) == before else None


def _service_options(service: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """The service keys as `ServiceConfig` fields: checked, ranged, 'off' and paths and URLs finished."""
    options: dict[str, Any] = {}
    for key, value in service.items():
        checked = typed(key, SERVICE_KEYS[key], value, problems)
        if checked is None or (key in _RANGES and not in_range(key, checked, *_RANGES[key], problems)):
            continue
        options[key] = checked
    if options.get("http") == "off":
        options["http"] = None
    elif "http" in options:
        try:
            parse_listen(options["http"])
        except ConfigError as exc:
            problems.append(f"http: {exc}")
    _hook_options(options, problems)
    if "audit_dir" in options:
        options["audit_dir"] = Path(options["audit_dir"])
    if "audit_s3" in options:
        try:
            options["audit_s3"] = S3Url.parse(options["audit_s3"])
        except ConfigError as exc:
            problems.append(f"audit_s3: {exc}")
    return options


def _hook_options(options: dict[str, Any], problems: Problems) -> None:
    """URLs checked (http(s)://host), and the hook command split as a shell would, but run without one."""
    for key in _URLS:
        if key in options:
            try:
                check_endpoint(options[key])
            except ConfigError as exc:
                problems.append(f"{key}: {exc}")
    if "exec_on_change" in options:
        try:
            argv = tuple(shlex.split(options["exec_on_change"]))
        except ValueError as exc:
            argv = ()
            problems.append(f"exec_on_change: cannot split {options['exec_on_change']!r}: {exc}")
        else:
            if not argv:
                problems.append("exec_on_change: empty command")
        options["exec_on_change"] = argv


def _check_dests(mappings: tuple[Mapping, ...], problems: Problems) -> None:
    seen: dict[Path, str] = {}
    for mapping in mappings:
        dest = mapping.config.dest.resolve()
        for other, other_name in seen.items():
            if dest == other or dest.is_relative_to(other) or other.is_relative_to(dest):
                problems.append(
                    f"mirror {mapping.name!r}: dest {mapping.config.dest} overlaps the dest of mirror "
                    f"{other_name!r}"
                )
        seen[dest] = mapping.name
    names = [m.name for m in mappings]
    problems += [f"mirror name {n!r} is used twice" for n in sorted({n for n in names if names.count(n) > 1})]
