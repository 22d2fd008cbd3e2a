"""trust.py: signatures, thresholds, path-scoped keys, seq, expiry and key rotation, with literal keys."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from dagmirror.cli import cli
from dagmirror.errors import ConfigError
from dagmirror.manifest import FileEntry, Manifest, Pointer, parse_manifest, pointer_payload, sha256_hex
from dagmirror.trust import (
    ED25519,
    P256,
    KeySigner,
    TrustPolicy,
    Untrusted,
    check_manifest,
    check_pointer,
    parse_trust,
    payload_of,
    public_key,
    rotate,
    rotation_statement,
    signers_of,
)

A = "a" * 64
B = "b" * 64
PREFIX = "dags/production/"
NOW = 1_800_000_000.0


def ed_key(seed: int) -> KeySigner:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    return KeySigner(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))


def p256_key(seed: int) -> KeySigner:
    key = ec.derive_private_key(seed, ec.SECP256R1())
    return KeySigner(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))


CI, DEV, TEAM_A = ed_key(1), ed_key(2), ed_key(3)


def trusting(
    *signers: KeySigner, threshold: int = 1, paths: dict[str, list[str]] | None = None
) -> TrustPolicy:
    scoped = paths or {}
    keys = tuple(public_key(s.public.pem, scoped.get(s.keyid, ["**"])) for s in signers)
    return TrustPolicy(keys, threshold)


def signed_pointer(*signers: KeySigner, seq: int = 5, release: str = A, expires: float = NOW + 60) -> bytes:
    pointer = Pointer(PREFIX, release, seq, NOW - 10, 1, 3, None, expires=expires, manifest_size=100)
    payload = pointer.encode()
    sigs = tuple(s.sign_now(payload) for s in signers)
    return replace(pointer, signatures=sigs).encode()


def verify_pointer(policy: TrustPolicy, body: bytes, installed: tuple[int, str] | None = None) -> None:
    doc = orjson.loads(body)
    check_pointer(
        policy,
        pointer_payload(body),
        doc["signatures"],
        seq=doc["seq"],
        release=doc["release"],
        expires=doc["expires"],
        installed=installed,
        now=NOW,
    )


def test_a_pointer_signed_by_a_trusted_key_verifies() -> None:
    verify_pointer(trusting(CI), signed_pointer(CI))


def test_an_unsigned_pointer_is_refused_with_one_line() -> None:
    with pytest.raises(Untrusted, match="unsigned and this mirror trusts only signed releases"):
        verify_pointer(trusting(CI), signed_pointer())


def test_a_pointer_signed_by_an_untrusted_key_is_refused() -> None:
    with pytest.raises(Untrusted, match="0 valid signature"):
        verify_pointer(trusting(CI), signed_pointer(DEV))


def test_a_pointer_changed_after_signing_is_refused() -> None:
    body = signed_pointer(CI).replace(b'"seq":5', b'"seq":6')
    with pytest.raises(Untrusted, match="0 valid signature"):
        verify_pointer(trusting(CI), body)


def test_a_signature_under_another_algorithm_name_is_ignored() -> None:
    doc = orjson.loads(signed_pointer(CI))
    doc["signatures"][0]["alg"] = P256
    with pytest.raises(Untrusted):
        verify_pointer(trusting(CI), orjson.dumps(doc))


def test_threshold_two_needs_two_distinct_keys() -> None:
    policy = trusting(CI, DEV, threshold=2)
    verify_pointer(policy, signed_pointer(CI, DEV))
    with pytest.raises(Untrusted, match="1 valid signature"):
        verify_pointer(policy, signed_pointer(CI, CI))


def test_a_lower_seq_than_dest_holds_is_a_rollback() -> None:
    with pytest.raises(Untrusted, match="not newer than seq 7"):
        verify_pointer(trusting(CI), signed_pointer(CI, seq=5), installed=(7, B))


def test_the_same_seq_naming_another_release_is_refused_and_the_same_release_is_fine() -> None:
    verify_pointer(trusting(CI), signed_pointer(CI, seq=5), installed=(5, A))
    with pytest.raises(Untrusted, match="not newer"):
        verify_pointer(trusting(CI), signed_pointer(CI, seq=5, release=A), installed=(5, B))


def test_an_expired_pointer_is_stale() -> None:
    with pytest.raises(Untrusted, match="expired at 2027-01-15T07:59:59Z: stale"):
        verify_pointer(trusting(CI), signed_pointer(CI, expires=1_800_000_000.0 - 1))


def test_a_signed_pointer_without_expiry_is_refused() -> None:
    pointer = Pointer(PREFIX, A, 5, NOW, 1, 3, None, manifest_size=10)
    sig = CI.sign_now(pointer.encode())
    with pytest.raises(Untrusted, match="no expiry"):
        verify_pointer(trusting(CI), replace(pointer, signatures=(sig,)).encode())


def test_a_p256_key_signs_and_verifies_like_kms() -> None:
    signer = p256_key(12345)
    assert signer.public.alg == P256
    verify_pointer(trusting(signer), signed_pointer(signer))
    assert CI.public.alg == ED25519


def manifest_of(files: dict[str, bytes], *signers: KeySigner) -> tuple[bytes, str]:
    entries = {p: FileEntry(sha256_hex(b), len(b)) for p, b in files.items()}
    manifest = Manifest(PREFIX, entries, NOW, 5)
    sigs = tuple(s.sign_now(manifest.encode()) for s in signers)
    body = replace(manifest, signatures=sigs).encode()
    return body, sha256_hex(body)


def verify_manifest(policy: TrustPolicy, body: bytes, release: str) -> None:
    checked = parse_manifest(body, release_id=release, prefix=PREFIX)
    paths = checked.manifest.files
    check_manifest(policy, checked.payload, checked.manifest.signatures, paths, release)


def test_the_signed_bytes_of_a_manifest_are_its_encoding_before_signing() -> None:
    manifest = Manifest(PREFIX, {"a.py": FileEntry(A, 3)}, NOW, 5, who={"user": "ci"})
    signed = replace(manifest, signatures=(CI.sign_now(manifest.encode()),)).encode()
    assert payload_of(orjson.loads(signed)) == manifest.encode()


def test_a_path_scoped_key_signs_only_its_paths() -> None:
    policy = trusting(TEAM_A, paths={TEAM_A.keyid: ["team_a/**"]})
    body, release = manifest_of({"team_a/x.py": b"x"}, TEAM_A)
    verify_manifest(policy, body, release)
    body, release = manifest_of({"team_a/x.py": b"x", "team_b/y.py": b"y"}, TEAM_A)
    with pytest.raises(Untrusted, match="'team_b/y\\.py' is not signed by a key allowed to sign it"):
        verify_manifest(policy, body, release)


def test_a_scoped_key_and_a_full_key_together_cover_a_shared_environment() -> None:
    policy = trusting(TEAM_A, CI, paths={TEAM_A.keyid: ["team_a/**"]})
    body, release = manifest_of({"team_a/x.py": b"x", "team_b/y.py": b"y"}, CI)
    verify_manifest(policy, body, release)


def test_an_unsigned_manifest_is_refused() -> None:
    body, release = manifest_of({"a.py": b"a"})
    with pytest.raises(Untrusted, match="unsigned"):
        verify_manifest(trusting(CI), body, release)


def rotation(old: KeySigner, new: KeySigner, signer: KeySigner | None = None) -> dict[str, Any]:
    statement = rotation_statement(old.keyid, new.public.pem)
    statement["signatures"] = [(signer or old).sign_now(payload_of(statement))]
    return statement


def test_a_rotation_signed_by_the_old_key_replaces_it_with_the_new_one() -> None:
    rotated = rotate(trusting(CI), [rotation(CI, DEV)])
    assert [k.keyid for k in rotated.keys] == [DEV.keyid]
    verify_pointer(rotated, signed_pointer(DEV))
    with pytest.raises(Untrusted):
        verify_pointer(rotated, signed_pointer(CI))


def test_a_rotation_keeps_the_old_keys_paths() -> None:
    rotated = rotate(trusting(TEAM_A, paths={TEAM_A.keyid: ["team_a/**"]}), [rotation(TEAM_A, DEV)])
    assert rotated.keys[0].paths == ("team_a/**",)


def test_a_rotation_chain_is_followed_in_any_order() -> None:
    third = ed_key(9)
    rotated = rotate(trusting(CI), [rotation(DEV, third), rotation(CI, DEV)])
    assert [k.keyid for k in rotated.keys] == [third.keyid]
    assert len(rotated.rotations) == 2


def test_a_rotation_not_signed_by_the_old_key_is_ignored() -> None:
    rotated = rotate(trusting(CI), [rotation(CI, DEV, signer=DEV)])
    assert [k.keyid for k in rotated.keys] == [CI.keyid]


def test_a_rotation_to_a_key_already_trusted_changes_nothing() -> None:
    policy = trusting(TEAM_A, CI, paths={TEAM_A.keyid: ["team_a/**"]})
    rotated = rotate(policy, [rotation(TEAM_A, CI)])
    assert {k.keyid: k.paths for k in rotated.keys} == {TEAM_A.keyid: ("team_a/**",), CI.keyid: ("**",)}


def test_signatures_of_unknown_keys_and_garbage_are_ignored() -> None:
    payload = b"x"
    sigs = [
        {"keyid": "0" * 64, "alg": ED25519, "sig": "AA=="},
        {"keyid": CI.keyid, "alg": ED25519, "sig": "!"},
    ]
    assert signers_of(payload, [*sigs, CI.sign_now(payload)], trusting(CI).by_id()) == {CI.keyid}


def test_parse_trust_reads_keys_paths_and_threshold() -> None:
    doc = {
        "threshold": 1,
        "keys": [{"public": CI.public.pem}, {"public": TEAM_A.public.pem, "paths": ["t/**"]}],
    }
    policy = parse_trust(doc, "trust.toml")
    assert [k.paths for k in policy.keys] == [("**",), ("t/**",)]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "at least one"),
        ({"keys": [{"public": "nope"}]}, "keys #1: not a PEM public key"),
        (
            {"keys": [{"public": CI.public.pem}], "threshold": 2},
            "threshold must be a whole number from 1 to 1",
        ),
        ({"keys": [{"public": CI.public.pem, "paths": ["a/**/b"]}]}, "is not 'DIR/\\*\\*'"),
        ({"keys": [{"public": CI.public.pem, "paths": ["a/*.py"]}]}, "is not 'DIR/\\*\\*'"),
        ({"keys": [{"public": CI.public.pem}], "thresold": 1}, "unknown key 'thresold'"),
    ],
)
def test_parse_trust_refuses_bad_files_with_one_line(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_trust(doc, "trust.toml")


def test_key_signer_sign_is_the_same_signature_as_sign_now_for_ed25519() -> None:
    assert asyncio.run(CI.sign(b"abc")) == CI.sign_now(b"abc")


def test_keys_generate_show_and_rotate(tmp_path: Any) -> None:
    runner = CliRunner()
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    made = runner.invoke(cli, ["keys", "generate", str(old)])
    assert made.exit_code == 0, made.output
    assert (old.stat().st_mode & 0o777) == 0o600
    assert "BEGIN PUBLIC KEY" in made.output
    assert runner.invoke(cli, ["keys", "generate", str(old)]).exit_code == 2
    assert runner.invoke(cli, ["keys", "generate", str(new)]).exit_code == 0
    shown = runner.invoke(cli, ["keys", "show", str(old), "--paths", "team_a/**"])
    assert 'paths = ["team_a/**"]' in shown.output
    signer = KeySigner(old.read_bytes())
    assert signer.keyid in shown.output
    statement = orjson.loads(
        runner.invoke(cli, ["keys", "rotate", "--old", str(old), "--new", str(new)]).output
    )
    rotated = rotate(TrustPolicy((signer.public,)), [statement])
    assert [k.keyid for k in rotated.keys] == [KeySigner(new.read_bytes()).keyid]
