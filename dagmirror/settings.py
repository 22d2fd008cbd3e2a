"""Settings for `dagmirror run`: a TOML file, then DAGMIRROR_* environment variables, then flags.

    interval = 30                 # service keys at the top level
    http = "127.0.0.1:9090"
    concurrency = 32              # any mirror key here is a default for every [[mirror]]

    [[mirror]]
    name = "analytics"
    source = "s3://bucket/dags/prod/analytics"
    dest = "/opt/airflow/dags/analytics"
    exclude = ["*_test.py"]

Every bad field is reported, one line each (ConfigError's message has one line per problem).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagmirror.config import MirrorConfig, S3Url, env_value
from dagmirror.errors import ConfigError

SERVICE_KEYS: dict[str, type] = {
    "interval": float,
    "jitter": float,
    "http": str,
    "staleness": float,
    "grace": float,
    "max_backoff": float,
    "audit_dir": str,
    "audit_s3": str,
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
    "allow_mass_delete": bool,
    "transport": str,
    "fsync": bool,
}
_PER_MAPPING = ("name", "source", "dest")
_RANGES = {
    "interval": (0.1, 86400.0),
    "jitter": (0.0, 1.0),
    "staleness": (1.0, 365 * 86400.0),  # 0, negative, inf or NaN would make /readyz never (or always) ready
    "grace": (0.0, 3600.0),
    "max_backoff": (0.1, 86400.0),
}


@dataclass(frozen=True)
class Settings:
    service: dict[str, Any]
    mirrors: tuple[tuple[str, MirrorConfig], ...]


def load_settings(path: Path | None, env: Mapping[str, str], flags: Mapping[str, Any]) -> Settings:
    """Merge file < env < flags; `flags` may carry `source`/`dest` for a single mapping named 'default'."""
    errors: list[str] = []
    doc = _read_toml(path, errors) if path else {}
    # `[deploy]` belongs to `dagmirror deploy` (dagmirror/deploy/config.py): one file can serve both.
    unknown = set(doc) - set(SERVICE_KEYS) - set(MIRROR_KEYS) - {"mirror", "deploy"}
    errors += [f"{path}: unknown key {k!r}" for k in sorted(unknown)]
    service = {k: doc[k] for k in SERVICE_KEYS if k in doc}
    defaults = {k: doc[k] for k in MIRROR_KEYS if k in doc and k not in _PER_MAPPING}
    for key, typ in (SERVICE_KEYS | MIRROR_KEYS).items():
        raw = env.get(f"DAGMIRROR_{key.upper()}")
        if raw is not None and key not in _PER_MAPPING:
            value = env_value(f"DAGMIRROR_{key.upper()}", typ, raw, errors)
            (service if key in SERVICE_KEYS else defaults)[key] = value
    service |= {k: v for k, v in flags.items() if k in SERVICE_KEYS and v is not None}
    defaults |= {
        k: v for k, v in flags.items() if k in MIRROR_KEYS and k not in _PER_MAPPING and v is not None
    }
    tables = _mirror_tables(doc, flags, env, errors)
    mirrors = [_build(i, table, defaults, errors) for i, table in enumerate(tables)]
    _check_service(service, errors)
    _check_dests([m for m in mirrors if m is not None], errors)
    if not tables and not errors:
        errors.append("no mirror configured: give SOURCE DEST, or --config with [[mirror]] tables")
    if errors:
        raise ConfigError("\n".join(errors))
    return Settings(service, tuple(m for m in mirrors if m is not None))


def _read_toml(path: Path, errors: list[str]) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        errors.append(f"{path}: cannot read: {exc.strerror}")
    except tomllib.TOMLDecodeError as exc:
        errors.append(f"{path}: invalid TOML: {exc}")
    return {}


def _mirror_tables(
    doc: dict[str, Any], flags: Mapping[str, Any], env: Mapping[str, str], errors: list[str]
) -> list[dict[str, Any]]:
    tables = doc.get("mirror", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        errors.append("'mirror' must be an array of tables: [[mirror]]")
        tables = []
    source = flags.get("source") or env.get("DAGMIRROR_SOURCE")
    dest = flags.get("dest") or env.get("DAGMIRROR_DEST")
    if source or dest:
        tables = [*tables, {"name": "default", "source": source, "dest": dest}]
    return list(tables)


def _build(
    index: int, table: dict[str, Any], defaults: dict[str, Any], errors: list[str]
) -> tuple[str, MirrorConfig] | None:
    where = f"mirror[{index}]"
    merged = defaults | {k: v for k, v in table.items()}
    before = len(errors)
    for key in sorted(set(table) - set(MIRROR_KEYS)):
        errors.append(f"{where}: unknown key {key!r}")
    for key, value in merged.items():
        typ = MIRROR_KEYS.get(key)
        if typ is not None and value is not None and not _is(value, typ):
            errors.append(f"{where}.{key}: expected {typ.__name__}, got {value!r}")
    for key in ("source", "dest"):
        if not merged.get(key):
            errors.append(f"{where}.{key}: missing")
    if len(errors) > before:
        return None
    name = str(merged.pop("name", None) or f"mirror{index}")
    options = {k: v for k, v in merged.items() if k in MIRROR_KEYS and k not in _PER_MAPPING}
    try:
        return name, MirrorConfig.create(merged["source"], merged["dest"], **options)
    except ConfigError as exc:
        errors.append(f"{where} ({name}): {exc}")
    except TypeError as exc:
        errors.append(f"{where} ({name}): {exc}")
    return None


def _check_service(service: dict[str, Any], errors: list[str]) -> None:
    for key, value in list(service.items()):
        typ = SERVICE_KEYS[key]
        if not _is(value, typ):
            errors.append(f"{key}: expected {typ.__name__}, got {value!r}")
            continue
        low, high = _RANGES.get(key, (None, None))
        if low is not None and high is not None and not low <= float(value) <= high:
            errors.append(f"{key}: must be between {low} and {high}, got {value!r}")
    if isinstance(service.get("audit_s3"), str):
        try:
            service["audit_s3"] = S3Url.parse(service["audit_s3"])
        except ConfigError as exc:
            errors.append(f"audit_s3: {exc}")


def _check_dests(mirrors: list[tuple[str, MirrorConfig]], errors: list[str]) -> None:
    seen: dict[Path, str] = {}
    for name, cfg in mirrors:
        dest = cfg.dest.resolve()
        for other, other_name in seen.items():
            if dest == other or dest.is_relative_to(other) or other.is_relative_to(dest):
                errors.append(f"mirror {name!r}: dest {cfg.dest} overlaps the dest of mirror {other_name!r}")
        seen[dest] = name
    names = [n for n, _ in mirrors]
    errors += [f"mirror name {n!r} is used twice" for n in sorted({n for n in names if names.count(n) > 1})]


def _is(value: Any, typ: type) -> bool:
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typ is list:
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    return isinstance(value, typ)
