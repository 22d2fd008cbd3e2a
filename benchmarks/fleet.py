"""Fleet propagation: N simulated instances (one process, one `Mirror` each, run by the daemon's own
`Service`, runners and triggers) following one environment on SeaweedFS, and one deploy of a one-file change.

    .venv/bin/python -m benchmarks.fleet [--instances 200] [--files 40] [--idle 60] [--list-files 10000]
        [--seed 1] [--json PATH]

One run, four measurements:

1. poll: every instance in releases mode at the default interval (5 s, +-10% jitter). After every instance
   has release 1 and a random part of an interval has passed, release 2 (one file changed) is published
   (bodies, manifest, archive, pointer last; tests/releases.py). Convergence of an instance: from the start
   of the pointer PUT to the end of the pass that installed release 2 (the file is in DEST by then).
2. idle: nothing changes for --idle seconds; S3 requests and passes per instance per hour.
3. events: a fresh `Service` over the same DESTs with `--sqs-queue`, its poll slowed to 60 s so that what is
   measured is the event path. Release 3 is published and, right after the pointer PUT, the S3 notification
   for the pointer is sent to the queue as S3 would send it. SeaweedFS has no SQS API, so the queue is on
   moto server; S3's own delivery delay (usually under a second, not guaranteed) is not in the figure. The
   one queue serves every instance of the process (a fleet gives each instance its own queue, fanned out by
   SNS or EventBridge): one message wakes them all. Then an idle window for the SQS calls of one queue.
4. list: one `Mirror` in objects mode over --list-files files on the same server: requests of a no-op poll,
   and so per hour at the objects default (30 s) and at 5 s.

Targets (issue 13): poll p99 <= interval + 1 s; events p99 <= 2 s; idle requests = the poll count.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.deploy_latency import percentile
from dagmirror import Mirror, MirrorConfig
from dagmirror.config import Mapping, ServiceConfig
from dagmirror.config.service import OBJECTS_INTERVAL, RELEASES_INTERVAL
from dagmirror.devtools.corpus import create_bucket, synthetic_corpus, upload
from dagmirror.devtools.servers import moto_server, s3_client, seaweedfs_server
from dagmirror.manifest import pointer_key
from dagmirror.models import SyncReport
from dagmirror.service import Service
from dagmirror.source.queue import EventQueue
from dagmirror.source.sqs import SqsQueue
from tests.helpers import sdk_credentials
from tests.releases import publish_to

PREFIX = "dags/prod/"
EVENTS_INTERVAL = 60.0


class Visible:
    """When each instance's first pass that ended with a release installed started and ended
    (time.monotonic), by (DEST, release): the release id is known only once published, and a pass may
    finish before that. With `stagger`, each instance's first pass waits a random part of it, as the
    instances of a fleet start at different times and so poll at different phases."""

    def __init__(self, stagger: float = 0.0, seed: int = 1) -> None:
        self.at: dict[tuple[str, str], tuple[float, float]] = {}
        self.stagger = stagger
        self.rng = random.Random(seed)

    def of(self, release: str) -> dict[str, tuple[float, float]]:
        return {dest: at for (dest, r), at in self.at.items() if r == release}

    def factory(self) -> Callable[[MirrorConfig], Mirror]:
        visible = self

        class TimedMirror(Mirror):
            staggered = False

            async def sync_once(self) -> SyncReport:
                if not self.staggered:
                    self.staggered = True
                    await asyncio.sleep(visible.rng.uniform(0, visible.stagger))
                started = time.monotonic()
                report = await super().sync_once()
                if report.release is not None:
                    visible.at.setdefault(
                        (str(self.config.dest), report.release), (started, time.monotonic())
                    )
                return report

        return TimedMirror


def tree(files: int, version: int) -> dict[str, bytes]:
    body = {f"team{i % 8}/dag_{i:04d}.py": f"# dag {i}\n".encode() * 60 for i in range(files)}
    body["team0/dag_0000.py"] = f"# the file each deploy changes: version {version}\n".encode()
    return body


class Deployer:
    """Publishes releases straight into the bucket (what `dagmirror deploy` writes, in its order) and notes
    when the pointer PUT started; `after_pointer` runs right after it (the S3 notification)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client, self.bucket = client, bucket
        self.pointer_at = 0.0

    def publish(
        self, files: dict[str, bytes], seq: int, after_pointer: Callable[[], None] | None = None
    ) -> str:
        def put(key: str, body: bytes) -> None:
            if key == pointer_key(PREFIX):
                self.pointer_at = time.monotonic()
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
            if key == pointer_key(PREFIX) and after_pointer is not None:
                after_pointer()

        return publish_to(put, PREFIX, files, seq=seq)


