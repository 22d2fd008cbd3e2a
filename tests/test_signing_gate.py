"""The mirror's memory of trust across restarts (engine/trustgate.py over a MemorySource): rotations learned
from pointers are kept in the state, and those of a key removed from the trust file stop counting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagmirror import Mirror, MirrorConfig
from dagmirror.models import SyncReport
from dagmirror.source.memory import MemorySource
from dagmirror.trust import KeySigner, generate_ed25519, payload_of, rotation_statement

from .helpers import no_sleep, read_tree
from .releases import publish_to
from .signed import trust_file


def key() -> KeySigner:
    return KeySigner(generate_ed25519())


def rotation(old: KeySigner, new: KeySigner) -> dict[str, Any]:
    statement = rotation_statement(old.keyid, new.public.pem)
    statement["signatures"] = [old.sign_now(payload_of(statement))]
    return statement


async def sync(source: MemorySource, dest: Path, trust: Path) -> SyncReport:
    """A fresh Mirror each time: a restarted mirror process, same DEST."""
    config = MirrorConfig.create("s3://bucket/dags/", dest, fsync=False, trust=str(trust))
    async with Mirror(config, source=source, sleep=no_sleep) as mirror:
        return await mirror.sync_once()


async def test_rotations_survive_a_restart_and_a_removed_key_drops_its_chain(tmp_path: Path) -> None:
    k1, k2, k3, k4 = key(), key(), key(), key()
    source, dest = MemorySource({}), tmp_path / "dest"
    first = trust_file(tmp_path, "first", {k1.public.pem: ["**"]})
    publish_to(source.put, "dags/", {"a.py": b"1\n"}, seq=1, signer=k2, rotations=(rotation(k1, k2),))
    assert (await sync(source, dest, first)).untrusted is None
    publish_to(source.put, "dags/", {"a.py": b"2\n"}, seq=2, signer=k2)  # no statement: remembered
    assert (await sync(source, dest, first)).untrusted is None
    assert read_tree(dest) == {"a.py": b"2\n"}

    second = trust_file(tmp_path, "second", {k3.public.pem: ["**"]})  # k1 compromised: removed, k3 added
    publish_to(source.put, "dags/", {"a.py": b"3\n"}, seq=3, signer=k2)
    refused = await sync(source, dest, second)
    assert "0 valid signature(s)" in (refused.untrusted or "")  # k1 -> k2 no longer counts
    publish_to(source.put, "dags/", {"a.py": b"4\n"}, seq=4, signer=k4, rotations=(rotation(k3, k4),))
    assert (await sync(source, dest, second)).untrusted is None
    publish_to(source.put, "dags/", {"a.py": b"5\n"}, seq=5, signer=k4)
    report = await sync(source, dest, second)  # restarted again: k3 -> k4 was kept beside the stale k1 -> k2
    assert (report.untrusted, read_tree(dest)) == (None, {"a.py": b"5\n"})
