"""Body verification: every check that can fail does, and nothing unverifiable is claimed."""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest

from dagmirror.errors import IntegrityError
from dagmirror.models import FetchedObject
from dagmirror.verify import verify, xxh3_hex

BODY = b"from airflow import DAG\n" * 10
MD5 = hashlib.md5(BODY).hexdigest()


def fetched(body: bytes = BODY, **kw: object) -> FetchedObject:
    fields: dict[str, object] = {"key": "k", "body": body, "etag": MD5, "content_length": len(BODY)}
    fields.update(kw)
    return FetchedObject(**fields)  # type: ignore[arg-type]


def test_good_body_returns_its_xxh3() -> None:
    assert verify(fetched()) == xxh3_hex(BODY)


def test_truncated_body_fails_on_length() -> None:
    with pytest.raises(IntegrityError, match="Content-Length"):
        verify(fetched(BODY[:-1]))


def test_same_length_corruption_fails_on_md5_etag() -> None:
    corrupt = b"X" + BODY[1:]
    with pytest.raises(IntegrityError, match="MD5"):
        verify(fetched(corrupt))


def test_multipart_etag_is_not_treated_as_md5() -> None:
    assert verify(fetched(etag="0123456789abcdef0123456789abcdef-3")) == xxh3_hex(BODY)


def test_kms_encrypted_objects_skip_the_md5_check() -> None:
    assert verify(fetched(etag="f" * 32, kms_or_customer_key=True)) == xxh3_hex(BODY)


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        ("CRC32", zlib.crc32(BODY).to_bytes(4, "big")),
        ("SHA256", hashlib.sha256(BODY).digest()),
        ("SHA1", hashlib.sha1(BODY).digest()),
    ],
)
def test_checksum_headers_are_verified(algorithm: str, digest: bytes) -> None:
    good = base64.b64encode(digest).decode()
    assert verify(fetched(checksums=((algorithm, good),)))
    bad = base64.b64encode(bytes(len(digest))).decode()
    with pytest.raises(IntegrityError, match=algorithm):
        verify(fetched(etag="x-1", checksums=((algorithm, bad),)))


def test_composite_and_unknown_checksums_are_skipped() -> None:
    assert verify(fetched(checksums=(("SHA256", "AAAA-2"), ("CRC32C", "AAAAAA=="))))


def test_xxh3_metadata_mismatch_is_refused() -> None:
    assert verify(fetched(meta_xxh3=xxh3_hex(BODY).upper()))
    with pytest.raises(IntegrityError, match="xxh3"):
        verify(fetched(etag="x-1", meta_xxh3="0" * 32))