def service_for(
    dests: list[Path], bucket: str, endpoint: str, visible: Visible, workdir: Path, **kw: Any
) -> Service:
    mappings = tuple(
        Mapping(
            f"i{n:04d}",
            MirrorConfig.create(
                f"s3://{bucket}/{PREFIX}", dest, endpoint_url=endpoint, mode="releases", concurrency=4
            ),
        )
        for n, dest in enumerate(dests)
    )
    queue_factory = kw.pop("queue_factory", None)
    config = ServiceConfig(mappings, http=None, audit_dir=workdir / "audit", host="bench", **kw)
    return Service(config, mirror_factory=visible.factory(), queue_factory=queue_factory)


def counted(service: Service, metric: str, **labels: str) -> float:
    total = 0.0
    for family in service.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {seconds:.0f}s")
        await asyncio.sleep(0.02)


def percentiles(samples: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(samples, 50), 3),
        "p99": round(percentile(samples, 99), 3),
        "max": round(max(samples), 3),
    }


async def converge(
    visible: Visible, deployer: Deployer, deploy: Callable[[], str], n: int, seconds: float
) -> dict[str, Any]:
    """Publish (in a thread: the instances keep running) and wait until all `n` instances have the release;
    the convergence of each, from the start of the pointer PUT."""
    release = await asyncio.to_thread(deploy)
    await until(lambda: len(visible.of(release)) == n, seconds, "every instance on the new release")
    passes = visible.of(release).values()
    samples = [end - deployer.pointer_at for _, end in passes]
    return {
        "release": release,
        "instances": n,
        **percentiles(samples),
        "min": round(min(samples), 3),
        "pass_started": percentiles([start - deployer.pointer_at for start, _ in passes]),
        "pass_seconds": percentiles([end - start for start, end in passes]),
    }


async def idle(service: Service, instances: int, seconds: float, queue: EventQueue | None) -> dict[str, Any]:
    requests0, passes0 = (
        counted(service, "dagmirror_requests_total"),
        counted(service, "dagmirror_passes_total"),
    )
    sqs0 = sum(queue.request_counts().values()) if queue else 0
    await asyncio.sleep(seconds)
    requests = counted(service, "dagmirror_requests_total") - requests0
    passes = counted(service, "dagmirror_passes_total") - passes0
    per_hour = 3600 / seconds / instances
    result = {
        "seconds": seconds,
        "s3_requests_per_instance_hour": round(requests * per_hour, 1),
        "passes_per_instance_hour": round(passes * per_hour, 1),
        "requests_per_pass": round(requests / passes, 3) if passes else None,
    }
    if queue is not None:
        result["sqs_requests_per_queue_hour"] = round(
            (sum(queue.request_counts().values()) - sqs0) * 3600 / seconds, 1
        )
    return result


async def poll_and_idle(
    args: argparse.Namespace, endpoint: str, bucket: str, workdir: Path
) -> dict[str, Any]:
    client = s3_client(endpoint)
    deployer = Deployer(client, bucket)
    deployer.publish(tree(args.files, 1), seq=1)
    dests = [workdir / f"i{n:04d}" / "dags" for n in range(args.instances)]
    visible = Visible(stagger=RELEASES_INTERVAL, seed=args.seed)
    service = service_for(dests, bucket, endpoint, visible, workdir)
    task = asyncio.create_task(service.run(install_signals=False))
    try:
        started = time.monotonic()
        await until(lambda: len(visible.at) == len(dests), 600, "every instance's first release")
        cold = round(time.monotonic() - started, 1)
        await asyncio.sleep(RELEASES_INTERVAL + random.Random(args.seed).uniform(0, RELEASES_INTERVAL))
        poll = await converge(
            visible, deployer, lambda: deployer.publish(tree(args.files, 2), 2), len(dests), 120
        )
        print(f"poll: {poll}", file=sys.stderr)
        quiet = await idle(service, len(dests), args.idle, None)
        print(f"idle: {quiet}", file=sys.stderr)
    finally:
        service.stop()
        await task
    return {"cold_start_seconds": cold, "poll": poll, "idle": quiet, "dests": [str(d) for d in dests]}


async def events(
    args: argparse.Namespace, endpoint: str, bucket: str, workdir: Path, sqs_endpoint: str
) -> dict[str, Any]:
    import boto3

    sqs = boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"fleet-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    deployer = Deployer(s3_client(endpoint), bucket)
    message = orjson.dumps(
        {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                      "s3": {"bucket": {"name": bucket}, "object": {"key": pointer_key(PREFIX)}}}]}
    ).decode()  # fmt: skip

    async def open_queue(_: ServiceConfig) -> EventQueue:
        return await SqsQueue.open(url, endpoint_url=sqs_endpoint, region="us-east-1")

    dests = [workdir / f"i{n:04d}" / "dags" for n in range(args.instances)]
    visible = Visible()
    service = service_for(
        dests, bucket, endpoint, visible, workdir, interval=EVENTS_INTERVAL, queue_factory=open_queue
    )
    task = asyncio.create_task(service.run(install_signals=False))
    try:
        await until(
            lambda: counted(service, "dagmirror_passes_total", outcome="ok") >= len(dests),
            600,
            "first passes",
        )
        await asyncio.sleep(2)  # the receive loop is in its long poll
        notify = lambda: sqs.send_message(QueueUrl=url, MessageBody=message)  # noqa: E731
        result = await converge(
            visible, deployer, lambda: deployer.publish(tree(args.files, 3), 3, notify), len(dests), 120
        )
        print(f"events: {result}", file=sys.stderr)
        assert service.events is not None
        quiet = await idle(service, len(dests), args.idle, service.events.queue)
        print(f"events idle: {quiet}", file=sys.stderr)
    finally:
        service.stop()
        await task
    return {"events": result, "events_idle": quiet}


