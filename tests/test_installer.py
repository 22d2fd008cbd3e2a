"""engine.installer.BatchInstaller: one thread call per batch, each outcome to its own file's caller."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, cast

import pytest

from dagmirror.engine.context import PassContext
from dagmirror.engine.installer import BatchInstaller
from dagmirror.errors import InstallError, PathBlocked
from dagmirror.models import LocalStat


class SlowTree:
    """install_many that takes a while and records each batch; 'bad/...' paths fail."""

    def __init__(self, delay: float) -> None:
        self.delay, self.batches, self.lock = delay, list[list[str]](), threading.Lock()

    def install_many(self, items: list[tuple[str, bytes]]) -> list[LocalStat | InstallError]:
        threading.Event().wait(self.delay)
        with self.lock:
            self.batches.append([p for p, _ in items])
        return [
            PathBlocked(f"{p} blocked", p) if p.startswith("bad/") else LocalStat("file", len(b), 0, i)
            for i, (p, b) in enumerate(items)
        ]


def context(tree: Any, executor: ThreadPoolExecutor) -> PassContext:
    return cast(PassContext, SimpleNamespace(tree=tree, executor=executor))


async def test_under_load_files_go_in_batches_and_each_caller_gets_its_own_outcome() -> None:
    tree = SlowTree(0.05)
    with ThreadPoolExecutor(2) as executor:
        installer = BatchInstaller(context(tree, executor), lanes=2, batch=16)
        paths = [f"bad/{i}.py" if i % 10 == 0 else f"ok/{i}.py" for i in range(100)]
        outcomes = await asyncio.gather(
            *(installer.install(p, b"x" * i) for i, p in enumerate(paths)), return_exceptions=True
        )
    for i, (path, outcome) in enumerate(zip(paths, outcomes, strict=True)):
        if path.startswith("bad/"):
            assert isinstance(outcome, PathBlocked)
            assert path in str(outcome)
        else:
            assert isinstance(outcome, LocalStat)
            assert outcome.size == i
    assert sorted(p for b in tree.batches for p in b) == sorted(paths)
    assert len(tree.batches) <= 100 // 16 + 3  # two lanes, the rest waited and went together
    assert max(map(len, tree.batches)) == 16


async def test_a_lone_file_is_installed_at_once() -> None:
    tree = SlowTree(0.0)
    with ThreadPoolExecutor(1) as executor:
        installer = BatchInstaller(context(tree, executor), lanes=4)
        assert (await installer.install("a.py", b"abc")).size == 3
        assert (await installer.install("b.py", b"ab")).size == 2
    assert tree.batches == [["a.py"], ["b.py"]]


async def test_a_failing_batch_fails_every_file_in_it_and_the_next_batch_still_runs() -> None:
    class Broken(SlowTree):
        def install_many(self, items: list[tuple[str, bytes]]) -> list[LocalStat | InstallError]:
            if any(p == "boom" for p, _ in items):
                raise OSError(5, "Input/output error")
            return super().install_many(items)

    tree = Broken(0.0)
    with ThreadPoolExecutor(1) as executor:
        installer = BatchInstaller(context(tree, executor), lanes=1)
        with pytest.raises(OSError, match="Input/output"):
            await installer.install("boom", b"")
        assert (await installer.install("fine", b"1")).size == 1


async def test_a_cancelled_caller_does_not_stop_the_others_of_its_batch() -> None:
    tree = SlowTree(0.1)
    with ThreadPoolExecutor(1) as executor:
        installer = BatchInstaller(context(tree, executor), lanes=1)
        first = asyncio.ensure_future(installer.install("first", b"1"))
        await asyncio.sleep(0.01)
        waiting = [asyncio.ensure_future(installer.install(f"w{i}", b"22")) for i in range(3)]
        await asyncio.sleep(0)
        waiting[0].cancel()
        assert (await first).size == 1
        assert [(await w).size for w in waiting[1:]] == [2, 2]
    assert tree.batches == [["first"], ["w0", "w1", "w2"]]  # w0 was installed (and journaled) all the same
