"""`dagmirror deploy|promote|rollback --wait SECONDS` with real `dagmirror run` daemons over HTTP (moto
server): converging, timing out with the laggards listed and the silent instances apart, releases and plain
files. The wait loop itself, with an injected clock, is at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from dagmirror.errors import SourceUnavailable
from dagmirror.fleet.converge import FleetView, Seen, Target, judge
from dagmirror.fleet.status import Status
from dagmirror.fleet.wait import wait_for_fleet

from .daemon import Daemon
from .helpers import Run, dagmirror, read_tree, write_tree

V1 = {"team/a.py": b"a = 1\n", "team/b.py": b"b = 1\n"}
V2 = {"team/a.py": b"a = 2\n", "team/c.py": b"c = 2\n"}


@contextmanager
def daemons(bucket: str, env: str, endpoint: str, dests: list[Path], *flags: str) -> Iterator[list[Daemon]]:
    with ExitStack() as stack:
        started = [
            stack.enter_context(
                Daemon(f"s3://{bucket}/dags/{env}/", dest, endpoint, "--interval", "0.5", "--instance-id",
                       dest.name, *flags)
            )
            for dest in dests
        ]  # fmt: skip
        for d in started:
            d.until(lambda d=d: d.get("/readyz")[0] == 200, what="ready")
        yield started


def cli(bucket: str, endpoint: str, *args: str | Path) -> Run:
    return dagmirror(*args, "--bucket-url", f"s3://{bucket}/dags/", endpoint=endpoint, timeout=120)


def put_status(s3: Any, bucket: str, env: str, instance: str, *, written: float, heartbeat: float) -> None:
    status = Status(instance, f"dags/{env}/", written, heartbeat, written - 60, "0.1.0", mode="objects")
    s3.put_object(Bucket=bucket, Key=f"metadata/fleet/dags/{env}/{instance}.json", Body=status.encode())


def test_deploy_wait_returns_once_every_live_instance_reports_the_release(
    bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    src = write_tree(tmp_path / "src", V1)
    dests = [tmp_path / "pod-a", tmp_path / "pod-b"]
    with daemons(bucket, "production", moto_endpoint, dests):
        run = cli(bucket, moto_endpoint, "deploy", src, "--env", "production", "--root", src, "--wait", "60")
        assert run.code == 0, run.stdout + run.stderr
        release = next(line.split()[1] for line in run.stdout.splitlines() if line.startswith("  release "))
        assert run.stdout.splitlines()[-1] == f"production: converged: 2/2 on {release[:12]} (#1)"
        assert (
            f"production: waiting up to 60s for every live instance to report {release[:12]} (#1)"
            in run.stderr
        )
        assert all(read_tree(d) == V1 for d in dests)
        # Nothing to deploy: the release the pointer names is the one to wait for, and they have it.
        run = cli(bucket, moto_endpoint, "deploy", src, "--env", "production", "--root", src, "--wait", "60")
        assert run.code == 0, run.stdout + run.stderr
        assert run.stdout.splitlines()[0] == "production: nothing to deploy: 2 files unchanged (no record)"
        assert run.stdout.splitlines()[-1] == f"production: converged: 2/2 on {release[:12]} (#1)"

        write_tree(src, {"team/a.py": V2["team/a.py"], "team/c.py": V2["team/c.py"]})
        (src / "team/b.py").unlink()
        args = ("deploy", src, "--env", "production", "--root", src, "--wait", "60", "--json")
        run = cli(bucket, moto_endpoint, *args)
        assert run.code == 0, run.stdout + run.stderr
        report = run.report
        assert report["fleet"]["converged"] is True
        assert report["fleet"]["target"]["release"] == report["release"]
        assert {i["instance"]: i["state"] for i in report["fleet"]["instances"]} == {
            "pod-a": "current",
            "pod-b": "current",
        }
        assert all(read_tree(d) == V2 for d in dests)


def test_wait_times_out_with_the_laggards_listed_and_silent_instances_apart(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    src = write_tree(tmp_path / "src", V1)
    with daemons(bucket, "production", moto_endpoint, [tmp_path / "pod-a"]):
        # A dead instance whose last status is recent (it will not report) and one silent for an hour.
        put_status(s3, bucket, "production", "pod-dead", written=time.time(), heartbeat=300)
        put_status(s3, bucket, "production", "pod-gone", written=time.time() - 3600, heartbeat=300)
        started = time.monotonic()
        run = cli(bucket, moto_endpoint, "deploy", src, "--env", "production", "--root", src, "--wait", "3")
        assert time.monotonic() - started < 60  # ends at the limit, not at the dead instance's silence
    assert run.code == 5, run.stdout + run.stderr
    assert "production: deploy " in run.stdout  # the deploy itself happened and was reported first
    errors = [line for line in run.stderr.splitlines() if line.startswith("dagmirror: error:")]
    assert errors[0].startswith("dagmirror: error: production: not converged after 3s: 1/3 on ")
    assert errors[0].endswith(", 1 lagging, 1 silent for 60 min")
    assert errors[1].startswith("dagmirror: error:   lagging pod-dead on (objects), ")
    assert len(errors) == 2
    assert any(
        line.startswith("  silent (not waited on): pod-gone on (objects), 60 min ago")
        for line in run.stderr.splitlines()
    )


def test_promote_and_rollback_wait_for_the_release_they_made_live(
    bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    src = write_tree(tmp_path / "src", V1)
    dest = tmp_path / "prod-1"
    with daemons(bucket, "production", moto_endpoint, [dest]):
        first = cli(bucket, moto_endpoint, "deploy", src, "--env", "dev", "--root", src, "--json")
        assert first.code == 0, first.stderr
        promoted = cli(
            bucket, moto_endpoint, "promote", "--from", "dev", "--to", "production", "--wait", "60", "--json"
        )
        assert promoted.code == 0, promoted.stdout + promoted.stderr
        assert promoted.report["fleet"]["converged"] is True
        assert read_tree(dest) == V1

        write_tree(src, V2)
        assert cli(bucket, moto_endpoint, "deploy", src, "--env", "dev", "--root", src).code == 0
        run = cli(bucket, moto_endpoint, "promote", "--from", "dev", "--to", "production", "--wait", "60")
        assert run.code == 0, run.stdout + run.stderr
        assert read_tree(dest) == V1 | V2

        r1 = promoted.report["release"]  # production's own release of V1 (a release names its prefix)
        run = cli(bucket, moto_endpoint, "rollback", "--env", "production", "--to", r1, "--wait", "60")
        assert run.code == 0, run.stdout + run.stderr
        assert run.stdout.splitlines()[-1] == f"production: converged: 1/1 on {r1[:12]} (#3)"
        assert read_tree(dest) == V1


def test_without_releases_an_instance_is_current_after_a_pass_that_started_after_the_deploy(
    bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    src = write_tree(tmp_path / "src", V1)
    dest = tmp_path / "pod-a"
    with daemons(bucket, "production", moto_endpoint, [dest], "--mode", "objects"):
        args = ("deploy", src, "--env", "production", "--root", src, "--no-releases", "--wait", "60")
        run = cli(bucket, moto_endpoint, *args)
        assert run.code == 0, run.stdout + run.stderr
        assert run.stdout.splitlines()[-1] == "production: converged: 1/1 on a pass after the deploy"
        assert read_tree(dest) == V1


def test_a_dry_run_does_not_wait(bucket: str, moto_endpoint: str, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", V1)
    run = cli(
        bucket, moto_endpoint, "deploy", src, "--env", "dev", "--root", src, "--dry-run", "--wait", "60"
    )
    assert run.code == 0, run.stderr
    assert "waiting" not in run.stderr
    assert run.stdout.startswith("dev: dry run of a deploy")
    assert "converged" not in run.stdout


# -- the loop, with an injected clock ---------------------------------------------------------------------
R = "c" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def view(*releases: str | None) -> FleetView:
    seen = [
        Seen(
            f"i{n}", 0, Status(f"i{n}", "p/", 100.0, 60.0, 0.0, "v", release=r, release_seq=1 if r else None)
        )
        for n, r in enumerate(releases)
    ]
    return judge("p/", seen, Target(R, 1), 100.0)


async def test_the_loop_returns_the_first_converged_view_and_reports_each_look() -> None:
    clock = Clock()
    looks = iter([view(R, None), view(R, None), view(R, R)])
    seen: list[tuple[str, float]] = []

    async def look() -> FleetView:
        return next(looks)

    got = await wait_for_fleet(
        look, 30, on_progress=lambda v, t: seen.append((str(v.converged), t)), on_trouble=lambda e, t: None,
        clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    assert got is not None
    assert got.converged
    assert clock.sleeps == [1.0, 1.0]
    assert seen == [("False", 0.0), ("False", 1.0), ("True", 2.0)]


async def test_the_loop_gives_up_at_the_limit_and_survives_a_failed_look() -> None:
    clock = Clock()
    troubles: list[str] = []
    calls = 0

    async def look() -> FleetView:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise SourceUnavailable("LIST: 503 SlowDown")
        return view(None)

    got = await wait_for_fleet(
        look, 2.5, on_progress=lambda v, t: None, on_trouble=lambda e, t: troubles.append(str(e)),
        clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    assert got is not None
    assert not got.converged
    assert clock.sleeps == [1.0, 1.0, 0.5]  # the last sleep ends at the limit, then one last look
    assert troubles == ["LIST: 503 SlowDown"]
    assert calls == 4
