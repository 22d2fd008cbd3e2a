"""Signed releases through the real CLI against moto (keys generate, deploy --sign-key, sync --trust), and
what a refusal leaves behind: one line, exit 1, a metric and an audit record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from dagmirror.audit import AuditLog
from dagmirror.config import load_run_config
from dagmirror.metrics import Metrics
from dagmirror.models import SyncReport

from .helpers import dagmirror, read_tree, write_tree
from .signed import new_key, trust_file

FILES = {"team/a.py": b"a = 1\n", "team/b.py": b"b = 2\n"}


def test_sign_with_a_generated_key_and_sync_with_trust_through_the_cli(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    key = tmp_path / "ci.key"
    assert dagmirror("keys", "generate", key, endpoint=moto_endpoint).code == 0
    trust = trust_file(tmp_path, "trust", {key: ["**"]})
    src = write_tree(tmp_path / "src", FILES)
    url = f"s3://{bucket}/dags/"
    signed = dagmirror("deploy", src, "--env", "dev", "--bucket-url", url, "--sign-key", key, "--json",
                       endpoint=moto_endpoint)  # fmt: skip
    assert signed.code == 0, signed.stderr
    dest = tmp_path / "dest"
    first = dagmirror("sync", f"{url}dev/", dest, "--trust", trust, "--json", endpoint=moto_endpoint)
    assert first.code == 0, first.stderr
    assert (first.report["release"], first.report["untrusted"]) == (signed.report["release"], None)
    again = dagmirror("sync", f"{url}dev/", dest, "--trust", trust, "--json", endpoint=moto_endpoint)
    assert again.report["requests"] == {"GET 304": 1}

    (src / "team" / "a.py").write_bytes(b"a = 'unsigned'\n")
    unsigned = dagmirror("deploy", src, "--env", "dev", "--bucket-url", url, endpoint=moto_endpoint)
    assert unsigned.code == 0, unsigned.stderr
    refused = dagmirror("sync", f"{url}dev/", dest, "--trust", trust, endpoint=moto_endpoint)
    assert refused.code == 1
    errors = [line for line in refused.stderr.splitlines() if line.startswith("dagmirror: error:")]
    assert len(errors) == 1
    assert "release refused, DEST unchanged" in errors[0]
    assert "unsigned and this mirror trusts only signed releases" in errors[0]
    assert read_tree(dest) == FILES
    plain = dagmirror(
        "sync", f"{url}dev/", tmp_path / "plain", endpoint=moto_endpoint
    )  # no trust: unsigned ok
    assert plain.code == 0
    assert read_tree(tmp_path / "plain")["team/a.py"] == b"a = 'unsigned'\n"


def test_a_bad_trust_file_is_one_line_and_exit_2(moto_endpoint: str, tmp_path: Path) -> None:
    bad = tmp_path / "trust.toml"
    bad.write_text('[[keys]]\npublic = "not a key"\n')
    run = dagmirror("sync", "s3://bkt/dags/dev/", tmp_path / "d", "--trust", bad, endpoint=moto_endpoint)
    assert run.code == 2
    assert run.stderr.strip().splitlines() == [
        f"dagmirror: error: {bad}: keys #1: not a PEM public key (-----BEGIN PUBLIC KEY----- ...)"
    ]
    good = trust_file(tmp_path, "good", {new_key(tmp_path, "k"): ["**"]})
    objects = dagmirror("sync", "s3://bkt/dags/dev/", tmp_path / "d", "--trust", good, "--mode", "objects",
                        endpoint=moto_endpoint)  # fmt: skip
    assert objects.code == 2
    assert "trust: signed releases need --mode auto or releases" in objects.stderr


def untrusted_report() -> SyncReport:
    return SyncReport(
        source="s3://b/dags/prod/", dest="/d", dry_run=False, listed=0, downloaded=0, unchanged=0,
        deleted=0, rejected=0, failed=1, bytes=0, seconds=0.1, mode="releases", release="a" * 64,
        release_seq=4, untrusted="pointer seq 5 (release bbbbbbbbbbbb) is unsigned",
    )  # fmt: skip


def test_a_refusal_is_counted_in_a_metric() -> None:
    metrics = Metrics()
    metrics.register("prod")
    metrics.observe("prod", untrusted_report())
    text = metrics.exposition().decode()
    assert 'dagmirror_untrusted_releases_total{mapping="prod"} 1.0' in text


def test_a_refusal_writes_an_audit_record_naming_it(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "host-a", clock=lambda: 1_800_000_000.0)
    assert log.append(untrusted_report(), mapping="prod", pass_id="p1")
    (written,) = tmp_path.iterdir()
    record = orjson.loads(written.read_bytes().splitlines()[0])
    assert (record["result"], record["untrusted"]) == ("untrusted", untrusted_report().untrusted)
    assert record["release"] == "a" * 64


def test_each_mirror_of_the_daemon_config_has_its_own_trust(tmp_path: Path) -> None:
    prod_key, dev_key = new_key(tmp_path, "prod"), new_key(tmp_path, "dev")
    prod = trust_file(tmp_path, "prod-trust", {prod_key: ["**"]})
    dev = trust_file(tmp_path, "dev-trust", {prod_key: ["**"], dev_key: ["**"]})
    config = tmp_path / "dagmirror.toml"
    config.write_text(
        f'[[mirror]]\nname = "prod"\nsource = "s3://bkt/dags/production/"\ndest = "{tmp_path}/p"\n'
        f'trust = "{prod}"\n'
        f'[[mirror]]\nname = "dev"\nsource = "s3://bkt/dags/dev/"\ndest = "{tmp_path}/d"\ntrust = "{dev}"\n'
        f'[[mirror]]\nname = "plain"\nsource = "s3://bkt/dags/x/"\ndest = "{tmp_path}/x"\n'
    )
    mappings = {m.name: m.config.trust for m in load_run_config(config, {}, {}).mappings}
    assert [len(t.keys) if t else 0 for t in mappings.values()] == [1, 2, 0]
    assert list(mappings) == ["prod", "dev", "plain"]
