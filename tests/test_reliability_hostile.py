"""Hostile input: a corpus of keys built to escape DEST, alias each other or confuse readers, symlinks
planted in DEST and in dagmirror's own folder, and fuzzing of the key mapping (through the real installer)
and of the config parsers. The rule: nothing is ever written outside DEST, and every refusal is reported."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import string
import subprocess
import sys
import tempfile
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagmirror import Mirror, MirrorConfig
from dagmirror.config import load_run_config
from dagmirror.devtools.servers import s3_env
from dagmirror.errors import ConfigError, DagmirrorError
from dagmirror.retry import RetryPolicy
from dagmirror.source.memory import MemorySource

from .helpers import dagmirror, read_tree

PREFIX = "dags/dev/"
CAFE_NFC = unicodedata.normalize("NFC", "café.py")
CAFE_NFD = unicodedata.normalize("NFD", "café.py")

# Keys that must be refused, each for a reason the report names.
REFUSED = [
    "../escape.py",
    "../../../../../../etc/cron.d/evil",
    "a/../../escape.py",
    "a/b/../../../escape.py",
    "..",
    "a/..",
    "./x.py",
    "a/./b.py",
    "../",  # a folder marker that climbs: nothing to write, still reported
    "a/../../",
    "/etc/passwd",
    "//double/leading.py",
    "a//b.py",
    "..\\escape.py",
    "a\\..\\..\\escape.py",
    "C:\\Windows\\evil.py",
    "\\\\server\\share\\evil.py",
    "nul\x00byte.py",
    "form\x0cfeed.py",  # (moto refuses a PUT with a newline; keys.py tests cover it)
    "carriage\rreturn.py",
    "tab\there.py",
    "esc\x1b[31mred.py",
    "del\x7f.py",
    "c1\x85control.py",
    "bidi\u202eyp.evil",  # right-to-left override: shows as 'bidilive.py'
    "isolate\u2066x\u2069.py",
    "line\u2028separator.py",
    "nonchar\ufffe.py",  # a deletion of it could never be confirmed: moto's 404 carries no NoSuchKey
    "x" * 256 + ".py",
    "é" * 128 + ".py",
    "/".join(["d" * 200] * 21) + ".py",  # > 4000 bytes in all
    ".dagmirror/state.json",
    ".dagmirror/tmp/planted.part",
    ".dagmirror",
    "pkg",  # a file where pkg/ must be a directory: the directory wins
]
# Odd but harmless names: mirrored at exactly their own path inside DEST.
ACCEPTED = [
    "%2e%2e/literal-percent-dots.py",
    "..%2fstill-literal.py",
    "\uff0e\uff0e/fullwidth-dots.py",  # NFKC would make this '..': the filesystem never does
    "\u2025/two-dot-leader.py",
    "... /three-dots-and-space.py",
    "..hidden.py",
    CAFE_NFC,
    CAFE_NFD,  # a normalisation twin: a different name to Linux, mirrored as such
    "Dag.py",
    "dag.py",  # a case twin: the same
    "pkg/mod.py",
    "a" * 255,
]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Files next to DEST that planted symlinks point at: they must never change."""
    out = tmp_path / "outside"
    (out / "dir").mkdir(parents=True)
    (out / "precious.txt").write_text("precious")
    (out / "journal-target").write_text("must not be truncated or appended to\n")
    return out


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if not p.is_symlink()
    }


