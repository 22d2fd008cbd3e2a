"""AWS Signature Version 4 for the lean S3 path: GET and LIST requests with an empty body.

Why not the SDK's signer: botocore's `S3SigV4Auth.add_auth` builds an `AWSRequest`, re-parses the URL and
walks email.message headers on every call, about 0.4 ms of CPU per request; on a cold pass of thousands of
small files that is a large share of the client's time (docs/benchmarks.md). This module signs the same way
(tests/test_sigv4.py checks it byte for byte against botocore) with the signing key cached per day.
Pure: no I/O, no clock of its own (the caller passes the time), no SDK import.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str = ""
    token: str | None = None

    def __repr__(self) -> str:  # never print a secret, even in a traceback
        token = "***" if self.token else None
        return f"Credentials(access_key={self.access_key[:4]}..., secret_key=***, token={token})"


class Signer:
    """Signs S3 requests for one region; reuses the derived signing key for the whole UTC day."""

    def __init__(self, region: str, service: str = "s3") -> None:
        self.region = region
        self.service = service
        self._key_for: tuple[str, str] | None = None
        self._key = b""

    def headers(
        self,
        credentials: Credentials,
        method: str,
        host: str,
        path: str,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        now: float | None = None,
    ) -> dict[str, str]:
        """The request headers to send, Authorization included. `path` is already URI-encoded (S3 signs the
        path as sent, without encoding it twice); `query` values are raw and encoded here."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
        day = stamp[:8]
        out = dict(headers or {})
        out["x-amz-date"] = stamp
        out["x-amz-content-sha256"] = EMPTY_SHA256
        if credentials.token:
            out["x-amz-security-token"] = credentials.token
        canonical = {k.lower(): " ".join(str(v).split()) for k, v in out.items()}
        canonical["host"] = host
        names = sorted(canonical)
        signed_headers = ";".join(names)
        request = "\n".join(
            (
                method,
                path,
                canonical_query(query or {}),
                "".join(f"{n}:{canonical[n]}\n" for n in names),
                signed_headers,
                EMPTY_SHA256,
            )
        )
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"{_ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(credentials.secret_key, day), to_sign.encode(), hashlib.sha256)
        out["Authorization"] = (
            f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature.hexdigest()}"
        )
        return out

    def _signing_key(self, secret: str, day: str) -> bytes:
        if self._key_for != (secret, day):
            key = _hmac(f"AWS4{secret}".encode(), day)
            for part in (self.region, self.service, "aws4_request"):
                key = _hmac(key, part)
            self._key_for, self._key = (secret, day), key
        return self._key


def canonical_query(query: dict[str, str]) -> str:
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in query.items())
    return "&".join(f"{k}={v}" for k, v in pairs)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()
