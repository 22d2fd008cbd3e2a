"""AWS KMS as a release signer (docs/security.md, "Signed releases"): the private key never leaves KMS, and
IAM's `kms:Sign` on the key says who may sign. One of the modules that import the AWS SDK.

An asymmetric key of spec ECC_NIST_P256 signs with ECDSA_SHA_256 over the raw payload (KMS hashes it); the
signature is DER, exactly what trust.py verifies with the key's public half. (KMS's Ed25519 key spec would
fit too, but moto, which the tests run against, signs only RSA and the NIST curves.)"""

from __future__ import annotations

from typing import Any

from dagmirror.errors import ConfigError, SourceError
from dagmirror.source.credentials import sdk_session
from dagmirror.source.sdk import sdk_error
from dagmirror.trust import P256, keyid_of, signature

ALGORITHM = "ECDSA_SHA_256"


class KmsSigner:
    """Signs with one KMS key. The endpoint comes from the AWS chain ($AWS_ENDPOINT_URL_KMS, ...)."""

    def __init__(
        self, key_id: str, *, region: str | None, profile: str | None, endpoint_url: str | None = None
    ) -> None:
        self.key_id, self._region, self._profile, self._endpoint = key_id, region, profile, endpoint_url
        self._keyid: str | None = None  # the SHA-256 of the key's public half, asked of KMS once

    async def sign(self, payload: bytes) -> dict[str, str]:
        async with self._client() as kms:
            if self._keyid is None:
                public = await self._call(kms.get_public_key(KeyId=self.key_id))
                spec = public.get("KeySpec") or public.get("CustomerMasterKeySpec")
                if spec != "ECC_NIST_P256":
                    raise ConfigError(f"KMS key {self.key_id} is {spec}: signing needs ECC_NIST_P256")
                self._keyid = keyid_of(public["PublicKey"])
            signed = await self._call(
                kms.sign(KeyId=self.key_id, Message=payload, MessageType="RAW", SigningAlgorithm=ALGORITHM)
            )
        return signature(self._keyid, P256, signed["Signature"])

    async def public_pem(self) -> str:
        """The key's public half as PEM, for a trust file."""
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key

        async with self._client() as kms:
            der = (await self._call(kms.get_public_key(KeyId=self.key_id)))["PublicKey"]
        return load_der_public_key(der).public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()

    def _client(self) -> Any:
        session = sdk_session(self._profile, self._region)
        return session.client("kms", endpoint_url=self._endpoint)

    async def _call(self, request: Any) -> Any:
        try:
            return await request
        except Exception as exc:
            mapped = sdk_error(exc, f"KMS key {self.key_id}")
            if isinstance(mapped, SourceError):
                raise mapped from None
            raise
