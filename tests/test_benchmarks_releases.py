"""The release scenario of the benchmark suite: its flags, its arithmetic and tables, and one small run of it
against the session's moto server (a real deploy, a real cold release mirror, a counted no-op poll)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import benchmarks.__main__ as bench_main
from benchmarks import deploy_latency, releases


def test_requests_per_poll_counts_only_op_status_keys() -> None:
    # the proxy also keeps totals per operation ("GET"); only "OP STATUS" keys are requests on the wire
    assert releases.requests_per_poll({"GET 304": 10, "GET": 10}, 10) == 1.0
    assert releases.requests_per_poll({"GET 304": 10, "LIST 200": 5}, 10) == 1.5
    assert releases.requests_per_poll({}, 0) != releases.requests_per_poll({}, 0)  # nan: no polls


def test_size_lists() -> None:
    assert bench_main.size_list("1000,10000, 50000") == [1000, 10000, 50000]
    assert bench_main.size_list("") == []


def test_releases_only_defaults_and_explicit_flags() -> None:
    args = bench_main.parse(["--releases-only"])
    assert (args.servers, args.releases, args.release_cold, args.scenarios) == (
        "seaweedfs",
        "1000,10000,50000",
        "10000",
        "",
    )
    assert (args.propagation, args.idle_files, args.release_runs) == (0, 0, 3)
    args = bench_main.parse(
        ["--releases-only", "--servers", "moto", "--releases", "500", "--release-runs", "5"]
    )
    assert (args.servers, args.releases, args.release_runs) == ("moto", "500", 5)
    assert bench_main.parse([]).releases == ""  # the full suite keeps its old scenarios only
    quick = bench_main.parse(["--quick"])
    assert (quick.releases, quick.release_cold, quick.release_latency) == ("1000", "1000", 5)


def test_unknown_release_tool_is_refused_before_any_server_starts() -> None:
    with pytest.raises(SystemExit, match="unknown tools"):
        bench_main.main(["--releases-only", "--release-tools", "dagmirror,nope"])


def test_latency_summary_is_nearest_rank() -> None:
    samples = [{"from_start": float(i), "from_exit": i / 10, "deploy": 1.0} for i in range(1, 51)]
    summary = deploy_latency.summarise(samples)
    assert summary["from_start"] == {"p50": 25.0, "p99": 50.0, "max": 50.0}
    assert summary["deploy"] == {"p50": 1.0, "p99": 1.0, "max": 1.0}


def test_release_tables() -> None:
    poll = {
        "server": "seaweedfs",
        "files": 10000,
        "polls": 10,
        "requests": {"GET 304": 10},
        "requests_per_poll": 1.0,
        "median_pass_s": 0.0071,
        "deploy_s": 41.2,
    }
    figures = {"p50": 1.25, "p99": 2.0, "max": 2.5}
    latency = {"server": "seaweedfs", "mode": "releases", "interval_s": 1.0, "rounds": 20}
    latency |= {"from_start": figures, "from_exit": figures, "deploy": figures}
    text = releases.tables([poll], [latency])
    assert "| seaweedfs | 10,000 | 1 | GET 304 10 | 0.0071 | 41.2 |" in text
    assert "| seaweedfs | releases | 1 | 20 | 1.250 / 2.000 / 2.500 | 1.250 / 2.000 / 2.500 | 1.250 |" in text
    assert releases.tables([], []) == ""


def test_release_scenario_smoke(moto_endpoint: str, s3: Any, tmp_path: Path) -> None:
    """Publish 37 files with `dagmirror deploy`, mirror them cold in release and objects mode, then poll."""
    bench = releases.ReleaseBench(
        "moto", moto_endpoint, s3, 37, ["dagmirror", "dagmirror-objects", "floor-get"], 1, tmp_path,
        log=lambda *a, **k: None,
    )  # fmt: skip
    bench.setup()
    assert bench.deploy[0].code == 0
    bench.cold()
    rows = {r.tool: r.as_dict() for r in bench.results}
    assert set(rows) == {"dagmirror", "dagmirror-objects", "floor-get"}
    assert {r["scenario"] for r in rows.values()} == {"release-cold"}
    assert rows["dagmirror"]["correct"]
    assert rows["dagmirror-objects"]["correct"]
    # an archive cold start: pointer, manifest, archive
    assert rows["dagmirror"]["requests"] == {"GET 200": 3}
    assert rows["dagmirror-objects"]["requests"]["GET 200"] == 37
    poll = bench.poll()
    assert poll["requests"] == {"GET 304": 10}
    assert poll["requests_per_poll"] == 1.0
