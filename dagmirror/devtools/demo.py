"""`make demo`: a real S3 server on loopback, sample DAGs in a bucket, a mirror, an incremental pass, then
the same folder published as a release with `dagmirror deploy` and mirrored as one set.

Everything runs through the real `dagmirror` commands, exactly as a user would run them; the server we
start is stopped by pid at the end, whatever happens.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson

from dagmirror.devtools.corpus import create_bucket, delete_keys, sample_dags, upload
from dagmirror.devtools.servers import moto_server, s3_client, s3_env

BUCKET = "dagmirror-demo"
PREFIX = "dags/dev/"


def _step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def _sync(endpoint: str, dest: Path) -> None:
    cmd = [sys.executable, "-m", "dagmirror", "sync", f"s3://{BUCKET}/{PREFIX}", str(dest), "--json"]
    print("$ dagmirror sync", f"s3://{BUCKET}/{PREFIX}", dest, "--json", flush=True)
    proc = subprocess.run(cmd, env=s3_env(endpoint), check=False, capture_output=True, text=True)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit(f"demo: dagmirror sync exited {proc.returncode}")
    r = orjson.loads(proc.stdout.strip().splitlines()[-1])
    release = f", release {r['release'][:12]}" if r.get("release") else ""
    print(
        f"  mode {r.get('mode')}{release}: downloaded {r['downloaded']}, unchanged {r['unchanged']}, "
        f"deleted {r['deleted']}, failed {r['failed']}; requests {r['requests']}"
    )


def _deploy(endpoint: str, src: Path) -> None:
    args = ["deploy", str(src), "--env", "dev", "--root", str(src), "--bucket-url", f"s3://{BUCKET}/dags/"]
    print("$ dagmirror deploy", src.name, "--env dev --root", src.name, "--bucket-url", args[-1], flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "dagmirror", *args],
        env=s3_env(endpoint),
        check=False,
        capture_output=True,
        text=True,
    )
    sys.stderr.write(proc.stderr)
    print(
        "\n".join(
            proc.stdout.strip().splitlines()[:1]
            + [line for line in proc.stdout.splitlines() if "release" in line]
        )
    )
    if proc.returncode != 0:
        raise SystemExit(f"demo: dagmirror deploy exited {proc.returncode}")


def _tree(dest: Path) -> None:
    files = sorted(p for p in dest.rglob("*") if p.is_file() and ".dagmirror" not in p.parts)
    for path in files:
        print(f"  {path.stat().st_size:>6}  {path.relative_to(dest)}")
    print(f"  {len(files)} files")


def main() -> None:
    dest = Path("demo-dags").resolve()
    shutil.rmtree(dest, ignore_errors=True)
    _step("starting moto server (a real S3 API over HTTP) on 127.0.0.1")
    with moto_server() as server:
        print(f"  {server.name} at {server.endpoint_url} (pid {server.pid})")
        _objects(server.endpoint_url, dest)
        _releases(server.endpoint_url, dest)
        _step("stopping moto server")
    print(f"\nThe mirror stays in {dest}; its state is in {dest / '.dagmirror' / 'state.json'}.")


def _objects(endpoint: str, dest: Path) -> None:
    """Today's object mirror: a cold pass, S3 changed behind it, an incremental pass, a no-op pass."""
    files = sample_dags()
    client = s3_client(endpoint)
    create_bucket(client, BUCKET)
    upload(client, BUCKET, PREFIX, files)
    print(f"  uploaded {len(files)} files to s3://{BUCKET}/{PREFIX}")

    _step("cold pass: mirror everything into ./demo-dags")
    _sync(endpoint, dest)
    _tree(dest)

    _step("change S3: one same-size edit, two new DAGs, two deletions")
    edited_key = "analytics/daily_revenue.py"
    edited = files[edited_key].replace(b'"retries": 2', b'"retries": 3')
    if len(edited) != len(files[edited_key]) or edited == files[edited_key]:
        edited = files[edited_key].replace(b"owned by", b"OWNED BY")
    client.put_object(Bucket=BUCKET, Key=PREFIX + edited_key, Body=edited)
    print(f"  edited   {edited_key} (same size: {len(edited)} bytes)")
    for name, source in (
        ("analytics/new_dashboard.py", "analytics/weekly_kpis.py"),
        ("finance/new_tax_report.py", "finance/fx_rates.py"),
    ):
        body = files[source].replace(
            source.rsplit("/", 1)[1][:-3].encode(), name.rsplit("/", 1)[1][:-3].encode()
        )
        client.put_object(Bucket=BUCKET, Key=PREFIX + name, Body=body)
        print(f"  added    {name}")
    gone = ["ml/serving/batch_scoring.py", "platform/cost_export.py"]
    delete_keys(client, BUCKET, [PREFIX + k for k in gone])
    for key in gone:
        print(f"  deleted  {key}")

    _step("incremental pass: only the changes move")
    _sync(endpoint, dest)

    _step("no-op pass: nothing changed, only LIST requests (and one probe for a release pointer)")
    _sync(endpoint, dest)
    _tree(dest)


def _releases(endpoint: str, dest: Path) -> None:
    """The same folder published as one release, mirrored as one set, then polled with one request."""
    _step("releases: `dagmirror deploy` publishes the folder as one immutable release")
    src = dest.with_name("demo-src")
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(dest, src, ignore=shutil.ignore_patterns(".dagmirror"))
    (src / "analytics" / "helpers.py").write_text("RETRIES = 3\n")
    daily = src / "analytics" / "daily_revenue.py"
    daily.write_text(daily.read_text() + "\nfrom analytics.helpers import RETRIES  # needs helpers.py too\n")
    print("  changed analytics/daily_revenue.py to import the new analytics/helpers.py: one set")
    _deploy(endpoint, src)

    _step("the mirror follows the release (no new flag): both files arrive together, verified")
    _sync(endpoint, dest)

    _step("no-op poll of a release: one conditional GET, at any number of files")
    _sync(endpoint, dest)


if __name__ == "__main__":
    main()
