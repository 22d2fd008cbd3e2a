"""`--switch symlink` against moto server over HTTP: DEST is a link to an immutable generation of a whole
release, switched by one rename; older generations stay for a grace period; a plain DEST is moved aside,
never deleted; kill -9 anywhere leaves DEST naming a whole generation and the next pass converges."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dagmirror import Mirror, MirrorConfig
from dagmirror.devtools.servers import s3_env
from dagmirror.errors import ConfigError
from dagmirror.models import SyncReport
from dagmirror.retry import RetryPolicy

from .helpers import dagmirror, no_sleep, read_tree, sdk_credentials
from .releases import publish

PREFIX = "dags/prod/"
R1 = {f"team{t}/dag_{i}.py": f"# v1 team {t} dag {i}\n".encode() for t in range(3) for i in range(5)}
R1["common/helpers.py"] = b"RELEASE = 1\n"
R2 = {**R1, "common/helpers.py": b"RELEASE = 2\n", "team0/dag_new.py": b"# new\n"}
del R2["team2/dag_4.py"]


@pytest.fixture(autouse=True)
def credentials() -> Iterator[None]:
    with sdk_credentials():
        yield


def config(bucket: str, endpoint: str, dest: Path, **kw: Any) -> MirrorConfig:
    kw.setdefault("retry", RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0))
    kw.setdefault("switch", "symlink")
    return MirrorConfig.create(f"s3://{bucket}/{PREFIX}", dest, endpoint_url=endpoint, fsync=False, **kw)


async def sync(bucket: str, endpoint: str, dest: Path, *, later: float = 0.0, **kw: Any) -> SyncReport:
    cfg = config(bucket, endpoint, dest, **kw)
    async with Mirror(cfg, sleep=no_sleep, clock=lambda: time.time() + later) as mirror:
        return await mirror.sync_once()


def generations(dest: Path) -> list[str]:
    return sorted(os.listdir(dest.parent / f".{dest.name}.dagmirror" / "generations"))


def edit_in_place(path: Path, data: bytes) -> None:
    with path.open("r+b") as fh:
        fh.write(data)


def target(dest: Path) -> str:
    return os.readlink(dest)


async def test_dest_becomes_a_relative_link_to_a_whole_generation_and_a_no_op_poll_builds_nothing(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    release = publish(s3, bucket, PREFIX, R1)
    dest = tmp_path / "dags"
    report = await sync(bucket, moto_endpoint, dest)
    assert (report.release, report.generation, report.failed) == (release, f"1-{release[:12]}", 0)
    assert dest.is_symlink()
    assert target(dest) == f".dags.dagmirror/generations/1-{release[:12]}"
    assert read_tree(dest) == R1
    assert not (dest / ".dagmirror").exists()  # state and content store stay in the work tree
    again = await sync(bucket, moto_endpoint, dest)
    assert again.requests == {"GET 304": 1}
    assert (again.generation, generations(dest)) == (report.generation, [report.generation])


async def test_a_new_release_is_a_new_generation_hard_linking_unchanged_files_and_the_old_one_stays(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    r1 = publish(s3, bucket, PREFIX, R1)
    dest = tmp_path / "dags"
    await sync(bucket, moto_endpoint, dest)
    old = dest.resolve()
    r2 = publish(s3, bucket, PREFIX, R2, seq=2)
    report = await sync(bucket, moto_endpoint, dest)
    assert report.generation == f"2-{r2[:12]}"
    assert read_tree(dest) == R2
    assert read_tree(old) == R1  # a parse in flight keeps reading release 1, whole
    assert generations(dest) == sorted([f"1-{r1[:12]}", f"2-{r2[:12]}"])
    same = (dest / "team1/dag_1.py").stat().st_ino == (old / "team1/dag_1.py").stat().st_ino
    assert same  # unchanged: one inode for both generations
    assert (dest / "common/helpers.py").stat().st_ino != (old / "common/helpers.py").stat().st_ino


async def test_generations_beyond_keep_are_removed_once_their_grace_has_passed(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    dest = tmp_path / "dags"
    for seq in range(1, 5):
        publish(s3, bucket, PREFIX, {**R1, "common/helpers.py": f"RELEASE = {seq}\n".encode()}, seq=seq)
        report = await sync(bucket, moto_endpoint, dest, keep_generations=2)
    assert len(generations(dest)) == 4  # all younger than the grace (1 hour)
    report = await sync(bucket, moto_endpoint, dest, keep_generations=2, later=7200)
    assert len(report.generations_removed) == 2
    assert generations(dest) == sorted([*report.generations_removed, *generations(dest)])[2:]
    assert read_tree(dest)["common/helpers.py"] == b"RELEASE = 4\n"


async def test_a_file_edited_inside_the_live_generation_is_repaired_in_a_new_generation(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    release = publish(s3, bucket, PREFIX, R1)
    dest = tmp_path / "dags"
    await sync(bucket, moto_endpoint, dest)
    edit_in_place(dest / "common/helpers.py", b"HACKED")  # the work tree shares the inode
    report = await sync(bucket, moto_endpoint, dest)
    assert report.requests == {"GET 304": 1}
    assert report.generation == f"1-{release[:12]}-2"
    assert read_tree(dest) == R1


def test_switch_symlink_with_mode_objects_is_one_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs --mode auto or releases, not objects"):
        MirrorConfig.create("s3://bucket1/dags/", tmp_path, switch="symlink", mode="objects")
    with pytest.raises(ConfigError, match="switch: must be 'files' or 'symlink'"):
        MirrorConfig.create("s3://bucket1/dags/", tmp_path, switch="hardlink")


def test_cli_refuses_switch_symlink_with_mode_objects_with_exit_2(moto_endpoint: str, tmp_path: Path) -> None:
    args = ["s3://bucket1/dags/", tmp_path / "d", "--switch", "symlink", "--mode", "objects"]
    run = dagmirror("sync", *args, endpoint=moto_endpoint)
    assert run.code == 2
    assert "needs --mode auto or releases" in run.stderr


async def test_a_prefix_without_releases_is_not_switched(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}a.py", Body=b"x")
    cli = dagmirror(
        "sync", f"s3://{bucket}/{PREFIX}", tmp_path / "d", "--switch", "symlink", endpoint=moto_endpoint
    )
    assert cli.code == 1
    assert "--switch symlink switches releases" in cli.stderr
    assert not (tmp_path / "d").is_symlink()


async def test_a_plain_dest_is_moved_aside_whole_on_first_use_and_nothing_is_deleted(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    release = publish(s3, bucket, PREFIX, R1)
    dest = tmp_path / "dags"
    await sync(bucket, moto_endpoint, dest, switch="files")  # a files-mode mirror first
    (dest / "mine.py").write_bytes(b"not dagmirror's")
    report = await sync(bucket, moto_endpoint, dest)
    assert dest.is_symlink()
    assert read_tree(dest) == R1
    assert report.generation == f"1-{release[:12]}"
    home = tmp_path / ".dags.dagmirror"
    (aside,) = [p for p in home.iterdir() if p.name.startswith("converted-")]
    assert read_tree(aside) == {**R1, "mine.py": b"not dagmirror's"}
    assert (aside / ".dagmirror/state.json").exists()


KILLER = """
import os, runpy, signal, sys
import dagmirror.generations as g
point, at, calls = os.environ["KILL_POINT"], int(os.environ.get("KILL_AT", "1")), [0]
def killing(real):
    def wrapper(*a, **kw):
        calls[0] += 1
        if point in ("link", "exchange") and calls[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*a, **kw)
        if point in ("symlink", "prune") and calls[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapper
if point == "link":
    g.os.link = killing(os.link)
elif point == "symlink":  # the new link exists under its temp name, not yet renamed over DEST
    g.os.symlink = killing(os.symlink)
elif point == "prune":  # the link renamed over DEST, the pass not finished
    g.Generations._prune = killing(g.Generations._prune)
elif point == "exchange":  # a plain DEST swapped with the link, not yet moved aside
    real_aside = g.Generations._set_aside
    g.Generations._set_aside = killing(real_aside)
sys.argv = ["dagmirror", *sys.argv[1:]]
runpy.run_module("dagmirror", run_name="__main__")
"""


def killed_sync(bucket: str, endpoint: str, dest: Path, point: str, at: int = 1) -> None:
    cmd = [sys.executable, "-c", KILLER, "sync", f"s3://{bucket}/{PREFIX}", str(dest), "--switch", "symlink"]
    env = {**s3_env(endpoint), "KILL_POINT": point, "KILL_AT": str(at)}
    child = subprocess.run(
        [*cmd, "--endpoint-url", endpoint], env=env, capture_output=True, timeout=60, check=False
    )
    assert child.returncode == -9, child.stderr


@pytest.mark.parametrize(("point", "at"), [("link", 1), ("link", 9), ("symlink", 1), ("prune", 1)])
def test_kill_9_during_a_switch_leaves_dest_naming_a_whole_generation_and_the_next_pass_converges(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path, point: str, at: int
) -> None:
    publish(s3, bucket, PREFIX, R1)
    dest = tmp_path / "dags"
    assert (
        dagmirror("sync", f"s3://{bucket}/{PREFIX}", dest, "--switch", "symlink", endpoint=moto_endpoint).code
        == 0
    )
    release = publish(s3, bucket, PREFIX, R2, seq=2)
    killed_sync(bucket, moto_endpoint, dest, point, at)
    assert read_tree(dest) in (R1, R2)  # old or new, whole
    assert read_tree(dest) == (R2 if point == "prune" else R1)
    run = dagmirror(
        "sync", f"s3://{bucket}/{PREFIX}", dest, "--switch", "symlink", "--json", endpoint=moto_endpoint
    )
    assert run.code == 0, run.stderr
    assert read_tree(dest) == R2
    assert run.report["release"] == release
    assert run.report["generation"].startswith(f"2-{release[:12]}")
    assert run.report["requests"].get("GET 200", 0) <= 1  # the bodies are not fetched again
    home = tmp_path / ".dags.dagmirror"
    assert not [p for p in home.joinpath("generations").iterdir() if p.name.startswith(".building-")]
    assert not [p for p in tmp_path.iterdir() if ".switch-" in p.name]


def test_kill_9_while_converting_a_plain_dest_leaves_a_whole_tree_and_loses_nothing(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    publish(s3, bucket, PREFIX, R1)
    dest = tmp_path / "dags"
    assert dagmirror("sync", f"s3://{bucket}/{PREFIX}", dest, endpoint=moto_endpoint).code == 0
    (dest / "mine.py").write_bytes(b"mine")
    killed_sync(bucket, moto_endpoint, dest, "exchange")
    assert dest.is_symlink()
    assert read_tree(dest) == R1
    assert (
        dagmirror("sync", f"s3://{bucket}/{PREFIX}", dest, "--switch", "symlink", endpoint=moto_endpoint).code
        == 0
    )
    (aside,) = [p for p in (tmp_path / ".dags.dagmirror").iterdir() if p.name.startswith("converted-")]
    assert read_tree(aside) == {**R1, "mine.py": b"mine"}
    assert read_tree(dest) == R1


def test_switch_and_retention_come_from_toml_and_env_and_objects_mode_is_refused(tmp_path: Path) -> None:
    from dagmirror.config import load_run_config

    toml = tmp_path / "dagmirror.toml"
    toml.write_text(
        'switch = "symlink"\ngeneration_grace = 60.0\n'
        f'[[mirror]]\nsource = "s3://bucket1/d/"\ndest = "{tmp_path}/a"\n'
    )
    env = {"DAGMIRROR_KEEP_GENERATIONS": "5"}
    cfg = load_run_config(toml, env, {}).mappings[0].config
    assert (cfg.switch, cfg.keep_generations, cfg.generation_grace) == ("symlink", 5, 60.0)
    assert cfg.work_dir == tmp_path / ".a.dagmirror" / "work"
    with pytest.raises(ConfigError, match="needs --mode auto or releases"):
        load_run_config(toml, {"DAGMIRROR_MODE": "objects"}, {})


async def test_going_back_to_switch_files_while_dest_is_the_link_is_a_config_error(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    publish(s3, bucket, PREFIX, R1)
    dest = tmp_path / "dags"
    await sync(bucket, moto_endpoint, dest)
    with pytest.raises(ConfigError, match="is the link of --switch symlink"):
        config(bucket, moto_endpoint, dest, switch="files")
