"""Signing with an AWS KMS key (ECC_NIST_P256, ECDSA_SHA_256) against moto server's KMS over HTTP: the private
key never leaves KMS; the mirror verifies with its public half from `dagmirror keys show --kms-key-id`."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from dagmirror.errors import ConfigError
from dagmirror.source.kms import KmsSigner
from dagmirror.trust import parse_trust, public_key, rotate, signers_of

from .helpers import dagmirror, read_tree, sdk_credentials, write_tree

FILES = {"etl/a.py": b"a = 1\n"}


@pytest.fixture
def kms(moto_endpoint: str) -> Any:
    return boto3.client(
        "kms", endpoint_url=moto_endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip


@pytest.fixture
def kms_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", moto_endpoint)
    with sdk_credentials():
        yield


def signing_key(kms: Any, spec: str = "ECC_NIST_P256") -> str:
    return str(kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"])


def test_kms_signatures_verify_with_the_keys_public_half(kms: Any, kms_env: None) -> None:
    signer = KmsSigner(signing_key(kms), region="us-east-1", profile=None)
    trusted = public_key(asyncio.run(signer.public_pem()))
    signature = asyncio.run(signer.sign(b"payload"))
    assert signature["keyid"] == trusted.keyid
    assert signers_of(b"payload", [signature], {trusted.keyid: trusted}) == {trusted.keyid}
    assert signers_of(b"other payload", [signature], {trusted.keyid: trusted}) == set()


def test_a_kms_key_of_another_spec_is_refused_with_one_line(kms: Any, kms_env: None) -> None:
    key_id = signing_key(kms, "RSA_2048")
    with pytest.raises(ConfigError, match=f"KMS key {key_id} is RSA_2048: signing needs ECC_NIST_P256"):
        asyncio.run(KmsSigner(key_id, region="us-east-1", profile=None).sign(b"x"))


def test_deploy_signed_by_kms_is_installed_by_a_mirror_trusting_it(
    s3: Any, kms: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    key_id = signing_key(kms)
    shown = dagmirror("keys", "show", "--kms-key-id", key_id, "--region", "us-east-1", endpoint=moto_endpoint)
    assert shown.code == 0, shown.stderr
    trust = tmp_path / "prod-trust.toml"
    trust.write_text(shown.stdout)
    src = write_tree(tmp_path / "src", FILES)
    url = f"s3://{bucket}/dags/"
    deployed = dagmirror("deploy", src, "--env", "production", "--bucket-url", url, "--kms-key-id", key_id,
                         "--json", endpoint=moto_endpoint)  # fmt: skip
    assert deployed.code == 0, deployed.stderr
    dest = tmp_path / "dest"
    synced = dagmirror("sync", f"{url}production/", dest, "--trust", trust, "--json", endpoint=moto_endpoint)
    assert synced.code == 0, synced.stderr
    assert synced.report["release"] == deployed.report["release"]
    assert read_tree(dest) == FILES
    other = signing_key(kms)  # a KMS key the mirror does not trust (the attacker's account, say)
    (src / "etl" / "a.py").write_bytes(b"a = 'evil'\n")
    evil = dagmirror("deploy", src, "--env", "production", "--bucket-url", url, "--kms-key-id", other,
                     endpoint=moto_endpoint)  # fmt: skip
    assert evil.code == 0, evil.stderr
    refused = dagmirror("sync", f"{url}production/", dest, "--trust", trust, endpoint=moto_endpoint)
    assert refused.code == 1
    assert "0 valid signature(s) of a trusted key" in refused.stderr
    assert read_tree(dest) == FILES


def test_a_kms_key_signs_the_rotation_to_its_successor(kms: Any, moto_endpoint: str, tmp_path: Path) -> None:
    old_id = signing_key(kms)
    old = dagmirror("keys", "show", "--kms-key-id", old_id, "--region", "us-east-1", endpoint=moto_endpoint)
    (tmp_path / "trust.toml").write_text(old.stdout)
    successor = signing_key(kms)
    shown = dagmirror(
        "keys", "show", "--kms-key-id", successor, "--region", "us-east-1", endpoint=moto_endpoint
    )
    (tmp_path / "new.toml").write_text(shown.stdout)
    run = dagmirror("keys", "rotate", "--old-kms-key-id", old_id, "--new", tmp_path / "new.toml",
                    endpoint=moto_endpoint)  # fmt: skip
    assert run.code == 0, run.stderr
    policy = parse_trust(tomllib.loads((tmp_path / "trust.toml").read_text()), "trust.toml")
    rotated = rotate(policy, [orjson.loads(run.stdout)])
    assert [k.pem for k in rotated.keys] == [parse_trust(tomllib.loads(shown.stdout), "new").keys[0].pem]
