"""Signed releases: trusted keys, signatures and the decisions a mirror makes before it installs a release.
Pure: bytes and records in, a verdict out (no file, no network); the deploy side signs with a `Signer`.

What is signed (docs/releases.md, "Signatures"): the canonical bytes of a document (sorted keys, no
whitespace) with its `signatures` list empty. The `format` field inside names the kind of document, so a
pointer signature can never pass for a manifest's. Keys are named by the SHA-256 hex of their DER
SubjectPublicKeyInfo; Ed25519 (local key files) and ECDSA P-256 with SHA-256 (what AWS KMS and moto sign
with) are accepted.

The decisions, each with one line on refusal (`Untrusted`):
- a pointer needs `threshold` valid signatures of distinct trusted keys, a seq not below the one DEST holds
  (equal only for the same release), and an `expires` in the future (else it is stale: a freeze);
- a manifest needs, for every path, `threshold` valid signatures of distinct trusted keys whose `paths`
  cover it (a team key for `team_a/**` vouches for nothing else);
- a rotation statement (`dagmirror.rotation/1`) signed by a trusted key replaces that key by a new one with
  the same paths; statements ride in the pointer, so a fleet learns a new key without a restart.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from dagmirror.errors import ConfigError, DagmirrorError

ED25519 = "ed25519"
P256 = "ecdsa-p256-sha256"
ROTATION_FORMAT = "dagmirror.rotation/1"
MAX_ROTATIONS = 16  # a chain longer than this in one pointer is refused (no unbounded work per poll)


class Untrusted(DagmirrorError):
    """A release (pointer, manifest or rotation) that the mirror's trust refuses: never installed."""


class Signer(Protocol):
    """Signs documents for a deploy: a local key file (KeySigner) or an AWS KMS key (source/kms.py)."""

    async def sign(self, payload: bytes) -> dict[str, str]:
        """The signature entry of `payload`: {"keyid", "alg", "sig" (base64)}."""
        ...


DEFAULT_EXPIRY = 7 * 86400.0


@dataclass(frozen=True)
class Signing:
    """How a deploy signs: every signer signs the manifest and the pointer; the pointer expires
    `expires_after` seconds after the deploy started and carries `rotations` (statements of new keys)."""

    signers: tuple[Signer, ...]
    expires_after: float = DEFAULT_EXPIRY
    rotations: tuple[Mapping[str, Any], ...] = ()

    async def sign(self, payload: bytes) -> tuple[dict[str, str], ...]:
        return tuple([await signer.sign(payload) for signer in self.signers])


