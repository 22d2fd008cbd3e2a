"""`dagmirror keys generate|show|rotate`: local signing keys for signed releases (docs/security.md, "Signed
releases"). Parses flags, calls trust.py, renders."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import click
import orjson

from dagmirror.cli.app import call, cli
from dagmirror.errors import ConfigError
from dagmirror.trust import (
    KeySigner,
    PublicKey,
    generate_ed25519,
    payload_of,
    public_key,
    rotation_statement,
)

_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----\n?", re.DOTALL)


@cli.group()
def keys() -> None:
    """Signing keys for signed releases (Ed25519 key files)."""


@keys.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def generate(out: Path) -> None:
    """Write a new Ed25519 private key to OUT (mode 0600, never overwritten); print its public key."""

    def make() -> PublicKey:
        pem = generate_ed25519()
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            raise ConfigError(f"{out} exists: choose another file (a key is never overwritten)") from None
        except OSError as exc:
            raise ConfigError(f"cannot create {out}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        return KeySigner(pem).public

    _show(call(make, 0))


@keys.command()
@click.argument("key_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--kms-key-id", metavar="ID", help="Show an AWS KMS key (ECC_NIST_P256) instead of a file.")
@click.option("--region", help="AWS region of the KMS key (default: the AWS chain).")
@click.option("--paths", multiple=True, metavar="GLOB", help="Paths the key may sign in the trust entry.")
def show(key_file: Path | None, kms_key_id: str | None, region: str | None, paths: tuple[str, ...]) -> None:
    """Print the key id and the trust-file entry of KEY_FILE (a private or public PEM key) or a KMS key."""
    scope = paths or ("**",)

    def load() -> PublicKey:
        if kms_key_id:
            from dagmirror.cli.app import run_async
            from dagmirror.source.kms import KmsSigner

            signer = KmsSigner(kms_key_id, region=region, profile=None)
            return public_key(run_async(signer.public_pem()), scope)
        if key_file is None:
            raise ConfigError("give a KEY_FILE or --kms-key-id")
        return _public(key_file, scope)

    _show(call(load, 0))


@keys.command()
@click.option("--old", "old_file", type=click.Path(dir_okay=False, path_type=Path), help="Old private key.")
@click.option("--old-kms-key-id", metavar="ID", help="...or the old key in AWS KMS.")
@click.option(
    "--new",
    "new_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="New key: a key file, or the output of `keys show` (e.g. of a KMS key).",
)
def rotate(old_file: Path | None, old_kms_key_id: str | None, new_file: Path) -> None:
    """Print the statement 'OLD is replaced by NEW', signed by OLD, for deploy --rotation."""

    def make() -> bytes:
        new = _public(new_file, ("**",))
        if old_kms_key_id:
            from dagmirror.cli.app import run_async
            from dagmirror.source.kms import KmsSigner

            kms = KmsSigner(old_kms_key_id, region=None, profile=None)
            old_id = public_key(run_async(kms.public_pem())).keyid
            statement = rotation_statement(old_id, new.pem)
            statement["signatures"] = [run_async(kms.sign(payload_of(statement)))]
        elif old_file is not None:
            old = KeySigner(_read(old_file))
            statement = rotation_statement(old.keyid, new.pem)
            statement["signatures"] = [old.sign_now(payload_of(statement))]
        else:
            raise ConfigError("give the old key: --old FILE or --old-kms-key-id ID")
        return orjson.dumps(statement, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)

    sys.stdout.write(call(make, 0).decode())


def _public(path: Path, paths: tuple[str, ...]) -> PublicKey:
    """A private key's public half, a public PEM, or the PEM inside a trust entry `keys show` printed."""
    data = _read(path)
    if b"PRIVATE KEY" in data:
        return public_key(KeySigner(data).public.pem, paths)
    found = _PEM.search(data)
    return public_key(found.group(0) if found else data, paths)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def _show(key: PublicKey) -> None:
    click.echo(f"# key id {key.keyid} ({key.alg}); add to a trust file (docs/security.md):")
    click.echo("[[keys]]")
    click.echo(f"paths = [{', '.join(orjson.dumps(p).decode() for p in key.paths)}]")
    click.echo(f'public = """\n{key.pem}"""')
