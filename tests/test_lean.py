"""The lean S3 transport: LIST parsing, addressing, error classification, region hint, proxies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dagmirror import Mirror
from dagmirror.config import MirrorConfig
from dagmirror.devtools.proxy import S3Proxy
from dagmirror.devtools.servers import CREDENTIALS
from dagmirror.errors import ObjectVanished, SourceError
from dagmirror.source._translate import classify as _classify
from dagmirror.source.lean import UntrustedXML, parse_list
from dagmirror.source.transport import Address

from .helpers import put_all

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def page(contents: str, *, encoded: bool, truncated: bool = False, token: str = "") -> bytes:
    encoding = "<EncodingType>url</EncodingType>" if encoded else ""
    more = f"<NextContinuationToken>{token}</NextContinuationToken>" if token else ""
    return (
        f"<ListBucketResult {NS}><Name>b</Name>{encoding}<IsTruncated>{str(truncated).lower()}</IsTruncated>"
        f"{contents}{more}</ListBucketResult>"
    ).encode()


def entry(key: str, size: int = 3) -> str:
    return f"<Contents><Key>{key}</Key><ETag>&quot;abc&quot;</ETag><Size>{size}</Size></Contents>"


def test_keys_are_url_decoded_only_when_the_server_says_it_encoded_them() -> None:
    assert parse_list(page(entry("dags/a%2Bb+c.py"), encoded=True)).objects[0].key == "dags/a+b c.py"
    raw = parse_list(page(entry("dags/a+b%2F.py"), encoded=False)).objects[0]
    assert raw.key == "dags/a+b%2F.py"
    assert raw.etag == "abc"


def test_a_listing_entry_without_a_size_or_a_truncated_page_without_a_token_is_refused() -> None:
    with pytest.raises(UntrustedXML):
        parse_list(page("<Contents><Key>a.py</Key></Contents>", encoded=False))
    with pytest.raises(UntrustedXML):
        parse_list(page(entry("a.py"), encoded=False, truncated=True))
    with pytest.raises(UntrustedXML):
        parse_list(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')
    assert parse_list(page(entry("a.py"), encoded=False, truncated=True, token="t1")).next_token == "t1"


@pytest.mark.parametrize(
    ("endpoint", "virtual", "host", "root"),
    [
        ("http://127.0.0.1:9000", False, "127.0.0.1:9000", "/bkt/"),
        ("https://minio.corp:443", False, "minio.corp", "/bkt/"),
        ("http://minio.corp:80/", False, "minio.corp", "/bkt/"),
        ("http://[::1]:9000", False, "[::1]:9000", "/bkt/"),
        ("https://gw.example.com/s3", False, "gw.example.com", "/s3/bkt/"),
        ("https://s3.eu-west-1.amazonaws.com", True, "bkt.s3.eu-west-1.amazonaws.com", "/"),
    ],
)
def test_the_signed_host_is_the_host_header_sent(endpoint: str, virtual: bool, host: str, root: str) -> None:
    address = Address.of(endpoint, "bkt", virtual_host=virtual)
    assert (address.host, address.root) == (host, root)


def test_only_s3s_own_no_such_key_means_the_object_is_gone() -> None:
    assert isinstance(_classify("NoSuchKey", 404, "gone", "GET k"), ObjectVanished)
    bare = _classify("404", 404, "Not Found", "GET k")  # an ingress misroute, not S3
    assert isinstance(bare, SourceError)
    assert not isinstance(bare, ObjectVanished)


def test_aws_region_is_honoured_as_the_region_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert MirrorConfig.create("s3://bkt/dags", "/tmp/d").region == "eu-west-1"
    assert MirrorConfig.create("s3://bkt/dags", "/tmp/d", region="us-west-2").region == "us-west-2"


PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


async def test_http_proxy_and_no_proxy_are_honoured(
    moto_endpoint: str, s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looked up once per source (not per request, as trust_env would): still every request goes through
    $HTTP_PROXY, and none when $NO_PROXY names the endpoint."""
    put_all(s3, bucket, "dags/", {"a.py": b"a = 1\n", "team/b.py": b"b = 2\n"})
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    for var, value in CREDENTIALS.items():  # else the SDK's chain asks IMDS, through the proxy too
        monkeypatch.setenv(var, value)

    async def sync(dest: Path) -> int:
        # mode objects: one GET per file and no release pointer probe, as counted below
        cfg = MirrorConfig.create(
            f"s3://{bucket}/dags/", dest, endpoint_url=moto_endpoint, fsync=False, mode="objects"
        )
        async with Mirror(cfg) as mirror:
            return (await mirror.sync_once()).downloaded

    with S3Proxy(moto_endpoint) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.endpoint_url)
        assert await sync(tmp_path / "via-proxy") == 2
        counts = proxy.counts()
        assert counts.get("LIST", 0) >= 1
        assert counts.get("GET", 0) == 2
        proxy.reset()
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert await sync(tmp_path / "direct") == 2
        assert proxy.counts() == {}
