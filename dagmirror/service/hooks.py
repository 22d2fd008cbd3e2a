"""Hooks after a pass that changed DEST: `--exec-on-change CMD` and `--webhook URL`.

A pass only *queues* its change (`Hooks.changed` never waits), and each hook runs in a worker of its own, one
run at a time, so a slow or hanging hook never delays the next pass. Every run is bounded: a command is
killed (its whole process group) at `hook_timeout`; a webhook attempt gives up at `hook_timeout` and is
retried with backoff (full jitter) on connection errors, 5xx and 429. A failure is one warning line and
`dagmirror_hook_runs_total{outcome="failed"|"timeout"}`. When changes come faster than a hook runs, the
oldest waiting change is dropped (`outcome="dropped"`): the newest tells the current state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import aiohttp
import orjson

from dagmirror.config import ServiceConfig, redact_url
from dagmirror.errors import DagmirrorError
from dagmirror.metrics import TriggerMetrics
from dagmirror.models import SyncReport
from dagmirror.retry import RetryPolicy, Sleep, retrying

log = logging.getLogger("dagmirror")
_TAIL = 2048  # bytes of a command's output kept for the log line of its failure
WEBHOOK_RETRY = RetryPolicy(attempts=5, base_delay=1.0, max_delay=30.0)
_FROM_REPORT = (
    "source",
    "dest",
    "mode",
    "release",
    "release_seq",
    "downloaded",
    "deleted",
    "failed",
    "unchanged",
)


@dataclass(frozen=True)
class Change:
    """What a hook is told about a pass that changed DEST."""

    mapping: str
    source: str
    dest: str
    host: str
    pass_id: str
    time: float
    mode: str
    release: str | None
    release_seq: int | None
    downloaded: int
    deleted: int
    failed: int
    unchanged: int

    @classmethod
    def of(cls, mapping: str, pass_id: str, report: SyncReport, *, host: str, now: float) -> Change:
        told = {name: getattr(report, name) for name in _FROM_REPORT}
        return cls(mapping=mapping, host=host, pass_id=pass_id, time=now, **told)

    def environment(self) -> dict[str, str]:
        """DAGMIRROR_MAPPING, DAGMIRROR_RELEASE ('' in objects mode), DAGMIRROR_DOWNLOADED, ..."""
        return {f"DAGMIRROR_{k.upper()}": "" if v is None else str(v) for k, v in asdict(self).items()}

    def body(self) -> bytes:
        return orjson.dumps({"event": "dagmirror.change", **asdict(self)})


class HookFailed(DagmirrorError):
    """A hook run failed; `transient` says whether a webhook attempt is worth repeating."""

    def __init__(self, message: str, *, transient: bool = False, timeout: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.timeout = timeout


class Hook(Protocol):
    name: str  # the `hook` label of its metrics: "exec" or "webhook"

    async def __call__(self, change: Change) -> None:
        """Run once for `change`; raise HookFailed when it failed."""
        ...


class ExecHook:
    """Runs `argv` (no shell) with the change in its environment, killed with its process group at
    `timeout`. It inherits the daemon's environment: give it only what the daemon may see."""

    name = "exec"

    def __init__(self, argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None) -> None:
        self.argv = tuple(argv)
        self.timeout = timeout
        self._env = dict(os.environ if env is None else env)

    async def __call__(self, change: Change) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self._env | change.environment(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: a timeout kills what it started, too
            )
        except OSError as exc:
            raise HookFailed(f"cannot start {self.argv[0]!r}: {exc.strerror or exc}") from None
        tail = bytearray()
        try:
            async with asyncio.timeout(self.timeout):
                await _drain(proc, tail)
                code = await proc.wait()
        except TimeoutError:
            raise HookFailed(f"still running after {self.timeout:g}s, killed", timeout=True) from None
        finally:
            _kill_group(proc)
            await proc.wait()
        if code != 0:
            last = bytes(tail).decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise HookFailed(f"exited {code}: {last[0][:300]}")


async def _drain(proc: asyncio.subprocess.Process, tail: bytearray) -> None:
    """Read the command's output to its end, keeping the last _TAIL bytes: it can never fill memory."""
    assert proc.stdout is not None
    while chunk := await proc.stdout.read(65536):
        tail += chunk
        del tail[:-_TAIL]


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


