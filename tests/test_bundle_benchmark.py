"""The bundle benchmark's code path at a tiny size (benchmarks/bundle.py; the figures come from a full run):
DagmirrorBundle only (S3DagBundle needs the amazon provider's venv), on moto server."""

from __future__ import annotations

import pytest

from benchmarks import bundle

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(900)]


def test_bundle_benchmark_counts_three_gets_cold_two_pinned_and_one_per_noop_refresh() -> None:
    (entry,) = bundle.main(
        ["--files", "5", "--server", "moto", "--runs", "1", "--tools", "dagmirror,dagmirror-pinned"]
    )
    unpinned, pinned = entry["results"]
    assert (unpinned["tool"], pinned["tool"]) == ("dagmirror", "dagmirror-pinned")
    assert unpinned["files"] == pinned["files"] == 5
    assert unpinned["initialize_requests"] == 3  # pointer, manifest, archive
    assert unpinned["refresh_requests"] == 1  # the pointer, answered 304
    assert pinned["initialize_requests"] == 2  # manifest, archive: a pinned worker never reads the pointer
    assert entry["ratios"] == {}  # no S3DagBundle in this run
