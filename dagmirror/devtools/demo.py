"""`make demo`: the whole story in about a minute, told by the real commands as a person runs them.

A local S3 server (moto, on 127.0.0.1); the analytics team's repository of DAGs with its `dagmirror.toml`;
three Airflow instances running `dagmirror run` (two on dev, one on production); a deploy to dev that both
dev instances pick up within seconds (`--wait`); `dagmirror fleet`; a broken DAG refused before anything is
uploaded; the fix; a promote to production; a rollback; then everything is stopped, each process by the pid
we started it with, whatever happens. Nothing is printed as raw JSON.

Files: the repository in ./demo-src/analytics-dags, each instance's DAG folder in ./demo-dags/<instance>,
their logs in ./demo-dags/logs.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from dagmirror.devtools.corpus import create_bucket, sample_dags
from dagmirror.devtools.servers import moto_server, s3_client, s3_env

BUCKET = "dagmirror-demo"
INSTANCES = {"worker-1": "dev", "worker-2": "dev", "prod-1": "production"}
TOML = f"""[deploy]
bucket_url = "s3://{BUCKET}/dags/"
environments = ["dev", "production"]
root = "dags"
"""
BROKEN = b'from airflow.sdk import dag\n\n@dag(schedule="@daily"\ndef broken_report():\n    pass\n'


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def say(text: str) -> None:
    print(f"  {text}", flush=True)


class Story:
    """The processes and folders of one telling; `stop` ends every process it started, by pid."""

    def __init__(self, endpoint: str, here: Path) -> None:
        self.s3 = s3_client(endpoint)
        self.env = s3_env(endpoint) | {"PYTHONUNBUFFERED": "1"}  # stdout and stderr interleave as written
        self.repo = here / "demo-src" / "analytics-dags"
        self.mirrors = here / "demo-dags"
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def dagmirror(self, *args: str, expect: int = 0) -> str:
        """Run `dagmirror ARGS` in the repository, show the command and its output; its output."""
        print(f"$ dagmirror {' '.join(args)}", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "dagmirror", *args],
            cwd=self.repo, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            check=False, timeout=120,
        )  # fmt: skip
        for line in proc.stdout.splitlines():
            say(line)
        if proc.returncode != expect:
            raise SystemExit(f"demo: `dagmirror {args[0]}` exited {proc.returncode}, expected {expect}")
        if expect:
            say(f"(exit {proc.returncode})")
        return proc.stdout

    def start(self, instance: str, env: str) -> None:
        source = f"s3://{BUCKET}/dags/{env}"
        args = ["run", source, str(self.mirrors / instance), "--instance-id", instance]
        args += ["--interval", "1", "--heartbeat", "5", "--http", "off"]
        log = (self.mirrors / "logs" / f"{instance}.log").open("wb")
        self._logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagmirror", *args], env=self.env, stdout=log, stderr=log
        )
        self.daemons[instance] = proc
        say(f"$ dagmirror run {source} demo-dags/{instance} --instance-id {instance} --interval 1 ...")
        say(f"  {instance} started (pid {proc.pid}), following {env}")

    def wait_for_statuses(self, seconds: float = 30) -> None:
        """Until every instance has published its first status (after its first pass)."""
        deadline = time.monotonic() + seconds
        for instance, env in INSTANCES.items():
            key = f"metadata/fleet/dags/{env}/{instance}.json"
            while "Contents" not in self.s3.list_objects_v2(Bucket=BUCKET, Prefix=key):
                if self.daemons[instance].poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"demo: {instance} did not report; see demo-dags/logs/{instance}.log")
                time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM each instance (its staged shutdown writes a last 'stopped' status), SIGKILL a straggler."""
        for instance, proc in self.daemons.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(timeout=10)
            say(f"{instance} (pid {proc.pid}) stopped, exit {code}")
        for log in self._logs:
            log.close()