class Webhook:
    """POSTs the change as JSON to `url`: 2xx is done; connection errors, timeouts, 5xx and 429 are retried
    with backoff; any other answer fails at once (retrying a 404 cannot help)."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        timeout: float,
        *,
        policy: RetryPolicy = WEBHOOK_RETRY,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._policy = policy
        self._sleep = sleep

    async def __call__(self, change: Change) -> None:
        body = change.body()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:

            async def attempt() -> None:
                await self._post(session, body)

            def retried(exc: DagmirrorError) -> None:
                log.info("webhook %s: %s, retrying", redact_url(self.url), exc)

            await retrying(attempt, self._policy, sleep=self._sleep, on_retry=retried)

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "dagmirror"}
        try:
            async with session.post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            timed_out = isinstance(exc, TimeoutError)
            why = f"no answer within {self.timeout:g}s" if timed_out else f"{type(exc).__name__}: {exc}"
            raise HookFailed(why, transient=True, timeout=timed_out) from None
        if not 200 <= status < 300:
            raise HookFailed(f"answered HTTP {status}", transient=status >= 500 or status == 429)


class Hooks:
    """One worker per hook, each with a small queue of changes (STYLE.md: bounded stages)."""

    def __init__(
        self,
        hooks: Sequence[Hook],
        metrics: TriggerMetrics,
        *,
        host: str = "",
        clock: Callable[[], float] = time.time,
        backlog: int = 8,
    ) -> None:
        self.hooks = tuple(hooks)
        self._metrics = metrics
        self._host, self._clock = host, clock
        self._queues: list[asyncio.Queue[Change]] = [asyncio.Queue(maxsize=backlog) for _ in self.hooks]
        for hook in self.hooks:
            metrics.register_hook(hook.name)

    def after_pass(self, mapping: str, number: int, pass_id: str, report: SyncReport) -> None:
        """Called by a mapping's runner after each successful pass: a change (not a dry run) is queued."""
        if report.changed and self.hooks and not report.dry_run:
            self.changed(Change.of(mapping, pass_id, report, host=self._host, now=self._clock()))

    def changed(self, change: Change) -> None:
        """Queue `change` for every hook; never waits."""
        for hook, queue in zip(self.hooks, self._queues, strict=True):
            if queue.full():
                dropped = queue.get_nowait()
                self._metrics.hooks.labels(hook.name, "dropped").inc()
                log.warning("%s hook: behind, dropped the change of pass %s", hook.name, dropped.pass_id)
            queue.put_nowait(change)

    async def run(self) -> None:
        """The workers, until cancelled (a command in flight is then killed)."""
        async with asyncio.TaskGroup() as group:
            for hook, queue in zip(self.hooks, self._queues, strict=True):
                group.create_task(self._worker(hook, queue), name=f"hook-{hook.name}")

    async def _worker(self, hook: Hook, queue: asyncio.Queue[Change]) -> None:
        while True:
            change = await queue.get()
            started = time.monotonic()
            outcome = "ok"
            try:
                await hook(change)
            except HookFailed as exc:
                outcome = "timeout" if exc.timeout else "failed"
                log.warning(  # one line: what ran, for which pass, and why it failed
                    "%s hook failed for pass %s: %s",
                    hook.name,
                    change.pass_id,
                    exc,
                    extra={"mapping": change.mapping, "pass_id": change.pass_id},
                )
            except Exception as exc:  # a bug in a hook must not stop the daemon's passes
                outcome = "failed"
                log.error(  # noqa: TRY400 - one line; the traceback only at -vv (debug)
                    "%s hook failed for pass %s: %s: %s",
                    hook.name,
                    change.pass_id,
                    type(exc).__name__,
                    exc,
                    exc_info=exc if log.isEnabledFor(logging.DEBUG) else None,
                )
            self._metrics.hooks.labels(hook.name, outcome).inc()
            self._metrics.hook_seconds.labels(hook.name).observe(time.monotonic() - started)


def configured_hooks(config: ServiceConfig) -> list[Hook]:
    hooks: list[Hook] = []
    if config.exec_on_change:
        hooks.append(ExecHook(config.exec_on_change, config.hook_timeout))
    if config.webhook:
        hooks.append(Webhook(config.webhook, config.hook_timeout))
    return hooks
