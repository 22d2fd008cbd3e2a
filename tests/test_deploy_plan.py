"""The pure parts of `dagmirror deploy`: plan, validation, settings and records, tested with literals."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from dagmirror.config.deploy import EnvPolicy, config_path, load_deploy_config
from dagmirror.deploy.airflow import AirflowResult, dag_problems, parse_output
from dagmirror.deploy.plan import (
    DeployPlan,
    Op,
    Origin,
    Wanted,
    compare,
    live_after,
    live_by_path,
    plan_deploy,
    settle,
)
from dagmirror.deploy.record import FileResult, StoredDeploy, parse_record, record_key, wanted_from_record
from dagmirror.deploy.validate import budget_problems, collision_problems, compile_problems, key_problems
from dagmirror.errors import ConfigError
from dagmirror.source import LiveObject, ObjectHead

PREFIX = "dags/production/"


def md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def wanted(path: str, body: bytes, xxh3: str = "x") -> Wanted:
    return Wanted(path, len(body), md5(body), xxh3, body)


def live(path: str, body: bytes, version: str = "v1", etag: str | None = None) -> LiveObject:
    return LiveObject(PREFIX + path, version, etag or md5(body), len(body))


def plan(
    want: dict[str, Wanted],
    current: dict[str, LiveObject],
    scopes: tuple[str, ...] = ("",),
    *,
    wants: Callable[[str], bool] = lambda _: True,
    allow_mass_delete: bool = False,
) -> DeployPlan:
    return plan_deploy(
        want, current, scopes, wants=wants, max_fraction=0.5, allow_mass_delete=allow_mass_delete
    )


# -- plan --------------------------------------------------------------------------------------------------
def test_new_changed_and_identical_files_upload_upload_and_stay() -> None:
    p = plan(
        {
            "new.py": wanted("new.py", b"n"),
            "changed.py": wanted("changed.py", b"v2-longer"),
            "same.py": wanted("same.py", b"s"),
        },
        {"changed.py": live("changed.py", b"v1"), "same.py": live("same.py", b"s")},
    )
    assert [(s.path, s.op) for s in p.writes] == [("changed.py", Op.UPLOAD), ("new.py", Op.UPLOAD)]
    assert [s.path for s in p.unchanged] == ["same.py"]
    assert (p.deletes, p.to_check, p.guard) == ((), (), None)


def test_same_size_with_an_etag_that_is_not_the_md5_is_decided_by_the_xxh3_metadata() -> None:
    w = wanted("a.py", b"abc", xxh3="h1")
    kms = live("a.py", b"abc", etag="0" * 32)  # SSE-KMS: the ETag is not the content's MD5
    assert compare(w, kms) is None
    step = plan({"a.py": w}, {"a.py": kms}).to_check[0]
    assert settle(step, ObjectHead(kms.key, "v1", kms.etag, 3, "h1")).op is Op.UNCHANGED
    assert settle(step, ObjectHead(kms.key, "v1", kms.etag, 3, "other")).op is Op.UPLOAD
    assert settle(step, ObjectHead(kms.key, "v1", kms.etag, 3, None)).op is Op.UPLOAD
    assert settle(step, None).op is Op.UPLOAD


def test_a_copy_of_the_version_already_live_is_unchanged_and_any_other_is_copied() -> None:
    current = live("a.py", b"abc", version="v7")
    assert compare(Wanted("a.py", 3, None, None, origin=Origin(current.key, "v7")), current) is Op.UNCHANGED
    assert compare(Wanted("a.py", 3, None, None, origin=Origin(current.key, "v6")), current) is Op.COPY
    assert compare(Wanted("a.py", 3, md5(b"abc"), None, origin=Origin("x", "v1")), current) is Op.UNCHANGED


def test_a_directory_deploy_deletes_only_inside_its_folders_and_leaves_excluded_paths() -> None:
    current = {p: live(p, b"x") for p in ("team/a.py", "team/gone.py", "team/keep.pyc", "other/b.py")}
    current |= {f"team/f{i}.py": live(f"team/f{i}.py", b"x") for i in range(5)}
    want = {p: wanted(p, b"x") for p in ("team/a.py", *(f"team/f{i}.py" for i in range(5)))}
    p = plan(want, current, ("team/",), wants=lambda path: not path.endswith(".pyc"))
    assert [r.path for r in p.deletes] == ["team/gone.py"]
    assert live_after(p, current) == ["other/b.py", "team/keep.pyc"]


def test_mass_removal_trips_the_mirrors_delete_guard_unless_allowed() -> None:
    current = {f"f{i}.py": live(f"f{i}.py", b"x") for i in range(6)}
    p = plan({"f0.py": wanted("f0.py", b"x")}, current)
    assert "would delete 5 of the 6 files" in str(p.guard)
    assert plan({"f0.py": wanted("f0.py", b"x")}, current, allow_mass_delete=True).guard is None
    empty = plan({}, current)
    assert "would delete all 6 files" in str(empty.guard)


def test_keys_the_mirror_rejects_are_not_part_of_the_environment() -> None:
    objects = [LiveObject(PREFIX + "ok.py", "v", "e", 1), LiveObject(PREFIX + "../x.py", "v", "e", 1)]
    found, rejected = live_by_path(objects, PREFIX)
    assert list(found) == ["ok.py"]
    assert rejected == ["'dags/production/../x.py': '..' path segment"]


# -- validation --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../escape.py", "'..' path segment"),
        ("a//b.py", "empty path segment"),
        ("back\\slash.py", "backslash"),
        ("ctl\x01.py", "control character"),
        (".dagmirror/state.json", "reserved"),
        ("bad\udcff.py", "not valid UTF-8"),
        ("x/" * 510 + "y.py", "longer than 1024 bytes"),
    ],
)
def test_paths_the_mirror_would_reject_are_refused_with_its_reason(path: str, reason: str) -> None:
    (problem,) = key_problems([path], PREFIX)
    assert reason in problem


def test_a_file_and_a_folder_of_the_same_name_cannot_both_be_in_an_environment() -> None:
    assert collision_problems(["pkg/mod.py"], ["pkg", "other.py"], "production") == [
        "pkg (already in production): file collides with directory 'pkg/'"
    ]
    assert collision_problems(["pkg"], ["pkg/mod.py"], "production") == [
        "pkg/mod.py (already in production): path is under file 'pkg'"
    ]


def test_python_files_are_compiled_and_errors_name_file_and_line() -> None:
    errors, notes = compile_problems(
        {
            "ok.py": b"x = 1\n",
            "bad.py": b"x = 1\ndef broken(:\n",
            "nul.py": b"x = '\0'\n",
            "data.sql": b"def (",
        }
    )
    assert errors[0].startswith("bad.py:2: ")
    assert errors[1].startswith("nul.py")
    assert len(errors) == 2
    _, notes = compile_problems({"warn.py": b"import re\nP = '\\d'\n"})
    assert [n.split(" ")[0] for n in notes] == ["warn.py:2:"]


def test_budgets_limit_file_size_and_file_count_per_environment() -> None:
    policy = EnvPolicy(max_file_bytes=10, max_files=3)
    assert budget_problems({"a.py": 10, "b.py": 11}, 3, policy, "production") == [
        "b.py: 11 bytes, over the production budget of 10 bytes per file"
    ]
    assert budget_problems({}, 4, policy, "production") == [
        "production would hold 4 files, over its budget of 3"
    ]
    assert budget_problems({"a.py": 10**9}, 10**6, EnvPolicy(), "dev") == []


def test_airflow_import_errors_refuse_deployed_files_and_only_warn_for_others() -> None:
    result = AirflowResult(
        "3.3.2",
        {"a.py": ["daily"], "team/b.py": ["daily"], "c.py": ["c"], "old.py": ["o"], "x.py": ["o"]},
        {"c.py": "ModuleNotFoundError: No module named 'nope'", "old.py": "SyntaxError: bad"},
    )
    problems, notes = dag_problems(result, {"a.py", "c.py"}, "production")
    assert problems == [
        "c.py: import error: ModuleNotFoundError: No module named 'nope'",
        "dag_id 'daily' is defined by more than one file: a.py, team/b.py",
    ]
    assert notes == ["old.py (already in production): import error: SyntaxError: bad"]


def test_an_interpreter_without_airflow_is_a_clear_configuration_error() -> None:
    with pytest.raises(ConfigError, match="Airflow is not importable by /usr/bin/python3"):
        parse_output(b'@@DAGMIRROR {"missing": "No module named airflow"}\n', b"", 3, "/usr/bin/python3")
    with pytest.raises(ConfigError, match="failed: boom"):
        parse_output(b"", b"Traceback...\nboom\n", 1, "py")


# -- settings ----------------------------------------------------------------------------------------------
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dagmirror.toml"
    path.write_text(text)
    return path


def test_deploy_settings_merge_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[deploy]
bucket_url = "s3://from-file/dags/"
environments = ["dev", "production"]
max_files = 100
concurrency = 4
root = "dags"

[deploy.env.production]
max_file_bytes = 5000
airflow_check = true
""",
    )
    env = {"DAGMIRROR_DEPLOY_CONCURRENCY": "8", "DAGMIRROR_DEPLOY_MAX_FILES": "50"}
    config = load_deploy_config(path, env, {"bucket_url": "s3://from-flag/dags", "concurrency": None})
    assert (config.bucket.bucket, config.bucket.prefix) == ("from-flag", "dags/")
    assert config.concurrency == 8
    assert config.root == tmp_path / "dags"  # relative to the file, not to the working directory
    assert config.policy("production") == EnvPolicy(max_file_bytes=5000, max_files=50, airflow_check=True)
    assert config.policy("dev") == EnvPolicy(max_files=50)
    assert config.env_prefix("production") == "dags/production/"
    with pytest.raises(ConfigError, match="unknown environment 'staging'"):
        config.env_prefix("staging")


