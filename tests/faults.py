"""What the reliability suites share: a record of every version ever written to S3, a reader that checks
DEST while passes run, and the checks that say a DEST is whole (no torn file, no leftover temp, a state
that matches the disk)."""

from __future__ import annotations

import hashlib
import random
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import xxhash

from dagmirror.devtools.corpus import create_bucket
from dagmirror.devtools.servers import s3_client

from .helpers import META, read_tree, walk_files

META_FILES = {"state.json", "lock", "journal", "tmp", "audit"}


def digest(body: bytes) -> str:
    return hashlib.sha1(body, usedforsecurity=False).hexdigest()


class History:
    """Every body ever PUT to each key (by digest, recorded before the PUT), the keys live now, and a
    sequence of deletions, so a deletion by dagmirror can be judged against what S3 held during a pass."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.versions: dict[str, set[str]] = defaultdict(set)
        self.live: dict[str, bytes] = {}
        self.deletions: list[tuple[int, str]] = []
        self.seq = 0
        self.lock = threading.Lock()

    def will_put(self, rel: str, body: bytes) -> None:
        with self.lock:
            self.versions[rel].add(digest(body))

    def did_put(self, rel: str, body: bytes) -> None:
        with self.lock:
            self.live[rel] = body
            self.seq += 1

    def will_delete(self, rel: str) -> None:
        with self.lock:
            self.live.pop(rel, None)
            self.seq += 1
            self.deletions.append((self.seq, rel))

    def mark(self) -> tuple[int, frozenset[str]]:
        with self.lock:
            return self.seq, frozenset(self.live)

    def deleted_between(self, start: int, end: int) -> set[str]:
        with self.lock:
            return {rel for seq, rel in self.deletions if start < seq <= end}

    def known(self, rel: str, body: bytes) -> bool:
        with self.lock:
            return digest(body) in self.versions.get(rel, ())

    def snapshot(self) -> dict[str, bytes]:
        with self.lock:
            return dict(self.live)


class Bucket:
    """A bucket on the real server plus its History; PUTs go straight to the server, never via the proxy."""

    def __init__(self, endpoint: str, name: str, prefix: str, rng: random.Random) -> None:
        self.s3: Any = s3_client(endpoint)
        self.name = name
        self.history = History(prefix)
        self.rng = rng
        self.serial = 0
        create_bucket(self.s3, name)

    def body(self, rel: str, low: int = 200, high: int = 20_000) -> bytes:
        self.serial += 1
        head = f"# {rel} version {self.serial}\n".encode()
        line = f"x_{self.serial} = {self.rng.random()!r}\n".encode()
        return (head + line * (self.rng.randint(low, high) // len(line) + 1))[: max(low, len(head))]

    def put(self, rel: str, body: bytes, *, multipart: bool = False) -> None:
        key = self.history.prefix + rel
        self.history.will_put(rel, body)
        if multipart:  # an opaque '-1' ETag; x-amz-meta-xxh3 is what lets dagmirror verify the body
            meta = {"xxh3": xxhash.xxh3_128_hexdigest(body)}
            upload = self.s3.create_multipart_upload(Bucket=self.name, Key=key, Metadata=meta)
            part = self.s3.upload_part(
                Bucket=self.name, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=body
            )
            self.s3.complete_multipart_upload(
                Bucket=self.name,
                Key=key,
                UploadId=upload["UploadId"],
                MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
            )
        else:
            self.s3.put_object(Bucket=self.name, Key=key, Body=body)
        self.history.did_put(rel, body)

    def delete(self, rel: str) -> None:
        self.history.will_delete(rel)
        self.s3.delete_object(Bucket=self.name, Key=self.history.prefix + rel)

    def seed(self, n: int, folders: int = 4) -> None:
        for i in range(n):
            self.add(folders, i)

    def add(self, folders: int = 4, i: int | None = None) -> str:
        i = self.serial if i is None else i
        rel = f"team{i % folders}/dag_{self.serial:05d}.py" if i % 7 else f"root_{self.serial:05d}.py"
        self.put(rel, self.body(rel), multipart=self.rng.random() < 0.15)
        return rel

    def mutate(self, low: int = 40, high: int = 80) -> str:
        """One random change: add, rewrite (sometimes keeping the length) or delete; size stays in range."""
        live = sorted(self.history.snapshot())
        roll = self.rng.random()
        if len(live) < low or (roll < 0.3 and len(live) < high):
            return "add:" + self.add()
        rel = self.rng.choice(live)
        if roll < 0.55 and len(live) > low:
            self.delete(rel)
            return "delete:" + rel
        old = self.history.snapshot().get(rel, b"")
        body = self.body(rel)
        if self.rng.random() < 0.3 and old:  # same length, different bytes: only hashes can tell
            body = (body * (len(old) // max(1, len(body)) + 1))[: len(old)]
            if body == old:
                body = bytes([old[0] ^ 1]) + old[1:]
        self.put(rel, body, multipart=self.rng.random() < 0.15)
        return "rewrite:" + rel


@dataclass
class Reader:
    """A thread that reads every visible file under DEST, again and again, like Airflow's DagBag, and
    counts files whose bytes are no version that ever existed in S3 (torn or corrupted)."""

    dest: Path
    history: History
    reads: int = 0
    torn: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Reader:
        self._thread = threading.Thread(target=self._run, name="reader", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            for rel, body in _read_all(self.dest):
                self.reads += 1
                if not self.history.known(rel, body):
                    self.torn.append(rel)
            self._stop.wait(0.002)


def _read_all(dest: Path) -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []
    for rel, path in walk_files(dest):
        try:
            with open(path, "rb") as fh:
                found.append((rel, fh.read()))
        except (FileNotFoundError, IsADirectoryError):
            continue  # replaced or deleted while walking: fine
    return found


def foreign_files(dest: Path, history: History) -> list[str]:
    """Files in DEST whose bytes are no version ever written to their key."""
    return sorted(rel for rel, body in read_tree(dest).items() if not history.known(rel, body))


def leftover_temps(dest: Path) -> list[str]:
    """Anything in DEST/.dagmirror that is not dagmirror's own steady-state files."""
    meta = dest / META
    if not meta.exists():
        return []
    stray = [p.name for p in meta.iterdir() if p.name not in META_FILES]
    stray += [f"tmp/{p.name}" for p in (meta / "tmp").iterdir()] if (meta / "tmp").is_dir() else []
    return sorted(stray)


def state_problems(dest: Path) -> list[str]:
    """Where DEST/.dagmirror/state.json disagrees with the disk: every entry must name a file whose stat
    signature and xxh3 match, and every file must be in it. Empty when consistent."""
    raw = (dest / META / "state.json").read_bytes()
    entries = orjson.loads(raw)["entries"]
    files = read_tree(dest)
    problems = [f"unrecorded file {p}" for p in sorted(set(files) - set(entries))]
    for path, (_etag, _size, xxh3, local_size, mtime_ns, ino) in sorted(entries.items()):
        if path not in files:
            problems.append(f"state names missing file {path}")
            continue
        st = (dest / path).stat()
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (local_size, mtime_ns, ino):
            problems.append(f"stat signature of {path} differs from the state")
        if xxhash.xxh3_128_hexdigest(files[path]) != xxh3:
            problems.append(f"content of {path} differs from the state's xxh3")
    journal = dest / META / "journal"
    if journal.exists() and journal.stat().st_size:
        problems.append("journal not reset after a complete pass")
    return problems