def test_hostile_keys_are_refused_and_reported_and_nothing_is_written_outside_dest(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path, outside: Path
) -> None:
    assert len(REFUSED) + len(ACCEPTED) >= 30
    for rel in REFUSED + ACCEPTED:
        s3.put_object(Bucket=bucket, Key=PREFIX + rel, Body=b"# " + rel.encode("utf-8", "replace"))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "team").symlink_to(outside / "dir", target_is_directory=True)
    (dest / "top.py").symlink_to(outside / "precious.txt")
    s3.put_object(Bucket=bucket, Key=PREFIX + "team/x.py", Body=b"through a planted dir link")
    s3.put_object(Bucket=bucket, Key=PREFIX + "top.py", Body=b"replaces the planted file link")
    before = snapshot(outside)
    run = dagmirror("sync", f"s3://{bucket}/{PREFIX}", dest, "--json", endpoint=moto_endpoint)
    report = orjson.loads(run.stdout.rstrip("\n").split("\n")[-1])  # keys hold U+2028: no splitlines()
    assert snapshot(outside) == before
    refused = {r["key"][len(PREFIX) :]: r["reason"] for r in report["rejections"]}
    assert set(refused) == set(REFUSED)
    assert all(refused.values())
    assert [f["key"] for f in report["failures"]] == [PREFIX + "team/x.py"]
    assert "symlink" in report["failures"][0]["error"]
    mirrored = read_tree(dest)
    assert set(mirrored) == set(ACCEPTED) | {"top.py"}
    for rel in ACCEPTED:
        assert mirrored[rel] == b"# " + rel.encode()
    assert not (dest / "top.py").is_symlink()
    for path in dest.rglob("*"):  # every path really is inside DEST
        assert path.resolve(strict=False).is_relative_to(dest.resolve()) or path.is_symlink()


@pytest.mark.parametrize("planted", ["journal", "lock", "state.json", "tmp"])
def test_a_symlink_planted_in_dagmirrors_own_folder_never_redirects_a_write(
    s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path, outside: Path, planted: str
) -> None:
    s3.put_object(Bucket=bucket, Key=PREFIX + "ok.py", Body=b"fine")
    dest = tmp_path / "dest"
    assert dagmirror("sync", f"s3://{bucket}/{PREFIX}", dest, endpoint=moto_endpoint).code == 0
    target = outside / ("dir" if planted == "tmp" else "journal-target")
    link = dest / ".dagmirror" / planted
    if link.is_dir():
        link.rmdir()
    else:
        link.unlink(missing_ok=True)
    link.symlink_to(target)
    s3.put_object(Bucket=bucket, Key=PREFIX + "more.py", Body=b"more")
    before = snapshot(outside)
    run = dagmirror("sync", f"s3://{bucket}/{PREFIX}", dest, endpoint=moto_endpoint)
    assert snapshot(outside) == before
    assert "Traceback" not in run.stderr
    if run.code != 0:  # refusing the destination is fine, with one clear line
        assert "symlink" in run.stderr or "Too many levels of symbolic links" in run.stderr, run.stderr


# -- fuzzing ------------------------------------------------------------------------------------------------
SEGMENTS = st.sampled_from(
    ["..", ".", "", "a", "b.py", "\\", "..\\", "\x00", "\n", "\u202e", ".dagmirror", "é", "\uff0e\uff0e", " "]
)
KEYS = st.one_of(
    st.lists(SEGMENTS, min_size=1, max_size=5).map("/".join),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(KEYS, min_size=1, max_size=8, unique=True))
