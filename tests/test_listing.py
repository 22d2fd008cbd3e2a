"""The flat listing split in two (engine/listing.py): at most ceil(N / page) + 2 LISTs on every layout, the
same tree and the same rejections as the fan-out, a collision across the split still resolved the way the
fan-out resolves it; over the in-memory source (pages of a few keys) and against moto through a proxy that
shrinks pages, so S3's own StartAfter and continuation semantics are what is tested."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from dagmirror import Mirror, MirrorConfig
from dagmirror.devtools.proxy import S3Proxy
from dagmirror.models import ListPage
from dagmirror.plan import shared_folder, split_key, straddling
from dagmirror.retry import RetryPolicy
from dagmirror.source.memory import MemorySource

from .helpers import dagmirror, no_sleep, put_all, read_tree

PAGE = 10


def layouts() -> dict[str, dict[str, bytes]]:
    """The layouts the request bound must hold on: flat, one folder per pipeline, deep, huge folders."""
    body = b"x = 1\n"
    return {
        "flat": {f"dags/f{i:04d}.py": body for i in range(95)},
        "folder per pipeline": {
            f"dags/pipeline_{p:04d}/{name}": body
            for p in range(40)
            for name in ("dag.py", "sql/query.sql", "config.yaml")
        },
        "deep": {f"dags/a/b/c/d{i % 4}/e{i % 3}/f{i}.py": body for i in range(70)},
        "few huge folders": {f"dags/big{i % 3}/f{i:04d}.py": body for i in range(90)},
        "one huge folder": {f"dags/only/f{i:04d}.py": body for i in range(90)},
        "under one page": {f"dags/t{i}/f.py": body for i in range(PAGE)},
        "empty": {},
    }


def config(dest: Path, **kw: Any) -> MirrorConfig:
    return MirrorConfig.create(
        "s3://bkt/dags", dest, mode="objects", fsync=False, retry=RetryPolicy(attempts=2), **kw
    )


async def sync(source: MemorySource, dest: Path, **kw: Any) -> Any:
    async with Mirror(config(dest, **kw), source=source, sleep=no_sleep) as mirror:
        return await mirror.sync_once()


def bound(n: int, page: int = PAGE) -> int:
    return max(1, math.ceil(n / page)) + 2


@pytest.mark.parametrize("layout", list(layouts()))
async def test_a_flat_listing_costs_at_most_two_lists_more_than_the_pages_it_needs(
    tmp_path: Path, layout: str
) -> None:
    files = layouts()[layout]
    source = MemorySource(files, page_size=PAGE)
    cold = await sync(source, tmp_path / "d")
    assert read_tree(tmp_path / "d") == {k.removeprefix("dags/"): v for k, v in files.items()}
    source.counts.clear()
    noop = await sync(source, tmp_path / "d")
    assert (noop.listed, noop.downloaded) == (len(files), 0)
    assert source.counts["LIST"] <= bound(len(files)), source.counts
    assert cold.listed == len(files)


async def test_the_fan_out_pays_one_list_per_folder_where_the_flat_listing_does_not(tmp_path: Path) -> None:
    files = layouts()["folder per pipeline"]  # 120 keys in 40 folders
    source = MemorySource(files, page_size=PAGE)
    await sync(source, tmp_path / "fan", fanout_depth=1)
    fan = source.counts["LIST"]
    source.counts.clear()
    await sync(source, tmp_path / "flat")
    assert (fan, source.counts["LIST"]) == (4 + 40, bound(len(files)))  # 4 root pages + 1 per folder


async def test_a_collision_across_the_split_is_resolved_as_the_fan_out_resolves_it(tmp_path: Path) -> None:
    """'m' (a file) and 'm/x' (under a folder of the same name) land in ranges A and B of the split (the
    delimiter page after page 1 shows b, m, m-1, m/: the split key is 'm'); the folder wins, as always."""
    files = {f"dags/a{i}": b"a" for i in range(4)}
    files |= {"dags/b": b"b", "dags/m": b"file", "dags/m-1": b"m-1", "dags/m/x": b"dir"}
    results = []
    for depth in (0, 1):
        source = MemorySource(files, page_size=4)
        report = await sync(source, tmp_path / f"d{depth}", fanout_depth=depth)
        results.append((read_tree(tmp_path / f"d{depth}"), sorted(r.key for r in report.rejections)))
        if depth == 0:
            assert source.counts["LIST"] == 4  # page 1, the delimiter page, range A, range B
    assert results[0] == results[1]
    assert results[0][1] == ["dags/m"]


def test_shared_folder_is_the_deepest_folder_holding_the_first_and_the_last_key() -> None:
    assert shared_folder(["p/a/b/1.py", "p/a/b/9.py"], "p/") == "p/a/b/"
    assert shared_folder(["p/a/b/1.py", "p/a/c/1.py"], "p/") == "p/a/"
    assert shared_folder(["p/a1.py", "p/a2.py"], "p/") == "p/"  # 'p/a' is a shared start, not a folder
    assert shared_folder(["p/x/1", "p/y/1"], "p/") == "p/"
    assert shared_folder([], "p/") == "p/"


def test_split_key_balances_by_entries_and_never_goes_back_before_the_first_page() -> None:
    assert split_key(["p/b/", "p/c/", "p/d/", "p/e/"], after="p/a/9", truncated=False) == "p/c/"
    assert split_key(["p/b/", "p/c/", "p/d/"], after="p/a/9", truncated=True) == "p/d/"
    # p/a/ holds the first page's last key: it sorts before it and must not split (range B would repeat it)
    assert split_key(["p/a/", "p/b/", "p/c/"], after="p/a/9", truncated=False) == "p/b/"
    assert split_key(["p/a/", "p/b/"], after="p/a/9", truncated=False) is None
    assert split_key([], after="p/a", truncated=False) is None


@pytest.mark.parametrize("layout", ["folder per pipeline", "few huge folders", "flat"])
def test_against_moto_the_listing_holds_its_bound_with_s3s_own_start_after(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path, layout: str
) -> None:
    files = layouts()[layout]
    put_all(s3, bucket, "", files)
    with S3Proxy(moto_endpoint, list_page_size=PAGE) as proxy:
        args = ("sync", f"s3://{bucket}/dags/", tmp_path / "d", "--mode", "objects", "--json")
        cold = dagmirror(*args, "--endpoint-url", proxy.endpoint_url, endpoint=moto_endpoint)
        assert cold.code == 0, cold.stderr
        noop = dagmirror(*args, "--endpoint-url", proxy.endpoint_url, endpoint=moto_endpoint)
    assert read_tree(tmp_path / "d") == {k.removeprefix("dags/"): v for k, v in files.items()}
    assert noop.report["downloaded"] == 0
    assert noop.report["requests"]["LIST"] <= bound(len(files)), noop.report["requests"]


async def test_an_empty_first_page_that_says_more_follow_is_listed_on_not_taken_as_the_end(
    tmp_path: Path,
) -> None:
    """A server may answer an empty, truncated page: the listing goes on with its token (no split), so a
    bucket is never taken for emptier than it is (which would feed the delete phase)."""
    files = layouts()["flat"]
    source = EmptyFirstPage(files, page_size=PAGE)
    await sync(source, tmp_path / "d")
    assert read_tree(tmp_path / "d") == {k.removeprefix("dags/"): v for k, v in files.items()}


class EmptyFirstPage(MemorySource):
    async def list_page(
        self, prefix: str, *, delimiter: bool, token: str | None, start_after: str | None = None
    ) -> ListPage:
        if token is None and start_after is None and not delimiter:
            await self._enter("LIST", prefix)
            return ListPage((), (), "")  # an empty token: continue from the start
        return await super().list_page(prefix, delimiter=delimiter, token=token, start_after=start_after)


async def test_range_b_emits_at_once_all_but_the_keys_under_a_folder_range_a_may_hold_as_a_file(
    tmp_path: Path,
) -> None:
    """The split key is 'dags/m-b/' (the delimiter page shows m, m-b/, m-c, m/); 'dags/m' (a file, in range
    A) and 'dags/m/x' (range B) collide across it, because '-' sorts before '/'. Range B holds 'dags/m/x'
    back for range A's filter and emits the rest at once; the folder wins, as with the fan-out."""
    files = {f"dags/a{i}": b"a" for i in range(4)}
    files |= {"dags/m": b"file", "dags/m-b/x": b"x", "dags/m-c": b"c", "dags/m/x": b"dir"}
    results = []
    for depth in (0, 1):
        report = await sync(MemorySource(files, page_size=4), tmp_path / f"d{depth}", fanout_depth=depth)
        results.append((read_tree(tmp_path / f"d{depth}"), sorted(r.key for r in report.rejections)))
    assert results[0] == results[1]
    assert results[0][1] == ["dags/m"]


def test_straddling_names_the_prefixes_of_the_split_key_whose_folder_sorts_after_it() -> None:
    assert straddling("dags/a-b/x", "dags/") == ["dags/a", "dags/a-b/x"]
    assert straddling("dags/m", "dags/") == ["dags/m"]
    assert straddling("dags/team/x.py", "dags/") == ["dags/team/x", "dags/team/x.py"]  # '.' sorts before '/'
    assert straddling("dags/b/", "dags/") == ["dags/b/"]