def test_every_bad_deploy_setting_is_reported_on_its_own_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[deploy]
bucket_url = "http://nope"
environments = ["dev", "../up"]
concurrency = "many"
colour = "blue"

[deploy.env.dev]
max_files = 0
shade = "dark"

[deploy.env.qa]
max_files = 1
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_deploy_config(path, {"DAGMIRROR_DEPLOY_MAX_FILES": "lots"}, {"max_delete_fraction": 2.0})
    lines = str(caught.value).splitlines()
    assert len(lines) == 9, lines
    needles = ["colour", "concurrency", "DAGMIRROR_DEPLOY_MAX_FILES", "bucket_url", "'../up'", "qa"]
    needles += ["max_delete_fraction: must be between", "[deploy.env.dev].max_files: must be", "'shade'"]
    for needle in needles:
        assert any(needle in line for line in lines), needle


def test_a_bucket_is_required_and_defaults_give_three_environments() -> None:
    with pytest.raises(ConfigError, match="no bucket"):
        load_deploy_config(None, {}, {})
    config = load_deploy_config(None, {}, {"bucket_url": "s3://bkt/dags"})
    assert config.environments == ("dev", "staging", "production")
    assert config.sts


def test_sts_is_asked_only_where_the_sdk_would_find_it() -> None:
    flag_only = load_deploy_config(
        None, {}, {"bucket_url": "s3://bkt/", "endpoint_url": "http://127.0.0.1:9"}
    )
    assert not flag_only.sts  # a private S3 endpoint says nothing about STS: do not call AWS
    via_env = load_deploy_config(
        None, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, {"bucket_url": "s3://bkt/"}
    )
    assert via_env.sts
    assert via_env.endpoint_url == "http://127.0.0.1:9"