def test_fuzzed_keys_through_the_real_installer_stay_inside_dest(keys: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dest, sibling = root / "dest", root / "sibling"
        sibling.mkdir()
        objects = {"dags/" + k: k.encode() for k in keys}
        report = asyncio.run(_sync_memory(objects, dest))
        assert list(sibling.iterdir()) == []
        assert sorted(p.name for p in root.iterdir()) == ["dest", "sibling"]
        for rel, body in read_tree(dest).items():
            assert rel.encode() == body  # each file at exactly its key's path
        assert all(r.reason for r in report.rejections)
        assert report.failed == 0, report.failures


async def _sync_memory(objects: dict[str, bytes], dest: Path) -> Any:
    cfg = MirrorConfig.create("s3://bkt/dags", dest, fsync=False, retry=RetryPolicy(attempts=1))
    async with Mirror(cfg, source=MemorySource(objects)) as mirror:
        return await mirror.sync_once()


TOML_VALUES = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: (
            "nan" if f != f else ("inf" if f == float("inf") else "-inf" if f == -float("inf") else repr(f))
        )
    ),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(alphabet=string.printable.replace('"', "").replace("\\", ""), max_size=20).map(
        lambda s: f'"{s}"'
    ),
    st.just('["*.py", 1]'),
    st.just('["*.py"]'),
    st.just("{ a = 1 }"),
)
PER_MIRROR = ("source", "dest", "name")
TOML_KEYS = st.sampled_from(
    [
        "interval", "jitter", "http", "staleness", "grace", "max_backoff", "audit_dir", "audit_s3",
        "concurrency", "include", "exclude", "max_delete_fraction", "allow_mass_delete", "transport",
        "fsync", "endpoint_url", "region", "profile", "source", "dest", "name", "bogus",
    ]
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(TOML_KEYS, TOML_VALUES), max_size=6),
    st.lists(st.lists(st.tuples(TOML_KEYS, TOML_VALUES), max_size=6), max_size=3),
    st.dictionaries(st.sampled_from(["DAGMIRROR_INTERVAL", "DAGMIRROR_STALENESS", "DAGMIRROR_CONCURRENCY",
                                     "DAGMIRROR_FSYNC", "DAGMIRROR_INCLUDE"]),
                    st.text(alphabet=string.printable, max_size=12), max_size=3),
)  # fmt: skip
def test_fuzzed_settings_are_either_valid_or_one_config_error(
    top: list[tuple[str, str]], tables: list[list[tuple[str, str]]], env: dict[str, str]
) -> None:
    text = "".join(f"{k} = {v}\n" for k, v in dict(top).items() if k not in PER_MIRROR)
    with tempfile.TemporaryDirectory() as tmp:
        for i, table in enumerate(tables or [[]]):  # each mirror valid but for the fuzzed keys
            text += f'[[mirror]]\nsource = "s3://bkt/m{i}"\ndest = "{tmp}/d{i}"\nname = "m{i}"\n'
            text += "".join(f"{k} = {v}\n" for k, v in dict(table).items() if k not in PER_MIRROR)
        path = Path(tmp) / "dagmirror.toml"
        path.write_text(text)
        try:
            config = load_run_config(path, env, {})
        except ConfigError as exc:
            problems = str(exc).strip()
            assert problems
            return
    for key in ("interval", "staleness", "grace", "max_backoff"):
        if getattr(config, key) is not None:  # typed fields: None is 'not set' (staleness's default)
            value = float(getattr(config, key))
            assert value == value, key  # not NaN
            assert value >= 0 if key == "grace" else value > 0, key
            assert value < float("inf"), key
    for mapping in config.mappings:
        cfg = mapping.config
        assert isinstance(cfg.concurrency, int)
        cfg.validate()


@settings(max_examples=200, deadline=None)
@given(
    source=st.one_of(
        st.just("s3://bucket/dags"), st.text(max_size=30), st.text(max_size=20).map(lambda s: "s3://bkt/" + s)
    ),
    concurrency=st.one_of(
        st.integers(-5, 2000), st.floats(allow_nan=True), st.floats(1, 1024), st.booleans(), st.just(8)
    ),
    fraction=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 3), st.just(0.5)),
    endpoint=st.one_of(
        st.none(),
        st.text(max_size=30),
        st.text(max_size=20).map(lambda s: "http://" + s),
        st.just("http://[::1"),
    ),
)
def test_fuzzed_mirror_config_is_either_valid_or_one_config_error(
    source: str, concurrency: Any, fraction: Any, endpoint: str | None
) -> None:
    try:
        cfg = MirrorConfig.create(
            source,
            "/tmp/dagmirror-fuzz-never-created",
            endpoint_url=endpoint,
            concurrency=concurrency,
            max_delete_fraction=fraction,
        )
    except ConfigError as exc:
        problem = str(exc).strip()
        assert problem
        return
    assert isinstance(cfg.concurrency, int)
    assert not isinstance(cfg.concurrency, bool)
    assert 1 <= cfg.concurrency <= 1024
    assert 0.0 <= cfg.max_delete_fraction <= 1.0
    assert cfg.source.prefix == "" or cfg.source.prefix.endswith("/")


