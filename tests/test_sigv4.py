"""The lean path's SigV4 signer must produce exactly what botocore's S3 signer produces."""

from __future__ import annotations

import datetime
from urllib.parse import quote

import pytest
from botocore import auth as botocore_auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from dagmirror.source.sigv4 import Credentials, Signer, canonical_query

NOW = datetime.datetime(2026, 11, 25, 12, 34, 56, tzinfo=datetime.UTC)


def botocore_headers(
    monkeypatch: pytest.MonkeyPatch, creds: Credentials, region: str, url: str, headers: dict[str, str]
) -> dict[str, str]:
    monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda: NOW)
    request = AWSRequest(method="GET", url=url, headers=headers)
    request.context["payload_signing_enabled"] = True
    boto = BotoCredentials(creds.access_key, creds.secret_key, creds.token)
    botocore_auth.S3SigV4Auth(boto, "s3", region).add_auth(request)
    return dict(request.headers.items())


CASES = [
    ("127.0.0.1:9000", "/dags/team/a.py", {}, {}),
    (
        "127.0.0.1:9000",
        "/dags/" + quote("spaces and+plus ünï~=.py", safe="/~"),
        {},
        {"If-None-Match": '"abc"'},
    ),
    ("s3.eu-west-1.amazonaws.com", "/bkt/", {"list-type": "2", "prefix": "dags/a b/ü", "delimiter": "/"}, {}),
    (
        "bkt.s3.amazonaws.com",
        "/",
        {"list-type": "2", "continuation-token": "1a+b/c==", "encoding-type": "url"},
        {},
    ),
]


@pytest.mark.parametrize(("host", "path", "query", "headers"), CASES)
@pytest.mark.parametrize("token", [None, "session/token+=="])
def test_signature_matches_botocore_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    token: str | None,
) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    ours = Signer("eu-west-1").headers(creds, "GET", host, path, query, headers, now=NOW.timestamp())
    qs = ("?" + canonical_query(query)) if query else ""
    theirs = botocore_headers(monkeypatch, creds, "eu-west-1", f"http://{host}{path}{qs}", headers)
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours["x-amz-date"] == theirs["X-Amz-Date"]


@settings(max_examples=60, deadline=None)
@given(key=st.text(min_size=1, max_size=40), prefix=st.text(max_size=20))
def test_any_key_and_prefix_sign_like_botocore(key: str, prefix: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        creds = Credentials("AKID", "secret")
        path = "/bkt/" + quote(key, safe="/~")
        query = {"list-type": "2", "prefix": prefix}
        ours = Signer("us-east-1").headers(creds, "GET", "h:1", path, query, now=NOW.timestamp())
        url = f"http://h:1{path}?{canonical_query(query)}"
        assert ours["Authorization"] == botocore_headers(mp, creds, "us-east-1", url, {})["Authorization"]


def test_credentials_never_show_their_secret() -> None:
    text = repr(Credentials("AKIDEXAMPLE", "very-secret", "tok-secret"))
    assert "very-secret" not in text
    assert "tok-secret" not in text
