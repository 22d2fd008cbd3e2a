"""The development tools other tests rely on: if these lie, the integration tests prove nothing."""

from __future__ import annotations

import ast
from typing import Any

import pytest

from dagmirror.devtools.corpus import dag_ids, sample_dags, synthetic_corpus
from dagmirror.devtools.proxy import Fault, S3Proxy, classify


def test_classify_tells_list_from_get() -> None:
    assert classify("GET", "/bkt", "list-type=2&prefix=a%2F") == "LIST"
    assert classify("GET", "/bkt/", "") == "LIST"
    assert classify("GET", "/bkt/dags/a.py", "") == "GET"
    assert classify("HEAD", "/bkt/dags/a.py", "") == "HEAD"
    assert classify("PUT", "/bkt/dags/a.py", "") == "PUT"
    assert classify("GET", "/", "") == "OTHER"


def test_sample_dags_are_valid_python_with_unique_dag_ids() -> None:
    files = sample_dags()
    assert 30 <= len(files) <= 60
    for rel, body in files.items():
        if rel.endswith(".py"):
            ast.parse(body, rel)
    ids = dag_ids(files)
    assert len(ids) == len(set(ids)) >= 30


def test_synthetic_corpus_is_deterministic_and_realistically_sized() -> None:
    a, b = synthetic_corpus(500, seed=3), synthetic_corpus(500, seed=3)
    assert a == b
    assert synthetic_corpus(500, seed=4) != a
    sizes = sorted(map(len, a.values()))
    assert sizes[0] >= 1_000
    assert sizes[-1] <= 50_000
    assert 4_000 < sizes[len(sizes) // 2] < 16_000


def test_proxy_counts_requests_and_injects_faults(s3: Any, bucket: str, moto_endpoint: str) -> None:
    from dagmirror.devtools.servers import s3_client

    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    with S3Proxy(moto_endpoint) as proxy:
        client = s3_client(proxy.endpoint_url)
        assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
        client.list_objects_v2(Bucket=bucket)
        proxy.set_fault(lambda r: Fault(status=500, code="InternalError") if r.op == "GET" else None)
        with pytest.raises(client.exceptions.ClientError, match="InternalError"):
            client.get_object(Bucket=bucket, Key="k")
        counts = proxy.counts()
    assert counts["GET 200"] == 1
    assert counts["LIST 200"] == 1
    assert counts["GET 500"] >= 1
