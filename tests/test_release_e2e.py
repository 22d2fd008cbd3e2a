"""Both halves of releases through the real CLI against moto: an existing bucket switches to releases with
one `dagmirror deploy`; `dagmirror sync` (no new flag) then follows the release, polls with one request, and
is not moved by a plain object rewritten behind the release's back; a rollback is a pointer move."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagmirror.cli.app import ExitCode
from dagmirror.devtools.proxy import S3Proxy
from dagmirror.manifest import PROBE_KEY

from .helpers import Run, dagmirror, put_all, read_tree, write_tree

FILES = {"team/a.py": b"import helper\n", "team/helper.py": b"X = 1\n", "team/sub/b.py": b"b = 2\n"}


def deploy(bucket: str, endpoint: str, *args: str | Path) -> Run:
    return dagmirror("deploy", *args, "--bucket-url", f"s3://{bucket}/dags/", "--json", endpoint=endpoint)


def sync(bucket: str, endpoint: str, dest: Path) -> Run:
    return dagmirror("sync", f"s3://{bucket}/dags/dev/", dest, "--json", endpoint=endpoint)


def test_one_deploy_switches_a_bucket_and_sync_follows_the_release_with_one_request_polls(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    put_all(s3, bucket, "dags/dev/", {"old.py": b"old = 1\n"})  # a bucket mirrored by listing until now
    src = write_tree(tmp_path / "src", FILES)
    first = deploy(bucket, moto_endpoint, src / "team", "--env", "dev", "--root", src)
    assert first.code == 0, first.stderr
    dest = tmp_path / "dest"
    run = sync(bucket, moto_endpoint, dest)
    assert run.code == 0, run.stderr
    assert (run.report["mode"], run.report["release"]) == ("releases", first.report["release"])
    assert read_tree(dest) == FILES | {"old.py": b"old = 1\n"}  # the release holds what the bucket had

    again = sync(bucket, moto_endpoint, dest)
    assert again.report["requests"] == {"GET 304": 1}

    s3.put_object(Bucket=bucket, Key="dags/dev/team/helper.py", Body=b"X = 'tampered'\n")  # not a release
    assert sync(bucket, moto_endpoint, dest).report["requests"] == {"GET 304": 1}
    assert read_tree(dest)["team/helper.py"] == FILES["team/helper.py"]

    (src / "team" / "helper.py").write_bytes(b"X = 2\n")
    (src / "team" / "a.py").write_bytes(b"import helper  # needs X = 2\n")
    second = deploy(bucket, moto_endpoint, src / "team", "--env", "dev", "--root", src)
    assert second.code == 0, second.stderr
    moved = sync(bucket, moto_endpoint, dest)
    assert moved.report["release"] == second.report["release"]
    tree = read_tree(dest)
    assert (tree["team/helper.py"], tree["team/a.py"]) == (b"X = 2\n", b"import helper  # needs X = 2\n")

    back = dagmirror(
        "rollback", "--env", "dev", "--to", first.report["release"], "--bucket-url", f"s3://{bucket}/dags/",
        "--json", endpoint=moto_endpoint,
    )  # fmt: skip
    assert back.code == 0, back.stderr
    restored = sync(bucket, moto_endpoint, dest)
    assert restored.report["release"] == first.report["release"]
    assert read_tree(dest) == FILES | {"old.py": b"old = 1\n"}


def test_a_server_ignoring_conditional_writes_is_detected_over_http_and_nothing_is_published(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    """moto behind a proxy that drops If-Match / If-None-Match, as a server ignoring them would: the probe
    finds out, the deploy stops with one line before any body, manifest, pointer or plain file, and only
    the explicit opt-in publishes (saying it has no compare-and-swap)."""
    src = write_tree(tmp_path / "src", FILES)
    with S3Proxy(moto_endpoint, ignore_conditions=True) as proxy:
        refused = deploy(bucket, proxy.endpoint_url, src / "team", "--env", "dev", "--root", src)
        assert refused.code == ExitCode.USAGE, refused.stderr
        assert refused.stderr.count("\n") == 1
        assert "ignores conditional writes (If-None-Match)" in refused.stderr
        listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        assert [o["Key"] for o in listed] == [PROBE_KEY]

        allowed = deploy(
            bucket, proxy.endpoint_url, src / "team", "--env", "dev", "--root", src,
            "--allow-no-conditional-writes",
        )  # fmt: skip
        assert allowed.code == 0, allowed.stderr
        assert any("without compare-and-swap" in w for w in allowed.report["validation"]["warnings"])
    mirrored = sync(bucket, moto_endpoint, tmp_path / "dest")
    assert mirrored.report["release"] == allowed.report["release"]
    assert read_tree(tmp_path / "dest") == FILES


def test_the_same_proxy_passing_conditions_through_lets_a_deploy_publish(
    bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    """The control for the test above: the proxy alone changes nothing."""
    src = write_tree(tmp_path / "src", FILES)
    with S3Proxy(moto_endpoint) as proxy:
        run = deploy(bucket, proxy.endpoint_url, src / "team", "--env", "dev", "--root", src)
    assert run.code == 0, run.stderr
    assert not any("compare-and-swap" in w for w in run.report["validation"]["warnings"])