def payload_of(doc: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the canonical document with an empty `signatures` list."""
    return orjson.dumps({**doc, "signatures": []}, option=orjson.OPT_SORT_KEYS)


def keyid_of(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    keyid: str
    alg: str
    pem: str
    paths: tuple[str, ...] = ("**",)  # relative path globs this key may sign: '**', 'team_a/**', 'a.py'

    def covers(self, path: str) -> bool:
        return any(_glob(pattern, path) for pattern in self.paths)

    def verify(self, payload: bytes, sig: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519

        key = _loaded(self.pem)
        try:
            if isinstance(key, ed25519.Ed25519PublicKey) and self.alg == ED25519:
                key.verify(sig, payload)
            elif isinstance(key, ec.EllipticCurvePublicKey) and self.alg == P256:
                key.verify(sig, payload, ec.ECDSA(hashes.SHA256()))
            else:
                return False
        except InvalidSignature:
            return False
        return True


@functools.cache
def _loaded(pem: str) -> Any:
    """A parsed public key, once per PEM: verification is on every new pointer and manifest."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return load_pem_public_key(pem.encode())


def _glob(pattern: str, path: str) -> bool:
    if pattern == "**":
        return True
    if pattern.endswith("/**"):
        return path.startswith(pattern[:-2])
    return path == pattern


def public_key(pem: str | bytes, paths: Sequence[str] = ("**",)) -> PublicKey:
    """A trusted key from its PEM (SubjectPublicKeyInfo); ConfigError when it is not Ed25519 or P-256."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

    text = pem.decode() if isinstance(pem, bytes) else pem
    try:
        key = load_pem_public_key(text.encode())
    except (ValueError, TypeError):
        raise ConfigError("not a PEM public key (-----BEGIN PUBLIC KEY----- ...)") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        alg = ED25519
    elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        alg = P256
    else:
        raise ConfigError(f"unsupported key type {type(key).__name__}: use Ed25519 or ECDSA P-256")
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    canonical = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    for pattern in paths:
        stem = "" if pattern == "**" else pattern.removesuffix("/**")
        if not pattern or pattern.startswith("/") or any(c in stem for c in "*?["):
            raise ConfigError(f"paths: {pattern!r} is not 'DIR/**', '**' or a relative file path")
    return PublicKey(keyid_of(der), alg, canonical, tuple(paths))


@dataclass(frozen=True)
class TrustPolicy:
    """What a mirror trusts: its keys, how many must sign, and the rotations it has learned since."""

    keys: tuple[PublicKey, ...]
    threshold: int = 1
    rotations: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    def by_id(self) -> dict[str, PublicKey]:
        return {k.keyid: k for k in self.keys}


def parse_trust(doc: Mapping[str, Any], where: str) -> TrustPolicy:
    """The trust file's table: `threshold` and `[[keys]]` with `public` (PEM) and optional `paths`."""
    unknown = sorted(set(doc) - {"threshold", "keys"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (expected threshold, keys)")
    entries = doc.get("keys")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: needs at least one [[keys]] entry with a public key")
    keys = []
    for n, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("public"), str):
            raise ConfigError(f'{where}: keys #{n} needs public = "-----BEGIN PUBLIC KEY-----..."')
        paths = entry.get("paths", ["**"])
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths) or not paths:
            raise ConfigError(f'{where}: keys #{n}: paths must be a list of globs, e.g. ["team_a/**"]')
        try:
            keys.append(public_key(entry["public"], paths))
        except ConfigError as exc:
            raise ConfigError(f"{where}: keys #{n}: {exc}") from None
    threshold = doc.get("threshold", 1)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= len(keys):
        raise ConfigError(
            f"{where}: threshold must be a whole number from 1 to {len(keys)}, got {threshold!r}"
        )
    return TrustPolicy(tuple(keys), threshold)


def signers_of(
    payload: bytes, signatures: Iterable[Mapping[str, Any]], keys: Mapping[str, PublicKey]
) -> set[str]:
    """The trusted keys with a valid signature of `payload` among `signatures` (others are ignored)."""
    valid: set[str] = set()
    for entry in signatures:
        key = keys.get(str(entry.get("keyid", "")))
        if key is None or key.keyid in valid or entry.get("alg") != key.alg:
            continue
        try:
            sig = base64.b64decode(str(entry.get("sig", "")), validate=True)
        except (binascii.Error, ValueError):
            continue
        if key.verify(payload, sig):
            valid.add(key.keyid)
    return valid


def rotate(policy: TrustPolicy, statements: Sequence[Mapping[str, Any]]) -> TrustPolicy:
    """`policy` after every rotation statement a trusted key signed (chains too): the old key is replaced by
    the new one, with the old key's paths. Statements no trusted key signed are ignored, and so are those
    naming a key already trusted (a team key could otherwise narrow another key's paths)."""
    keys, learned = dict(policy.by_id()), list(policy.rotations)
    pending = [s for s in statements if s not in learned]
    if len(pending) > MAX_ROTATIONS:
        raise Untrusted(f"the pointer carries {len(pending)} new key rotations (at most {MAX_ROTATIONS})")
    progress = True
    while pending and progress:
        progress = False
        for statement in list(pending):
            old = keys.get(str(statement.get("old", "")))
            if old is None or statement.get("format") != ROTATION_FORMAT:
                continue
            if old.keyid not in signers_of(payload_of(statement), _sigs(statement), {old.keyid: old}):
                continue
            try:
                new = public_key(str(statement.get("new", "")), old.paths)
            except ConfigError as exc:
                raise Untrusted(f"key rotation signed by {old.keyid[:12]} names a bad key: {exc}") from None
            if new.keyid in keys:
                continue
            del keys[old.keyid]
            keys[new.keyid] = new
            learned.append(statement)
            pending.remove(statement)
            progress = True
    return TrustPolicy(tuple(keys.values()), policy.threshold, tuple(learned))


def rotation_statement(old_keyid: str, new_pem: str) -> dict[str, Any]:
    """The unsigned statement 'old is replaced by new' (sign it with the old key)."""
    return {"format": ROTATION_FORMAT, "old": old_keyid, "new": new_pem, "signatures": []}


def check_pointer(
    policy: TrustPolicy,
    payload: bytes,
    signatures: Sequence[Mapping[str, Any]],
    *,
    seq: int,
    release: str,
    expires: float | None,
    installed: tuple[int, str] | None,
    now: float,
) -> None:
    """Refuse a pointer that is not signed by enough trusted keys, goes back, or has expired."""
    valid = signers_of(payload, signatures, policy.by_id())
    if len(valid) < policy.threshold:
        raise Untrusted(_short(f"pointer seq {seq} (release {release[:12]})", signatures, policy, len(valid)))
    if installed is not None:
        floor, current = installed
        if seq < floor or (seq == floor and release != current):
            raise Untrusted(
                f"pointer seq {seq} (release {release[:12]}) is not newer than seq {floor} (release "
                f"{current[:12]}) that DEST holds: a rollback or replay of an older signed pointer"
            )
    stale(expires, seq, now)


def stale(expires: float | None, seq: int, now: float) -> None:
    """A signed pointer past its expiry is stale: a freeze (an old pointer served forever) looks like this."""
    if expires is None:
        raise Untrusted(f"pointer seq {seq} has no expiry: signed pointers must carry one")
    if now > expires:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        raise Untrusted(
            f"pointer seq {seq} expired at {when}: stale (nobody re-signed it, or the bucket is frozen); "
            "re-sign with a deploy or rollback"
        )


def check_manifest(
    policy: TrustPolicy,
    payload: bytes,
    signatures: Sequence[Mapping[str, Any]],
    paths: Iterable[str],
    release: str,
) -> None:
    """Refuse a manifest any of whose paths lacks `threshold` valid signatures of keys allowed to sign it."""
    keys = policy.by_id()
    valid = [keys[k] for k in signers_of(payload, signatures, keys)]
    if len(valid) < policy.threshold:
        raise Untrusted(_short(f"manifest of release {release[:12]}", signatures, policy, len(valid)))
    for path in sorted(paths):
        if sum(key.covers(path) for key in valid) < policy.threshold:
            raise Untrusted(
                f"manifest of release {release[:12]}: {path!r} is not signed by a key allowed to sign it"
            )


def _short(what: str, signatures: Sequence[Mapping[str, Any]], policy: TrustPolicy, valid: int) -> str:
    if not signatures:
        return f"{what} is unsigned and this mirror trusts only signed releases"
    return (
        f"{what} has {valid} valid signature(s) of a trusted key, needs {policy.threshold} "
        f"(signed by {', '.join(str(s.get('keyid', '?'))[:12] for s in signatures)})"
    )


def _sigs(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    sigs = doc.get("signatures")
    return [s for s in sigs if isinstance(s, dict)] if isinstance(sigs, list) else []


class KeySigner:
    """A local private key (PEM, PKCS#8): Ed25519 from `dagmirror keys generate`, or ECDSA P-256."""

    def __init__(self, pem: bytes) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise ConfigError(
                "not an unencrypted PEM private key (-----BEGIN PRIVATE KEY----- ...)"
            ) from None
        if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)):
            raise ConfigError(f"unsupported key type {type(key).__name__}: use Ed25519 or ECDSA P-256")
        self._key = key
        self.public = public_key(public_pem(key))

    @property
    def keyid(self) -> str:
        return self.public.keyid

    def sign_now(self, payload: bytes) -> dict[str, str]:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            sig = self._key.sign(payload, ec.ECDSA(hashes.SHA256()))
        else:
            sig = self._key.sign(payload)
        return signature(self.keyid, self.public.alg, sig)

    async def sign(self, payload: bytes) -> dict[str, str]:
        return self.sign_now(payload)


def signature(keyid: str, alg: str, sig: bytes) -> dict[str, str]:
    return {"keyid": keyid, "alg": alg, "sig": base64.b64encode(sig).decode()}


def public_pem(key: Any) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return str(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode())


def generate_ed25519() -> bytes:
    """A new Ed25519 private key, PEM (PKCS#8, unencrypted: protect the file, or use KMS)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