async def list_mode(files: int, endpoint: str, bucket: str, workdir: Path) -> dict[str, Any]:
    prefix = "dags/list/"
    upload(s3_client(endpoint), bucket, prefix, synthetic_corpus(files, seed=7), threads=16)
    config = MirrorConfig.create(
        f"s3://{bucket}/{prefix}", workdir / "list" / "dags", endpoint_url=endpoint, mode="objects"
    )
    async with Mirror(config) as mirror:
        cold = await mirror.sync_once()
        polls = [await mirror.sync_once() for _ in range(3)]
    per_poll = sum(sum(p.requests.values()) for p in polls) / len(polls)
    assert cold.downloaded == files
    assert all(p.downloaded == 0 for p in polls)
    return {
        "files": files,
        "requests_per_poll": per_poll,
        "requests": polls[0].requests,
    }


def table(r: dict[str, Any]) -> str:
    p, e, i, ei, lm = r["poll"], r["events"], r["idle"], r["events_idle"], r["list"]
    sqs = ei.get("sqs_requests_per_queue_hour")
    rows = [
        f"{r['instances']} instances, {r['files']} files each, one process; S3 on SeaweedFS, SQS on moto",
        "",
        "| propagation of a one-file change | p50 | p99 | max | target |",
        "|---|---|---|---|---|",
        f"| poll every {RELEASES_INTERVAL:g} s (+-10%) | {p['p50']} s | {p['p99']} s | {p['max']} s "
        f"| p99 <= {RELEASES_INTERVAL + 1:g} s |",
        f"| S3 event through SQS (poll {EVENTS_INTERVAL:g} s) | {e['p50']} s | {e['p99']} s | {e['max']} s "
        "| p99 <= 2 s |",
        "",
        *(
            f"{name}: the installing passes started {d['pass_started']['p50']} s (p50) / "
            f"{d['pass_started']['p99']} s (p99) after the pointer PUT began and took "
            f"{d['pass_seconds']['p50']} s / {d['pass_seconds']['p99']} s"
            for name, d in (("poll", p), ("events", e))
        ),
        "",
        "| idle, per instance | S3 requests / hour | passes / hour | requests / pass |",
        "|---|---|---|---|",
    ]
    for what, d in (
        (f"releases, poll {RELEASES_INTERVAL:g} s", i),
        (f"releases + events, poll {EVENTS_INTERVAL:g} s", ei),
    ):
        hourly, passes, ratio = (
            d[k] for k in ("s3_requests_per_instance_hour", "passes_per_instance_hour", "requests_per_pass")
        )
        rows.append(f"| {what} | {hourly} | {passes} | {ratio} |")
    for seconds in (OBJECTS_INTERVAL, RELEASES_INTERVAL):
        per_hour = round(lm["requests_per_poll"] * 3600 / seconds)
        what = f"objects, {lm['files']:,} files, poll {seconds:g} s"
        rows.append(f"| {what} | {per_hour} | {3600 / seconds:g} | {lm['requests_per_poll']} |")
    rows.append(f"\nSQS calls of one queue while idle: {sqs} / hour (20 s long polls)")
    return "\n".join(rows)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    bucket = f"fleet-{uuid.uuid4().hex[:8]}"
    with seaweedfs_server(workdir / "weed") as weed, moto_server() as moto:
        create_bucket(s3_client(weed.endpoint_url), bucket)
        result: dict[str, Any] = {"instances": args.instances, "files": args.files}
        result |= await poll_and_idle(args, weed.endpoint_url, bucket, workdir)
        result |= await events(args, weed.endpoint_url, bucket, workdir, moto.endpoint_url)
        result["list"] = await list_mode(args.list_files, weed.endpoint_url, bucket, workdir)
    del result["dests"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--files", type=int, default=40, help="files per release")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of each idle window")
    parser.add_argument("--list-files", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with sdk_credentials(), tempfile.TemporaryDirectory(prefix="dagmirror-fleet-") as tmp:
        started = time.monotonic()
        result = asyncio.run(run(args, Path(tmp)))
        result["seconds"] = round(time.monotonic() - started, 1)
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