def test_dagmirror_errors_never_escape_as_anything_else_for_bad_endpoints() -> None:
    for endpoint in ("http://[::1", "http://h:99999", "http://h:-1", "ftp://h", "http://", "http://h:1x"):
        with pytest.raises(DagmirrorError):
            MirrorConfig.create("s3://bucket/x", "/tmp/never", endpoint_url=endpoint)
    assert os.environ.get("DAGMIRROR_NEVER_SET") is None


# -- hostile LIST pages (docs/security.md, "The network") ------------------------------------------------
def hostile_page(keys: int) -> bytes:
    """One ListObjectsV2 page of `keys` tiny entries (410,000 of them make 32 MiB), not truncated."""
    entry = b"<Contents><Key>k%07d.py</Key><Size>1</Size><ETag>e</ETag></Contents>"
    body = b"".join(entry % n for n in range(keys))
    return b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>' + body + b"</ListBucketResult>"


@contextlib.contextmanager
def page_server(page: bytes) -> Iterator[str]:
    """A server on 127.0.0.1 answering every request with `page` (stopped when the block ends)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_huge_hostile_list_page_is_refused_within_the_memory_target(tmp_path: Path) -> None:
    """A 32 MiB page of 410,000 keys (real S3 sends at most 1,000): the CLI's peak RSS stays under 150 MB
    and the pass fails with one clear line, nothing written."""
    from .test_reliability_limits import PEAK_RSS_WRAPPER

    with page_server(hostile_page(410_000)) as endpoint:
        args = ["sync", "s3://bkt/dags/", str(tmp_path / "dest"), "--endpoint-url", endpoint, "--json"]
        run = subprocess.run(
            [sys.executable, "-c", PEAK_RSS_WRAPPER, *args],
            env=s3_env(endpoint),
            capture_output=True,
            timeout=120,
            check=False,
        )
    stderr = run.stderr.decode()
    peak_mb = int(stderr.rsplit("VmHWM:", 1)[1].split()[0]) / 1024
    assert run.returncode == 1, stderr[-2000:]
    assert "exceeds the LIST page limit" in stderr.splitlines()[0]
    assert peak_mb < 150, f"peak RSS {peak_mb:.0f} MB"
    assert read_tree(tmp_path / "dest") == {}


def test_a_list_page_of_more_than_a_thousand_entries_or_an_element_flood_is_refused() -> None:
    from dagmirror.source._wire import PageTooLarge
    from dagmirror.source.lean import parse_list

    assert len(parse_list(hostile_page(1000)).objects) == 1000
    with pytest.raises(PageTooLarge, match="more than 1000 entries"):
        parse_list(hostile_page(1001))
    flood = b"<ListBucketResult><Contents>" + b"<x/>" * 100_000 + b"</Contents></ListBucketResult>"
    with pytest.raises(PageTooLarge, match="XML elements"):
        parse_list(flood)


async def test_a_listing_past_max_objects_fails_the_pass_and_deletes_nothing(tmp_path: Path) -> None:
    from dagmirror.errors import PassFailed

    source = MemorySource({f"{PREFIX}f{n}.py": b"x" for n in range(10)})
    cfg = MirrorConfig.create(f"s3://bkt/{PREFIX}", tmp_path, retry=RetryPolicy(attempts=1))
    async with Mirror(cfg, source=source) as mirror:
        await mirror.sync_once()
    small = MirrorConfig.create(f"s3://bkt/{PREFIX}", tmp_path, retry=RetryPolicy(attempts=1), max_objects=5)
    async with Mirror(small, source=source) as mirror:
        with pytest.raises(PassFailed, match="passed 5 objects"):
            await mirror.sync_once()
    assert len(read_tree(tmp_path)) == 10