def test_the_config_file_defaults_to_dagmirror_toml_in_the_working_directory(tmp_path: Path) -> None:
    assert config_path(None, tmp_path) is None
    write(tmp_path, "")
    assert config_path(None, tmp_path) == tmp_path / "dagmirror.toml"
    assert config_path(Path("other.toml"), tmp_path) == Path("other.toml")


# -- records -----------------------------------------------------------------------------------------------
def test_record_names_sort_by_time() -> None:
    early, late = (
        record_key("dev", 1_700_000_000.5, "bbbbbbbbbbbb"),
        record_key("dev", 1_700_000_001.0, "aaaaaaaaaaaa"),
    )
    assert early == "metadata/deploys/dev/20231114T221320.500000Z-bbbbbbbbbbbb.json"
    assert sorted([late, early]) == [early, late]


def test_a_rollback_restores_every_live_version_a_record_names() -> None:
    files = (
        FileResult("a.py", PREFIX + "a.py", "upload", "v2", 3, "m", "x"),
        FileResult("b.py", PREFIX + "b.py", "unchanged", "v1", 4, "m", "x"),
        FileResult("c.py", PREFIX + "c.py", "delete", previous_version="v1"),
        FileResult("d.py", PREFIX + "d.py", "failed", "v5", 9, error="boom"),
        FileResult("e.py", PREFIX + "e.py", "failed", error="never there"),
    )
    restore, problems = wanted_from_record(StoredDeploy("id", "production", ("",), files), PREFIX)
    assert problems == []
    assert {p: w.origin for p, w in restore.items()} == {
        "a.py": Origin(PREFIX + "a.py", "v2"),
        "b.py": Origin(PREFIX + "b.py", "v1"),
        "d.py": Origin(PREFIX + "d.py", "v5"),
    }


