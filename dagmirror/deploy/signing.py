"""How a deploy signs (docs/security.md, "Signed releases"): the signers the config names (local key files,
an AWS KMS key) and the rotation statements its pointers carry, read once when the Deployer starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from dagmirror.config.deploy import DeployConfig
from dagmirror.errors import ConfigError
from dagmirror.trust import ROTATION_FORMAT, KeySigner, Signer, Signing


def load_signing(config: DeployConfig) -> Signing | None:
    """None when the config signs nothing (unsigned releases, as before)."""
    if not config.signs:
        return None
    if not config.releases:
        raise ConfigError("signing signs releases: it needs releases on (not --no-releases)")
    signers: list[Signer] = [KeySigner(_read(path)) for path in config.sign_keys]
    if config.kms_key_id:
        from dagmirror.source.kms import KmsSigner

        signers.append(KmsSigner(config.kms_key_id, region=config.region, profile=config.profile))
    rotations = tuple(_rotation(path) for path in config.rotations)
    return Signing(tuple(signers), config.sign_expires, rotations)


def _rotation(path: Path) -> dict[str, Any]:
    try:
        doc = orjson.loads(_read(path))
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not a rotation statement (JSON): {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != ROTATION_FORMAT:
        raise ConfigError(f"{path}: not a rotation statement ({ROTATION_FORMAT}; see dagmirror keys rotate)")
    return doc


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
