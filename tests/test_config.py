"""The config layer: every bad field reported at once, one line each; the environment passed in."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dagmirror import MirrorConfig
from dagmirror.config import load_run_config
from dagmirror.errors import ConfigError


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return str(exc.value).splitlines()


def test_a_toml_with_eight_bad_fields_prints_eight_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
interval = "soon"
colour = "blue"
jitter = 5
[[mirror]]
source = "ftp://nope"
dest = "{tmp_path}/a"
concurrency = "many"
max_delete_fraction = 2.0
transport = "carrier-pigeon"
[[mirror]]
source = "s3://bkt/x"
""",
    )
    with pytest.raises(ConfigError) as info:
        load_run_config(path, {}, {})
    lines = problems(info)
    needles = [
        "interval: expected float",
        "unknown key 'colour'",
        "jitter: must be between",
        "mirror[0].concurrency: expected int",
        "source must look like s3://",
        "max_delete_fraction: must be between",
        "transport: must be 'lean' or 'sdk'",
        "mirror[1].dest: missing",
    ]
    for needle in needles:
        assert sum(needle in line for line in lines) == 1, (needle, lines)
    assert len(lines) == 8, lines


def test_an_unparseable_environment_variable_is_one_line_not_two(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_run_config(None, {"DAGMIRROR_INTERVAL": "abc"}, {"source": "s3://bkt/x", "dest": str(tmp_path)})
    assert problems(info) == ["DAGMIRROR_INTERVAL: expected float, got 'abc'"]


def test_a_bad_listen_address_is_reported_with_the_other_fields(tmp_path: Path) -> None:
    flags = {"source": "s3://bkt/x", "dest": str(tmp_path), "http": "localhost", "concurrency": 0}
    with pytest.raises(ConfigError) as info:
        load_run_config(None, {}, flags)
    lines = problems(info)
    assert len(lines) == 2, lines
    assert any("HOST:PORT" in line for line in lines)
    assert any("concurrency" in line for line in lines)


def test_run_config_is_finished_typed_values(tmp_path: Path) -> None:
    flags = {
        "source": "s3://bkt/x",
        "dest": str(tmp_path / "d"),
        "http": "off",
        "audit_dir": str(tmp_path / "audit"),
        "audit_s3": "s3://logs/audit/team-a",
    }
    config = load_run_config(None, {}, flags)
    assert config.http is None
    assert config.audit_dir == tmp_path / "audit"
    assert config.audit_s3 is not None
    assert (config.audit_s3.bucket, config.audit_s3.prefix) == ("logs", "audit/team-a/")
    assert [m.name for m in config.mappings] == ["default"]


def test_mirror_config_create_refuses_a_wrong_retry_with_a_config_error() -> None:
    with pytest.raises(ConfigError, match="retry: expected a RetryPolicy, got 5"):
        MirrorConfig.create("s3://bkt/dags", "/tmp/never", retry=5)


def test_mirror_config_create_reports_every_bad_option_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        MirrorConfig.create(
            "ftp://nope",
            "/tmp/never",
            endpoint_url="gopher://h",
            concurrency=2.5,
            max_delete_fraction="half",
            fsync="yes",
            retries=3,
        )
    lines = problems(info)
    for needle in (
        "unknown option 'retries'",
        "source must",
        "endpoint URL",
        "concurrency",
        "fraction",
        "fsync",
    ):
        assert sum(needle in line for line in lines) == 1, (needle, lines)
    assert len(lines) == 6, lines


def test_mirror_config_create_reads_the_environment_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "from-os-environ")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://from-os-environ:1")
    env = {"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000"}
    cfg = MirrorConfig.create("s3://bkt/dags", "/tmp/never", env=env)
    assert (cfg.region, cfg.endpoint_url) == ("eu-west-1", "http://127.0.0.1:9000")
    bare = MirrorConfig.create("s3://bkt/dags", "/tmp/never", env={})
    assert (bare.region, bare.endpoint_url) == (None, None)


def test_the_run_loader_gives_each_mapping_its_environment(tmp_path: Path) -> None:
    env = {"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}
    config = load_run_config(None, env, {"source": "s3://bkt/x", "dest": str(tmp_path)})
    mirror = config.mappings[0].config
    assert (mirror.region, mirror.endpoint_url) == ("eu-west-1", "http://127.0.0.1:9000")


def test_the_flags_docs_give_run_are_the_flags_run_takes() -> None:
    from click.testing import CliRunner

    from dagmirror.cli import cli

    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    daemon = doc.split("## The daemon")[1].split("## Deploys")[0]
    documented = set(re.findall(r"`(--[a-z-]+)", daemon))
    taken = set(re.findall(r"(--[a-z-]+)", CliRunner().invoke(cli, ["run", "--help"]).output))
    refused = {"--dry-run", "--json", "--wait-for-source"}  # named by the docs as not taken by run
    assert documented - refused <= taken, documented - refused - taken
    assert not refused & taken


# Moved from test_service.py (the daemon's settings are the config layer's now).
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dagmirror.toml"
    path.write_text(text)
    return path


def test_settings_file_env_and_flags_merge_in_that_order_and_the_deploy_table_is_left_to_deploy(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        f"""
interval = 10
concurrency = 8
[[mirror]]
name = "a"
source = "s3://bkt/dags/a"
dest = "{tmp_path}/a"
[[mirror]]
name = "b"
source = "s3://bkt/dags/b"
dest = "{tmp_path}/b"
exclude = ["*_test.py"]
[deploy]
bucket_url = "s3://bkt/dags/"
""",
    )
    config = load_run_config(
        path, {"DAGMIRROR_INTERVAL": "20", "DAGMIRROR_CONCURRENCY": "16"}, {"concurrency": 32}
    )
    assert config.interval == 20.0
    names = [m.name for m in config.mappings]
    assert names == ["a", "b"]
    assert all(m.config.concurrency == 32 for m in config.mappings)
    assert config.mappings[1].config.filters.exclude == ("*_test.py",)


def test_every_bad_field_is_reported_on_its_own_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
interval = "soon"
colour = "blue"
[[mirror]]
source = "ftp://nope"
dest = "{tmp_path}/a"
concurrency = "many"
[[mirror]]
source = "s3://bkt/x"
[[mirror]]
source = "s3://bkt/y"
dest = "{tmp_path}/a/inner"
""",
    )
    with pytest.raises(ConfigError) as info:
        load_run_config(path, {"DAGMIRROR_JITTER": "lots"}, {})
    lines = str(info.value).splitlines()
    assert any("interval" in line for line in lines)
    assert any("unknown key 'colour'" in line for line in lines)
    assert any("mirror[0].concurrency" in line for line in lines)
    assert any("mirror[1].dest: missing" in line for line in lines)
    assert any("DAGMIRROR_JITTER" in line for line in lines)
    assert len(lines) >= 5


def test_overlapping_dests_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[[mirror]]
source = "s3://bkt/a"
dest = "{tmp_path}/a"
[[mirror]]
source = "s3://bkt/b"
dest = "{tmp_path}/a/b"
""",
    )
    with pytest.raises(ConfigError, match="overlaps"):
        load_run_config(path, {}, {})


def test_invalid_toml_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_run_config(write(tmp_path, "interval = = 3"), {}, {})
