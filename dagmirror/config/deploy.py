"""Deploy settings, parsed at the edge: the `[deploy]` table of a TOML file, then DAGMIRROR_DEPLOY_*
environment variables, then flags. Every bad field is reported, one line each.

    [deploy]
    bucket_url = "s3://acme-airflow/dags/"      # environment E lives at s3://acme-airflow/dags/E/
    environments = ["dev", "staging", "production"]
    max_file_bytes = 1_000_000                   # budgets for every environment...
    max_files = 5000

    [deploy.env.production]                      # ...or for one: max_file_bytes, max_files, airflow_check
    max_files = 2000
    airflow_check = true

The file is read, and its values typed and ranged, by the same code as the daemon's (config/toml.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagmirror.config.mirror import S3Url, check_endpoint
from dagmirror.config.toml import Problems, env_value, in_range, read_toml, typed
from dagmirror.errors import ConfigError
from dagmirror.retry import RetryPolicy

SANDBOXES = ("bwrap", "none")  # deploy/sandbox.py
DEFAULT_ENVIRONMENTS = ("dev", "staging", "production")
DEFAULT_EXCLUDE = ("*.pyc",)  # `.git/` and `__pycache__/` folders are never walked at all
ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

KEYS: dict[str, type] = {
    "bucket_url": str,
    "environments": list,
    "root": str,
    "exclude": list,
    "endpoint_url": str,
    "region": str,
    "profile": str,
    "concurrency": int,
    "max_delete_fraction": float,
    "max_file_bytes": int,
    "max_files": int,
    "airflow_check": bool,
    "airflow_python": str,
    "airflow_timeout": float,
    "airflow_sandbox": str,
    "releases": bool,
    "allow_no_conditional_writes": bool,
    "sign_keys": list,  # signed releases: local private key files (docs/security.md, "Signed releases")
    "kms_key_id": str,  # ...or an AWS KMS asymmetric key (ECC_NIST_P256) that signs
    "sign_expires": float,  # seconds a signed pointer stays trusted
    "rotations": list,  # files of key rotation statements every signed pointer carries
}
PER_ENV_KEYS = ("max_file_bytes", "max_files", "airflow_check")
_RANGES: dict[str, tuple[float, float]] = {
    "concurrency": (1, 256),
    "max_delete_fraction": (0.0, 1.0),
    "max_file_bytes": (1, 5 * 1024**3),
    "max_files": (1, 10**7),
    "airflow_timeout": (1.0, 3600.0),
    "sign_expires": (60.0, 366 * 86400.0),
}


@dataclass(frozen=True, slots=True)
class EnvPolicy:
    """Per-environment budgets (None: no limit) and whether real Airflow must parse every deploy."""

    max_file_bytes: int | None = None
    max_files: int | None = None
    airflow_check: bool = False


@dataclass(frozen=True)
class DeployConfig:
    bucket: S3Url  # environment E lives under bucket.prefix + E + '/'
    environments: tuple[str, ...] = DEFAULT_ENVIRONMENTS
    policies: Mapping[str, EnvPolicy] = field(default_factory=dict)
    root: Path | None = None  # local folder that maps to an environment's root; None: see docs/deploy.md
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    concurrency: int = 16
    max_delete_fraction: float = 0.5
    allow_mass_delete: bool = False
    airflow_python: str = "python3"
    airflow_timeout: float = 300.0
    airflow_sandbox: str = "bwrap"  # how DAG code is confined while Airflow parses it (deploy/sandbox.py)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    releases: bool = True  # publish a release with every write (docs/releases.md); False: plain files only
    allow_no_conditional_writes: bool = False  # publish on a server that ignores If-Match (no CAS)
    sts: bool = True  # ask STS who deploys (see `load_deploy_config` for when it is off)
    sign_keys: tuple[Path, ...] = ()  # signed releases: every key signs (docs/security.md)
    kms_key_id: str | None = None
    sign_expires: float = 7 * 86400.0
    rotations: tuple[Path, ...] = ()

    @property
    def signs(self) -> bool:
        return bool(self.sign_keys or self.kms_key_id)

    def env_prefix(self, env: str) -> str:
        self.policy(env)
        return f"{self.bucket.prefix}{env}/"

    def policy(self, env: str) -> EnvPolicy:
        if env not in self.environments:
            known = ", ".join(self.environments)
            raise ConfigError(f"unknown environment {env!r}: configured environments are {known}")
        return self.policies.get(env, EnvPolicy())


def load_deploy_config(
    path: Path | None, environ: Mapping[str, str], flags: Mapping[str, Any]
) -> DeployConfig:
    """Merge file < DAGMIRROR_DEPLOY_* < flags (None means 'not given'). Raises ConfigError, one line per
    problem. The S3 endpoint falls back to $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL."""
    errors = Problems()
    table = _deploy_table(path, errors) if path else {}
    per_env = table.pop("env", {})
    errors += [f"[deploy]: unknown key {k!r}" for k in sorted(set(table) - set(KEYS))]
    values: dict[str, Any] = {
        k: typed(f"[deploy].{k}", KEYS[k], v, errors) for k, v in table.items() if k in KEYS
    }
    if path is not None and isinstance(values.get("root"), str):
        values["root"] = str(path.parent / values["root"])  # a file's root is relative to the file
    # Excludes protect files from a folder deploy's deletes: each layer (file, environment, flags) adds to
    # them, none replaces them.
    layers = [values.pop("exclude", None)]
    for key, typ in KEYS.items():
        raw = environ.get(f"DAGMIRROR_DEPLOY_{key.upper()}")
        if raw is not None:
            values[key] = env_value(f"DAGMIRROR_DEPLOY_{key.upper()}", typ, raw, errors)
    layers += [values.pop("exclude", None), flags.get("exclude")]
    values |= {k: v for k, v in flags.items() if v is not None and k != "exclude"}
    excludes: list[str] = []
    for layer in layers:
        excludes += [e for e in layer or () if e not in excludes]
    if excludes:
        values["exclude"] = excludes
    values = {k: v for k, v in values.items() if v is not None}
    for key, value in values.items():
        _check_range(key, key, value, errors)
    config = _build(values, per_env, environ, errors)
    if errors or config is None:
        raise ConfigError("\n".join(errors))
    return config


def _build(
    values: dict[str, Any], per_env: Any, environ: Mapping[str, str], errors: Problems
) -> DeployConfig | None:
    bucket: S3Url | None = None
    if "bucket_url" not in values:
        errors.append(
            "no bucket: give --bucket-url s3://BUCKET/dags/, or bucket_url in the [deploy] table of "
            "dagmirror.toml, or $DAGMIRROR_DEPLOY_BUCKET_URL"
        )
    else:
        bucket = _try(lambda: S3Url.parse(values["bucket_url"]), "bucket_url", errors)
    environments = tuple(values.get("environments", DEFAULT_ENVIRONMENTS))
    for name in environments:
        if not ENV_NAME.match(name):
            errors.append(f"environments: {name!r} is not a plain folder name (letters, digits, . _ -)")
    if not environments or len(set(environments)) != len(environments):
        errors.append(f"environments: must be a non-empty list of distinct names, got {list(environments)}")
    endpoint = (
        values.get("endpoint_url") or environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    )
    if endpoint is not None:
        _try(lambda: check_endpoint(endpoint), "endpoint_url", errors)
    policies = _policies(per_env, environments, values, errors)
    if values.get("airflow_sandbox", "bwrap") not in SANDBOXES:
        errors.append(f"airflow_sandbox: one of {', '.join(SANDBOXES)}, got {values['airflow_sandbox']!r}")
    if bucket is None or errors:
        return None
    root = values.get("root")
    return DeployConfig(
        bucket=bucket,
        environments=environments,
        policies=policies,
        root=Path(root) if root else None,
        exclude=DEFAULT_EXCLUDE + tuple(values.get("exclude", ())),
        endpoint_url=endpoint,
        region=values.get("region"),
        profile=values.get("profile"),
        concurrency=values.get("concurrency", 16),
        max_delete_fraction=float(values.get("max_delete_fraction", 0.5)),
        allow_mass_delete=bool(values.get("allow_mass_delete", False)),
        releases=bool(values.get("releases", True)),
        allow_no_conditional_writes=bool(values.get("allow_no_conditional_writes", False)),
        airflow_python=values.get("airflow_python", "python3"),
        airflow_timeout=float(values.get("airflow_timeout", 300.0)),
        airflow_sandbox=values.get("airflow_sandbox", "bwrap"),
        **_signing(values),
        # A custom S3 endpoint given only as a flag says nothing about STS: do not ask AWS's STS then.
        sts=endpoint is None or bool(environ.get("AWS_ENDPOINT_URL_STS") or environ.get("AWS_ENDPOINT_URL")),
    )


def _signing(values: dict[str, Any]) -> dict[str, Any]:
    """The signing fields of DeployConfig (docs/security.md, "Signed releases")."""
    return {
        "sign_keys": tuple(Path(p) for p in values.get("sign_keys", ())),
        "kms_key_id": values.get("kms_key_id"),
        "sign_expires": float(values.get("sign_expires", 7 * 86400.0)),
        "rotations": tuple(Path(p) for p in values.get("rotations", ())),
    }


def _policies(
    per_env: Any, environments: tuple[str, ...], values: dict[str, Any], errors: Problems
) -> dict[str, EnvPolicy]:
    if not isinstance(per_env, dict) or not all(isinstance(t, dict) for t in per_env.values()):
        errors.append("[deploy.env]: expected one table per environment, e.g. [deploy.env.production]")
        return {}
    defaults = {k: values[k] for k in PER_ENV_KEYS if k in values}
    policies: dict[str, EnvPolicy] = {}
    for env in environments:
        table = per_env.get(env, {})
        errors += [f"[deploy.env.{env}]: unknown key {k!r}" for k in sorted(set(table) - set(PER_ENV_KEYS))]
        mine = {
            k: typed(f"[deploy.env.{env}].{k}", KEYS[k], table[k], errors) for k in PER_ENV_KEYS if k in table
        }
        for key, value in mine.items():
            _check_range(f"[deploy.env.{env}].{key}", key, value, errors)
        merged = defaults | mine
        policies[env] = EnvPolicy(**{k: v for k, v in merged.items() if k in PER_ENV_KEYS and v is not None})
    errors += [
        f"[deploy.env.{name}]: {name!r} is not in environments"
        for name in sorted(set(per_env) - set(environments))
    ]
    return policies


def _check_range(where: str, key: str, value: Any, errors: Problems) -> None:
    if key in _RANGES and value is not None:
        in_range(where, value, *_RANGES[key], errors)


def _deploy_table(path: Path, errors: Problems) -> dict[str, Any]:
    table = read_toml(path, errors).get("deploy", {})
    if not isinstance(table, dict):
        errors.append(f"{path}: 'deploy' must be a table: [deploy]")
        return {}
    return dict(table)


def _try(make: Any, where: str, errors: Problems) -> Any:
    try:
        return make()
    except ConfigError as exc:
        errors.append(f"{where}: {exc}")
        return None


def config_path(given: Path | None, cwd: Path | None = None) -> Path | None:
    """--config FILE, else ./dagmirror.toml when it exists (a DAG repository keeps its deploy table there)."""
    if given is not None:
        return given
    default = (cwd or Path(os.getcwd())) / "dagmirror.toml"
    return default if default.is_file() else None