def repository(repo: Path) -> None:
    """The analytics team's repository: its DAGs, the shared helpers, and `dagmirror.toml`."""
    shutil.rmtree(repo.parent, ignore_errors=True)
    files = {p: b for p, b in sample_dags().items() if p.startswith(("analytics/", "common/"))}
    for rel, body in files.items():
        (repo / "dags" / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / "dags" / rel).write_bytes(body)
    (repo / "dagmirror.toml").write_text(TOML)
    git = shutil.which("git")
    if git is not None:  # the deploy record names the commit; without git it says so, and the story goes on
        ident = ["-c", "user.name=Ana Lytics", "-c", "user.email=ana@example.com"]
        for args in (["init", "-q"], ["add", "."], [*ident, "commit", "-qm", "analytics DAGs"]):
            subprocess.run([git, *args], cwd=repo, capture_output=True, check=False)
    say(f"demo-src/analytics-dags: dagmirror.toml and {len(files)} files under dags/:")
    for rel in sorted(files):
        say(f"  dags/{rel}")
    for line in TOML.splitlines():
        say(f"  dagmirror.toml | {line}")


def release_of(output: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.startswith("  release "))


def tell(story: Story) -> None:
    step("the analytics team's repository")
    repository(story.repo)

    step("three Airflow instances run `dagmirror run`: worker-1 and worker-2 on dev, prod-1 on production")
    create_bucket(story.s3, BUCKET)
    (story.mirrors / "logs").mkdir(parents=True)
    for instance, env in INSTANCES.items():
        story.start(instance, env)
    story.wait_for_statuses()

    step("deploy to dev, and wait until every dev instance has it")
    story.dagmirror("deploy", "dags/", "--env", "dev", "--wait", "30")
    for instance in ("worker-1", "worker-2"):
        count = sum(1 for p in (story.mirrors / instance).rglob("*.py") if ".dagmirror" not in p.parts)
        say(f"demo-dags/{instance}: {count} DAG files")

    step("the fleet view: who runs which release")
    story.dagmirror("fleet", "--env", "dev")

    step("promote dev to production")
    first = release_of(story.dagmirror("promote", "--from", "dev", "--to", "production", "--wait", "30"))

    step("a broken DAG is refused before anything is uploaded")
    broken = story.repo / "dags" / "analytics" / "broken_report.py"
    broken.write_bytes(BROKEN)
    story.dagmirror("deploy", "dags/", "--env", "dev", expect=4)
    listed = story.s3.list_objects_v2(Bucket=BUCKET, Prefix="dags/dev/analytics/broken_report.py")
    say(f"s3://{BUCKET}/dags/dev/analytics/broken_report.py exists: {'Contents' in listed}")

    step("fixed: a change that needs a new helper file, deployed to dev as one release")
    broken.unlink()
    (story.repo / "dags" / "analytics" / "helpers.py").write_text("RETRIES = 3\n")
    daily = story.repo / "dags" / "analytics" / "daily_revenue.py"
    daily.write_text(daily.read_text() + "\nfrom analytics.helpers import RETRIES  # needs helpers.py\n")
    story.dagmirror("deploy", "dags/", "--env", "dev", "--wait", "30")

    step("promote it to production")
    story.dagmirror("promote", "--from", "dev", "--to", "production", "--wait", "30")
    story.dagmirror("history", "--env", "production")

    step("something is wrong in production: roll back to the first release")
    story.dagmirror("rollback", "--env", "production", "--to", first, "--wait", "30")
    helpers = story.mirrors / "prod-1" / "analytics" / "helpers.py"
    say(f"demo-dags/prod-1/analytics/helpers.py exists: {helpers.exists()}")


def main() -> None:
    here = Path.cwd()
    started = time.monotonic()
    shutil.rmtree(here / "demo-dags", ignore_errors=True)
    step("a local S3 server on 127.0.0.1")
    with moto_server() as server:
        say(f"{server.name} server at {server.endpoint_url} (pid {server.pid})")
        story = Story(server.endpoint_url, here)
        try:
            tell(story)
        finally:
            step("stopping everything, each process by its pid")
            story.stop()
        story.dagmirror("fleet", "--env", "dev", expect=5)
    say(f"{server.name} server (pid {server.pid}) stopped")
    print(
        f"\nThe story took {time.monotonic() - started:.0f} s. The instances' DAG folders stay in demo-dags/."
    )


if __name__ == "__main__":
    main()
