"""Hooks after a pass that changed DEST (dagmirror/service/hooks.py): `--exec-on-change` runs a real command
with the change in its environment, killed with its process group at its time bound; `--webhook` POSTs JSON
to a real aiohttp server on 127.0.0.1, retried with backoff; a hook that fails or hangs is counted and never
holds up the next pass."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from dagmirror.metrics import TriggerMetrics
from dagmirror.retry import RetryPolicy
from dagmirror.service.hooks import Change, ExecHook, HookFailed, Hooks, Webhook
from dagmirror.source.memory import MemorySource

from .daemon import Daemon
from .helpers import dagmirror, put_all, read_tree
from .releases import publish_to
from .test_service import FILES, make_service, until

CHANGE = Change(
    mapping="team",
    source="s3://bkt/dags/",
    dest="/opt/airflow/dags",
    host="pod-a",
    pass_id="0123456789ab",
    time=1_700_000_000.0,
    mode="releases",
    release="3f9c" + "0" * 60,
    release_seq=42,
    downloaded=3,
    deleted=1,
    failed=0,
    unchanged=97,
)
FAST = RetryPolicy(attempts=4, base_delay=0.0, max_delay=0.0)


class WebhookTarget:
    """An aiohttp server on 127.0.0.1 in a thread of its own: answers each POST with the next status of
    `statuses` (then 200), after `delay` seconds; records every body."""

    def __init__(self, statuses: tuple[int, ...] = (), delay: float = 0.0) -> None:
        self.statuses = list(statuses)
        self.delay = delay
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.bodies.append(orjson.loads(await request.read()))
        self.headers.append(dict(request.headers))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    def __enter__(self) -> WebhookTarget:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@contextlib.contextmanager
def refused_port() -> Iterator[str]:
    """A URL on 127.0.0.1 where nothing listens."""
    from dagmirror.devtools.servers import free_port

    yield f"http://127.0.0.1:{free_port()}/hook"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # killed, not reaped yet by its parent
    except FileNotFoundError:
        return True


# -- the exec hook --


async def test_the_command_gets_the_release_and_counts_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    await ExecHook(python(code), timeout=30, env={"KEEP": "me"})(CHANGE)
    env = orjson.loads(out.read_bytes())
    assert env["DAGMIRROR_RELEASE"] == CHANGE.release
    assert env["DAGMIRROR_RELEASE_SEQ"] == "42"
    assert (env["DAGMIRROR_DOWNLOADED"], env["DAGMIRROR_DELETED"], env["DAGMIRROR_FAILED"]) == ("3", "1", "0")
    assert (env["DAGMIRROR_MAPPING"], env["DAGMIRROR_DEST"], env["DAGMIRROR_MODE"]) == (
        "team",
        "/opt/airflow/dags",
        "releases",
    )
    assert env["KEEP"] == "me"


async def test_a_command_that_hangs_is_killed_with_what_it_started_at_its_time_bound(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    code = (
        "import os, subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}'); "
        "time.sleep(600)"
    )
    started = time.monotonic()
    with pytest.raises(HookFailed, match=r"still running after 1s, killed") as failed:
        await ExecHook(python(code), timeout=1.0)(CHANGE)
    assert failed.value.timeout
    assert time.monotonic() - started < 60  # bounded, not the 600 s the command wanted
    hook_pid, child_pid = map(int, pids.read_text().split())
    await until(lambda: gone(hook_pid) and gone(child_pid))


async def test_a_failing_command_reports_its_exit_code_and_last_output_line() -> None:
    code = "import sys; print('step 1 ok'); print('cannot reach the scheduler', file=sys.stderr); sys.exit(3)"
    with pytest.raises(HookFailed, match=r"^exited 3: cannot reach the scheduler$"):
        await ExecHook(python(code), timeout=30)(CHANGE)


async def test_a_command_that_cannot_start_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(HookFailed, match="cannot start"):
        await ExecHook([str(tmp_path / "no-such-command")], timeout=30)(CHANGE)


async def test_a_command_printing_without_end_is_read_in_bounded_memory() -> None:
    code = "import sys\nfor _ in range(2000): sys.stdout.write('x' * 65536)\nsys.exit(1)"
    with pytest.raises(HookFailed, match=r"^exited 1: x{300}$"):  # the last line, cut for the log
        await ExecHook(python(code), timeout=60)(CHANGE)


# -- the webhook --


async def test_the_webhook_posts_the_change_as_json() -> None:
    with WebhookTarget() as target:
        await Webhook(target.url, timeout=10, policy=FAST)(CHANGE)
    [body] = target.bodies
    assert body["event"] == "dagmirror.change"
    assert {k: body[k] for k in ("mapping", "release", "release_seq", "downloaded", "deleted", "host")} == {
        "mapping": "team",
        "release": CHANGE.release,
        "release_seq": 42,
        "downloaded": 3,
        "deleted": 1,
        "host": "pod-a",
    }
    assert target.headers[0]["Content-Type"] == "application/json"


async def test_the_webhook_retries_5xx_and_429_with_backoff_then_succeeds() -> None:
    sleeps: list[float] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    policy = RetryPolicy(attempts=5, base_delay=1.0, max_delay=30.0)
    with WebhookTarget(statuses=(503, 429, 500)) as target:
        await Webhook(target.url, timeout=10, policy=policy, sleep=sleep)(CHANGE)
    assert len(target.bodies) == 4
    assert len(sleeps) == 3
    assert all(0 <= s <= 30 for s in sleeps)


async def test_the_webhook_does_not_retry_a_client_error() -> None:
    with WebhookTarget(statuses=(404,)) as target, pytest.raises(HookFailed, match="answered HTTP 404"):
        await Webhook(target.url, timeout=10, policy=FAST)(CHANGE)
    assert len(target.bodies) == 1


async def test_a_webhook_target_that_hangs_times_out_each_attempt() -> None:
    with WebhookTarget(delay=3) as target:
        hook = Webhook(target.url, timeout=0.5, policy=RetryPolicy(attempts=2, base_delay=0))
        with pytest.raises(HookFailed, match=r"no answer within 0.5s") as failed:
            await hook(CHANGE)
    assert failed.value.timeout
    assert len(target.bodies) == 2


async def test_a_webhook_nobody_listens_to_is_retried_then_fails() -> None:
    with refused_port() as url, pytest.raises(HookFailed, match="ClientConnectorError"):
        await Webhook(url, timeout=5, policy=FAST)(CHANGE)


# -- the dispatcher --


class Blocking:
    """A hook that waits until released, recording the changes it was given."""

    name = "exec"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: list[str] = []

    async def __call__(self, change: Change) -> None:
        self.seen.append(change.pass_id)
        await self.release.wait()


async def test_changes_a_busy_hook_cannot_take_drop_the_oldest_waiting_one() -> None:
    metrics = TriggerMetrics(CollectorRegistry())
    hook = Blocking()
    hooks = Hooks([hook], metrics, backlog=2)
    runner = asyncio.create_task(hooks.run())
    hooks.changed(Change(**{**CHANGE.__dict__, "pass_id": "p1"}))
    await until(lambda: hook.seen == ["p1"])  # p1 runs and holds the worker
    for pass_id in ("p2", "p3", "p4"):
        hooks.changed(Change(**{**CHANGE.__dict__, "pass_id": pass_id}))  # never waits
    hook.release.set()
    await until(lambda: len(hook.seen) == 3)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    assert hook.seen == ["p1", "p3", "p4"]
    assert metrics.hooks.labels("exec", "dropped")._value.get() == 1
    assert metrics.hooks.labels("exec", "ok")._value.get() == 3


class Buggy:
    name = "webhook"

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, change: Change) -> None:
        self.calls += 1
        raise RuntimeError("a bug, not a HookFailed")


async def test_a_hook_that_raises_a_bug_is_counted_and_the_next_change_still_runs() -> None:
    metrics = TriggerMetrics(CollectorRegistry())
    hook = Buggy()
    hooks = Hooks([hook], metrics)
    runner = asyncio.create_task(hooks.run())
    hooks.changed(CHANGE)
    await until(lambda: hook.calls == 1)
    hooks.changed(CHANGE)
    await until(lambda: metrics.hooks.labels("webhook", "failed")._value.get() == 2)
    assert not runner.done()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def test_a_hanging_hook_never_holds_up_the_next_pass_and_is_counted(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    pid = tmp_path / "pid"
    hangs = ExecHook(
        python(f"import os, time; open({str(pid)!r}, 'w').write(str(os.getpid())); time.sleep(600)"), 10
    )
    service = make_service(tmp_path, source, service_kw={"hooks": [hangs]}, interval=3600, http=None)
    task = asyncio.create_task(service.run(install_signals=False))
    passes = service.metrics.passes.labels("team", "ok")
    hook_runs = service.metrics.triggers.hooks
    try:
        await until(lambda: pid.exists() and pid.read_text())
        done = passes._value.get()
        source.put("dags/team/extra.py", b"extra\n")
        await until(lambda: passes._value.get() >= done + 3)
        assert not gone(int(pid.read_text()))  # passes went on while the hook still ran
        await until(lambda: hook_runs.labels("exec", "timeout")._value.get() >= 1, seconds=30)
    finally:
        service.stop()
        await task
    assert hook_runs.labels("exec", "ok")._value.get() == 0


async def test_only_a_pass_that_changed_dest_calls_the_hooks(tmp_path: Path) -> None:
    source = MemorySource({})
    first = publish_to(source.put, "dags/", {"team/a.py": b"a\n"})
    with WebhookTarget() as target:
        hook = Webhook(target.url, timeout=10, policy=FAST)
        service = make_service(tmp_path, source, service_kw={"hooks": [hook]}, http=None)
        task = asyncio.create_task(service.run(install_signals=False))
        passes = service.metrics.passes.labels("team", "ok")
        try:
            await until(lambda: len(target.bodies) == 1)
            await until(lambda: passes._value.get() >= 5)  # four passes that changed nothing
            second = publish_to(source.put, "dags/", {"team/a.py": b"a\n", "team/b.py": b"b\n"}, seq=2)
            await until(lambda: len(target.bodies) == 2)
        finally:
            service.stop()
            await task
    assert [(b["release"], b["release_seq"], b["downloaded"]) for b in target.bodies] == [
        (first, 1, 1),
        (second, 2, 1),
    ]
    assert service.metrics.triggers.hooks.labels("webhook", "ok")._value.get() == 2


# -- the daemon, end to end --


def test_a_running_daemon_calls_both_hooks_after_a_change(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    put_all(s3, bucket, "dags/prod/", {"a.py": b"a\n"})
    out = tmp_path / "hook.out"
    code = f"import os; open('{out}', 'a').write(os.environ['DAGMIRROR_DOWNLOADED'] + '\\n')"
    command = f'{sys.executable} -c "{code}"'
    dest = tmp_path / "dags"
    with WebhookTarget(statuses=(503,)) as target:
        flags = (
            "--interval",
            "0.3",
            "--exec-on-change",
            command,
            "--webhook",
            target.url,
            "--hook-timeout",
            "10",
        )
        with Daemon(f"s3://{bucket}/dags/prod/", dest, moto_endpoint, *flags) as d:
            d.until(lambda: out.exists() and out.read_text() == "1\n", what="the hook of the first pass")
            put_all(s3, bucket, "dags/prod/", {"b.py": b"b\n", "c.py": b"c\n"})
            # b.py and c.py are two PUTs: one pass may see both, or two passes one each.
            d.until(lambda: sum(map(int, out.read_text().split())) == 3, what="the hooks of the changes")
            changes = len(out.read_text().split())
            d.until(lambda: len(target.bodies) == changes + 1, what="a webhook per change, the first retried")
            d.until(lambda: d.metric("dagmirror_hook_runs_total", hook="webhook", outcome="ok") == changes)
            d.until(lambda: d.metric("dagmirror_hook_runs_total", hook="exec", outcome="ok") == changes)
    assert read_tree(dest) == {"a.py": b"a\n", "b.py": b"b\n", "c.py": b"c\n"}
    downloaded = [b["downloaded"] for b in target.bodies]
    assert downloaded[:2] == [1, 1]  # the first change, answered 503 then 200
    assert sum(downloaded[1:]) == 3


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--webhook", "ftp://example.com/hook"), "webhook: endpoint URL must be http(s)://host[:port]"),
        (("--exec-on-change", "notify 'unclosed"), "exec_on_change: cannot split"),
        (("--exec-on-change", "   "), "exec_on_change: empty command"),
        (("--sqs-queue", "queue-name-only"), "sqs_queue: endpoint URL must be http(s)://host[:port]"),
    ],
)
def test_bad_hook_and_queue_settings_are_one_line_each_and_exit_2(
    moto_endpoint: str, tmp_path: Path, flags: tuple[str, ...], message: str
) -> None:
    run = dagmirror("run", "s3://bkt/dags/", tmp_path / "dags", *flags, endpoint=moto_endpoint)
    assert run.code == 2
    assert message in run.stderr
    assert run.stderr.startswith("dagmirror: error:")
    assert not (tmp_path / "dags").exists()