def test_a_record_that_points_outside_its_environment_or_lacks_versions_cannot_be_restored() -> None:
    files = (
        FileResult("a.py", "dags/dev/a.py", "upload", "v2"),
        FileResult("b.py", PREFIX + "b.py", "upload", None),
        FileResult("../c.py", PREFIX + "../c.py", "upload", "v1"),
    )
    _, problems = wanted_from_record(StoredDeploy("id", "production", (), files), PREFIX)
    assert [p.split(":")[0] for p in problems] == ["'a.py'", "b.py", "'../c.py'"]


def test_a_malformed_record_is_refused_with_its_name() -> None:
    with pytest.raises(ConfigError, match=r"deploy record k\.json is malformed"):
        parse_record(b"{not json", "k.json", deploy_id="x", env="dev")
    with pytest.raises(ConfigError, match="malformed"):
        parse_record(
            orjson.dumps({"deploy_id": "x", "env": "dev", "files": [{"path": 1}]}),
            "k.json",
            deploy_id="x",
            env="dev",
        )
    wrong_size = {
        "deploy_id": "x",
        "env": "dev",
        "files": [{"path": "a", "key": "a", "action": "copy", "size": "9"}],
    }
    with pytest.raises(ConfigError, match="file field size is str"):
        parse_record(orjson.dumps(wrong_size), "k.json", deploy_id="x", env="dev")


def test_exclude_flags_add_to_the_configured_excludes_and_never_replace_them(tmp_path: Path) -> None:
    path = tmp_path / "dagmirror.toml"
    path.write_text('[deploy]\nbucket_url = "s3://bkt/dags"\nexclude = ["vendor/**"]\n')
    config = load_deploy_config(path, {}, {"exclude": ["scratch/*"]})
    assert "vendor/**" in config.exclude
    assert "scratch/*" in config.exclude


def test_exclude_from_the_environment_adds_to_the_configured_excludes_and_never_replaces_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dagmirror.toml"
    path.write_text('[deploy]\nbucket_url = "s3://bkt/dags"\nexclude = ["vendor/**"]\n')
    config = load_deploy_config(path, {"DAGMIRROR_DEPLOY_EXCLUDE": "scratch/*"}, {"exclude": ["tmp/*"]})
    assert {"vendor/**", "scratch/*", "tmp/*"} <= set(config.exclude)
