"""The daemon over the in-memory source: readiness, staleness, metrics, shutdown, audit, supervision."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession

from dagmirror import Mirror, MirrorConfig, S3Url
from dagmirror.errors import SourceConfigError, SourceUnavailable
from dagmirror.logs import setup_logging
from dagmirror.models import SyncReport
from dagmirror.retry import RetryPolicy
from dagmirror.service import Mapping, Service, ServiceConfig
from dagmirror.source.memory import MemorySource

FILES = {f"dags/team/f{i}.py": f"dag {i}\n".encode() for i in range(20)}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """The daemon's injected sleep: records each delay and returns at once (after one turn of the loop),
    so the next pass starts without waiting on the wall clock."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def make_service(
    tmp_path: Path,
    source: MemorySource,
    clock: Clock | None = None,
    *,
    sleep: Sleeps | None = None,
    service_kw: dict[str, Any] | None = None,
    **kw: Any,
) -> Service:
    cfg = MirrorConfig.create("s3://bkt/dags", tmp_path / "dags", fsync=False, retry=RetryPolicy(attempts=1))
    kw.setdefault("http", "127.0.0.1:0")

    def factory(c: MirrorConfig) -> Mirror:
        return Mirror(c, source=source)

    service_kw = {"mirror_factory": factory, **(service_kw or {})}
    return Service(
        ServiceConfig((Mapping("team", cfg),), host="test-host", **kw),
        clock=clock or time.time,
        sleep=sleep or Sleeps(),
        **service_kw,
    )


async def get(service: Service, path: str) -> tuple[int, str]:
    assert service.http is not None
    async with ClientSession() as http, http.get(f"http://127.0.0.1:{service.http.port}{path}") as resp:
        return resp.status, await resp.text()


