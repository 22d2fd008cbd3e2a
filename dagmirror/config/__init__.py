"""Configuration, parsed and validated at the edge into immutable, typed values.

    toml.py     the one TOML reader and the typed-value, environment-variable and range checks
    mirror.py   S3Url, MirrorConfig: one mapping (`sync`, the library)
    service.py  ServiceConfig, Mapping, load_run_config: `dagmirror run` (file < env < flags)
    deploy.py   DeployConfig, EnvPolicy, load_deploy_config: `dagmirror deploy` and friends
    fleet.py    the instance id rule and the heartbeat default of the instance status

Every loader reports every bad field at once, one line each, in one ConfigError. The environment is a
parameter everywhere; only `MirrorConfig.create(env=None)`, the library's outermost edge, reads os.environ.
This package imports nothing above it (no engine, source or service): import-linter checks that.
"""

from dagmirror.config.deploy import DeployConfig, EnvPolicy, config_path, load_deploy_config
from dagmirror.config.mirror import (
    DEFAULT_CONCURRENCY,
    MirrorConfig,
    S3Url,
    check_endpoint,
    generations_home,
    redact_url,
)
from dagmirror.config.service import Mapping, ServiceConfig, load_run_config, parse_listen
from dagmirror.config.toml import env_value

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DeployConfig",
    "EnvPolicy",
    "Mapping",
    "MirrorConfig",
    "S3Url",
    "ServiceConfig",
    "check_endpoint",
    "config_path",
    "env_value",
    "generations_home",
    "load_deploy_config",
    "load_run_config",
    "parse_listen",
    "redact_url",
]
