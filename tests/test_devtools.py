"""The development tools other tests rely on: if these lie, the integration tests prove nothing."""

from __future__ import annotations

import ast
import contextlib
import os
import sys
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import benchmarks.__main__ as bench_main
from dagmirror.devtools.corpus import create_bucket, dag_ids, sample_dags, synthetic_corpus
from dagmirror.devtools.proxy import Fault, S3Proxy, classify
from dagmirror.devtools.servers import LOCALSTACK_PINS, S3Server, localstack_server, s3_client


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


def test_localstack_without_python_313_fails_with_a_clear_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGMIRROR_PYTHON313", str(tmp_path / "no-python3.13"))
    monkeypatch.setenv("DAGMIRROR_LOCALSTACK_VENV", str(tmp_path / "venv"))
    with (
        pytest.raises(RuntimeError, match=r"LocalStack needs Python >= 3\.13, not found: .*no-python3\.13"),
        localstack_server(tmp_path / "work"),
    ):
        pytest.fail("LocalStack started without Python 3.13")
    assert not (tmp_path / "venv").exists()


def test_localstack_refuses_an_older_python_before_installing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sys.version_info >= (3, 13):
        pytest.skip("needs an interpreter older than 3.13 to stand in for the wrong one")
    monkeypatch.setenv("DAGMIRROR_PYTHON313", sys.executable)
    monkeypatch.setenv("DAGMIRROR_LOCALSTACK_VENV", str(tmp_path / "venv"))
    with pytest.raises(RuntimeError, match=r"is not Python >= 3\.13"), localstack_server(tmp_path / "work"):
        pytest.fail("LocalStack started on an older Python")
    assert not (tmp_path / "venv").exists()


def test_localstack_that_exits_at_start_fails_with_its_log_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\necho 'cbor2._decoder is gone'\nexit 3\n")
    (venv / "bin" / "python").chmod(0o755)
    (venv / ".dagmirror-installed").write_text("\n".join(LOCALSTACK_PINS))  # installed: no pip run
    monkeypatch.setenv("DAGMIRROR_LOCALSTACK_VENV", str(venv))
    with (
        pytest.raises(RuntimeError, match=r"did not start: exited with 3; log .*\n.*cbor2\._decoder is gone"),
        localstack_server(tmp_path / "work"),
    ):
        pytest.fail("a LocalStack that exited was taken as started")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(
    os.environ.get("DAGMIRROR_TEST_LOCALSTACK") != "1",
    reason="installs LocalStack into .venv-localstack/ (1-2 min once): set DAGMIRROR_TEST_LOCALSTACK=1",
)
def test_localstack_serves_s3_on_loopback_and_stops_by_pid(tmp_path: Path) -> None:
    with localstack_server(tmp_path / "localstack") as server:
        assert server.endpoint_url.startswith("http://127.0.0.1:")
        client = s3_client(server.endpoint_url)
        create_bucket(client, "dags")
        client.put_object(Bucket="dags", Key="dags/a.py", Body=b"a = 1\n")
        listing = client.list_objects_v2(Bucket="dags", Prefix="dags/")
        assert [(o["Key"], o["Size"]) for o in listing["Contents"]] == [("dags/a.py", 6)]
    with pytest.raises(ProcessLookupError):  # nothing is left in the process group we started
        os.killpg(server.pid, 0)


def fake_servers(
    monkeypatch: pytest.MonkeyPatch, *, cannot_start: Collection[str], fails_inside: Collection[str] = ()
) -> list[str]:
    """Replaces the benchmark suite's servers and benchmark body; returns the servers benchmarked."""
    benchmarked: list[str] = []

    @contextlib.contextmanager
    def server(name: str, workdir: Path) -> Iterator[S3Server]:
        if name in cannot_start:
            raise RuntimeError(f"{name} cannot start here")
        yield S3Server(name, "http://127.0.0.1:9", 0)

    def bench_server(s: S3Server, *_: Any) -> list[dict[str, Any]]:
        if s.name in fails_inside:
            raise RuntimeError(f"a benchmark on {s.name} failed")
        benchmarked.append(s.name)
        return []

    monkeypatch.setattr(bench_main, "server", server)
    monkeypatch.setattr(bench_main, "bench_server", bench_server)
    return benchmarked


def test_benchmarks_skip_localstack_when_it_cannot_start_and_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    benchmarked = fake_servers(monkeypatch, cannot_start={"localstack"})
    out = tmp_path / "results.json"
    args = ["--servers", "localstack,moto", "--tools", "dagmirror", "--json", str(out)]
    assert bench_main.main(args) == 0
    assert benchmarked == ["moto"]
    assert "skipping server localstack: localstack cannot start here" in capsys.readouterr().out
    assert orjson.loads(out.read_bytes())["meta"]["skipped"] == {
        "server localstack": "localstack cannot start here"
    }


def test_benchmarks_stop_when_a_required_server_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_servers(monkeypatch, cannot_start={"seaweedfs"})
    with pytest.raises(RuntimeError, match="seaweedfs cannot start here"):
        bench_main.main(["--servers", "seaweedfs,moto", "--tools", "dagmirror"])


def test_benchmarks_do_not_take_a_failing_benchmark_for_a_server_that_cannot_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_servers(monkeypatch, cannot_start=(), fails_inside={"localstack"})
    with pytest.raises(RuntimeError, match="a benchmark on localstack failed"):
        bench_main.main(["--servers", "localstack,moto", "--tools", "dagmirror"])