async def until(predicate: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_readiness_follows_first_pass_and_staleness_during_an_outage(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    gate = asyncio.Event()
    original = source.list_page

    async def gated(*args: Any, **kw: Any) -> Any:
        await gate.wait()
        return await original(*args, **kw)

    source.list_page = gated  # type: ignore[method-assign]
    clock = Clock()
    service = make_service(tmp_path, source, clock, staleness=60)
    task = asyncio.create_task(service.run(install_signals=False))
    await until(lambda: service.http is not None and service.http.port)
    assert (await get(service, "/healthz"))[0] == 200
    assert (await get(service, "/readyz"))[0] == 503  # no complete pass yet
    gate.set()
    await until(lambda: service.readiness()[0])
    status, body = await get(service, "/readyz")
    assert status == 200
    assert orjson.loads(body)["mappings"]["team"]["completed_once"] is True
    source.fault = lambda op, key: (_ for _ in ()).throw(SourceUnavailable("S3 is down"))
    # A pass that listed before the fault may still succeed; once one pass has failed, every later one does.
    await until(lambda: service.metrics.passes.labels("team", "failed")._value.get() >= 1)
    clock.now += 61  # the outage outlasts the staleness threshold
    await until(lambda: not service.readiness()[0])
    assert (await get(service, "/readyz"))[0] == 503
    assert len(list((tmp_path / "dags" / "team").iterdir())) == 20  # the last good tree stays
    source.fault = None
    await until(lambda: service.readiness()[0])
    service.stop()
    assert await task == 0


async def test_metrics_count_what_the_passes_did(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    service = make_service(tmp_path, source)
    task = asyncio.create_task(service.run(install_signals=False))
    await until(lambda: service.metrics.passes.labels("team", "ok")._value.get() >= 2)
    del source.objects["dags/team/f0.py"]
    await until(lambda: service.metrics.objects.labels("team", "deleted")._value.get() == 1)
    _, text = await get(service, "/metrics")
    service.stop()
    await task
    assert 'dagmirror_objects_total{mapping="team",result="downloaded"} 20.0' in text
    assert 'dagmirror_objects_total{mapping="team",result="deleted"} 1.0' in text
    assert 'dagmirror_delete_guard_trips_total{mapping="team"} 0.0' in text
    assert "dagmirror_pass_duration_seconds_bucket" in text
    assert 'dagmirror_staleness_seconds{mapping="team"}' in text
    assert "test" not in text.replace("test-host", "")  # nothing from the environment leaks in


async def test_sigterm_lets_the_pass_in_flight_finish(tmp_path: Path) -> None:
    source = MemorySource(FILES, latency=0.02)
    service = make_service(tmp_path, source, interval=60, grace=10)
    task = asyncio.create_task(service.run(install_signals=False))
    await until(lambda: source.counts["GET"] >= 3)
    service.stop()
    assert await task == 0
    files = list((tmp_path / "dags" / "team").iterdir())
    assert len(files) == 20  # the pass completed inside the grace period
    assert list((tmp_path / "dags" / ".dagmirror" / "tmp").iterdir()) == []
    state = orjson.loads((tmp_path / "dags" / ".dagmirror" / "state.json").read_bytes())
    assert len(state["entries"]) == 20


async def test_grace_expiry_cancels_the_pass_and_leaves_no_torn_file(tmp_path: Path) -> None:
    source = MemorySource(FILES, latency=0.3)
    service = make_service(tmp_path, source, interval=60, grace=0.1, http=None)
    task = asyncio.create_task(service.run(install_signals=False))
    await until(lambda: source.counts["GET"] >= 2)
    service.stop()
    assert await task == 0
    dest = tmp_path / "dags"
    installed = list((dest / "team").iterdir()) if (dest / "team").exists() else []
    assert len(installed) < 20  # the pass really was cut short
    for path in installed:
        assert path.read_bytes() == FILES["dags/team/" + path.name]
    assert list((dest / ".dagmirror" / "tmp").iterdir()) == []


async def test_audit_records_changes_only_and_never_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "audit-secret-never-written")
    source = MemorySource(FILES)
    service = make_service(tmp_path, source)
    task = asyncio.create_task(service.run(install_signals=False))
    await until(lambda: service.metrics.passes.labels("team", "ok")._value.get() >= 3)
    service.stop()
    await task
    files = list((tmp_path / "dags" / ".dagmirror" / "audit").glob("*.jsonl"))
    lines = [orjson.loads(line) for f in files for line in f.read_bytes().splitlines()]
    assert len(lines) == 1  # unchanged passes are not audited
    record = lines[0]
    assert (record["host"], record["mapping"], record["result"]) == ("test-host", "team", "ok")
    assert len(record["files"]) == 20
    assert {"action", "key", "etag", "xxh3", "size"} <= set(record["files"][0])
    assert "audit-secret-never-written" not in files[0].read_text()


class RecordingSink:
    def __init__(self, fail: int = 0) -> None:
        self.puts: dict[str, bytes] = {}
        self.fail = fail

    async def put(self, key: str, body: bytes, *, metadata: dict[str, str] | None = None) -> str | None:
        if self.fail:
            self.fail -= 1
            raise SourceUnavailable("S3 down")
        self.puts[key] = body
        return None

    async def aclose(self) -> None:
        return None


async def test_audit_shipping_failure_keeps_records_and_retries(tmp_path: Path) -> None:
    from dagmirror.audit import AuditLog

    audit = AuditLog(tmp_path / "audit", "host-1", clock=lambda: 86400.0 * 20000)
    report = SyncReport("s3://b/p/", "d", False, 1, 1, 0, 0, 0, 0, 5, 0.1)
    assert audit.append(report, mapping="m", pass_id="p1")
    sink = RecordingSink(fail=1)
    assert await audit.ship(sink) == 0
    assert await audit.ship(sink) == 1
    assert list(sink.puts) == ["metadata/sync-logs/host-1/2024-10-04.jsonl"]
    assert await audit.ship(sink) == 0  # nothing new: not shipped twice


def test_audit_never_writes_through_a_symlink_planted_in_dest(tmp_path: Path) -> None:
    from dagmirror.audit import AuditLog

    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "dags" / ".dagmirror"
    folder.mkdir(parents=True)
    (folder / "audit").symlink_to(outside)
    report = SyncReport("s3://b/p/", str(tmp_path / "dags"), False, 1, 1, 0, 0, 0, 0, 10, 0.1)
    assert not AuditLog(folder / "audit", "host").append(report, mapping="m", pass_id="p")
    assert list(outside.iterdir()) == []


async def test_audit_shipping_never_uploads_or_overwrites_through_planted_links(tmp_path: Path) -> None:
    from dagmirror.audit import AuditLog

    secret, victim = tmp_path / "token", tmp_path / "victim"
    secret.write_text("service-account-token")
    victim.write_text("keep me")
    folder = tmp_path / "dags" / ".dagmirror" / "audit"
    folder.mkdir(parents=True)
    (folder / "2026-01-01.jsonl").symlink_to(secret)
    (folder / "2026-01-02.jsonl").write_text('{"a": 1}\n')
    (folder / "2026-01-02.jsonl.shipped").symlink_to(victim)

    class Sink:
        def __init__(self) -> None:
            self.bodies: dict[str, bytes] = {}

        async def put(self, key: str, body: bytes, *, metadata: dict[str, str] | None = None) -> str | None:
            self.bodies[key] = body
            return None

        async def aclose(self) -> None:
            return None

    sink = Sink()
    await AuditLog(folder, "host").ship(sink)
    assert all(b"service-account-token" not in body for body in sink.bodies.values())
    assert victim.read_text() == "keep me"


def test_an_audit_write_failure_is_logged_and_never_raised(tmp_path: Path) -> None:
    from dagmirror.audit import AuditLog

    folder = tmp_path / "dags" / ".dagmirror"
    folder.mkdir(parents=True)
    (folder / "audit").symlink_to(tmp_path / "missing")  # dangling: mkdir fails, open fails
    report = SyncReport("s3://b/p/", str(tmp_path / "dags"), False, 1, 1, 0, 0, 0, 0, 10, 0.1)
    assert not AuditLog(folder / "audit", "host").append(report, mapping="m", pass_id="p")


def test_an_unreadable_state_file_fails_the_pass_instead_of_being_discarded(tmp_path: Path) -> None:
    from dagmirror.errors import InstallError
    from dagmirror.state import STATE_FILE, load_state

    meta = tmp_path / ".dagmirror"
    (meta / STATE_FILE).mkdir(parents=True)  # EISDIR: an I/O problem, not a corrupt state
    fd = os.open(meta, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(InstallError):
            load_state(fd, meta, "s3://b/p/")
    finally:
        os.close(fd)
    assert (meta / STATE_FILE).exists()


async def test_failed_passes_back_off_exponentially_and_a_success_resets_the_interval(tmp_path: Path) -> None:
    source = MemorySource(FILES)
    source.fault = lambda op, key: (_ for _ in ()).throw(SourceUnavailable("S3 is down"))
    sleeps = Sleeps()
    service = make_service(tmp_path, source, sleep=sleeps, interval=1, jitter=0, max_backoff=4, http=None)
    task = asyncio.create_task(service.run(install_signals=False))
    await until(lambda: len(sleeps.delays) >= 4)
    source.fault = None
    await until(lambda: service.readiness()[0])
    await until(lambda: sleeps.delays[-1] == 1.0)
    service.stop()
    assert await task == 0
    assert sleeps.delays[:4] == [1.0, 2.0, 4.0, 4.0]  # interval x 2^(n-1), capped at max_backoff


async def test_shutdown_stops_http_even_when_the_audit_sink_cannot_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def no_sink() -> Any:
        raise SourceConfigError("AccessDenied: not allowed to write audit records")

    service = make_service(tmp_path, MemorySource(FILES), service_kw={"sink_factory": no_sink})
    task = asyncio.create_task(service.run(install_signals=False))
    await until(lambda: service.metrics.passes.labels("team", "ok")._value.get() >= 1)
    assert service.http is not None
    port = service.http.port
    service.stop()
    assert await task == 0
    await assert_not_listening(port)
    assert any("AccessDenied" in r.getMessage() for r in caplog.records)


async def test_shutdown_stops_http_even_when_audit_shipping_outlasts_its_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def hanging_sink() -> Any:
        await asyncio.Event().wait()

    service = make_service(
        tmp_path, MemorySource(FILES), service_kw={"sink_factory": hanging_sink, "ship_timeout": 0.1}
    )
    task = asyncio.create_task(service.run(install_signals=False))
    await until(lambda: service.metrics.passes.labels("team", "ok")._value.get() >= 1)
    assert service.http is not None
    port = service.http.port
    service.stop()
    assert await task == 0
    await assert_not_listening(port)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert "audit shipment failed: TimeoutError" in errors[0]


async def assert_not_listening(port: int) -> None:
    with pytest.raises(OSError, match="onnect"):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_bug_in_a_runner_is_logged_with_its_mapping_marks_it_unhealthy_and_exits_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Buggy(Mirror):
        async def sync_once(self) -> SyncReport:
            raise RuntimeError("a bug in the pass")

    service = make_service(tmp_path, MemorySource(FILES), http=None, service_kw={"mirror_factory": Buggy})
    code = await asyncio.wait_for(service.run(install_signals=False), timeout=10)  # never a silent hang
    assert code == 1
    assert not service.healthy()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert getattr(errors[0], "mapping", None) == "team"
    assert "team" in errors[0].getMessage()
    assert "RuntimeError: a bug in the pass" in errors[0].getMessage()
    assert errors[0].exc_info is None  # the traceback only at -vv


async def test_audit_records_ship_under_the_prefix_of_the_audit_url(tmp_path: Path) -> None:
    sink = RecordingSink()

    async def open_sink() -> RecordingSink:
        return sink

    service = make_service(
        tmp_path,
        MemorySource(FILES),
        http=None,
        audit_s3=S3Url.parse("s3://logs/audit/team-a"),
        service_kw={"sink_factory": open_sink},
    )
    task = asyncio.create_task(service.run(install_signals=False))
    await until(lambda: bool(sink.puts))
    service.stop()
    assert await task == 0
    assert [k.rsplit("/", 1)[0] for k in sink.puts] == ["audit/team-a/test-host"]


async def test_the_terminal_log_line_of_a_pass_names_its_mapping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = MemorySource({**FILES, **{k.replace("team", "ml"): v for k, v in FILES.items()}})
    mappings = tuple(
        Mapping(name, MirrorConfig.create(f"s3://bkt/dags/{name}", tmp_path / name, fsync=False))
        for name in ("team", "ml")
    )
    service = Service(
        ServiceConfig(mappings, http=None, host="test-host"),
        mirror_factory=lambda c: Mirror(c, source=source),
        sleep=Sleeps(),
    )
    logger = logging.getLogger("dagmirror")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    setup_logging(1, json_lines=False)
    try:
        task = asyncio.create_task(service.run(install_signals=False))
        await until(lambda: service.readiness()[0])
        service.stop()
        assert await task == 0
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    lines = [line for line in capsys.readouterr().err.splitlines() if "pass: 20 downloaded" in line]
    assert len(lines) == 2, lines
    assert any("INFO [team]: pass" in line for line in lines), lines
    assert any("INFO [ml]: pass" in line for line in lines), lines
