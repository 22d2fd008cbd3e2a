"""`dagmirror doctor SOURCE [DEST]`: ask the bucket, the local disk and a running daemon what checks.py
judges. Nothing is written to the bucket (writes are probed with requests S3 must refuse, see
source/admin.py `probe_write`); DEST gets one temporary file, removed at once.

What the write probe cannot tell: DeleteObject permissions (a delete cannot be made to fail harmlessly
in a versioned bucket), and anything a bucket or SCP policy decides by request context the probe does not
share (a VPC endpoint condition answers for the network the doctor runs on, which is the point)."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from dagmirror.config import S3Url
from dagmirror.errors import DagmirrorError
from dagmirror.manifest import ROOT, Pointer, pointer_key
from dagmirror.setup import checks
from dagmirror.setup.checks import Check
from dagmirror.setup.ports import BucketProbe
from dagmirror.source._translate import NO_CREDENTIALS

T = TypeVar("T")
Statvfs = Callable[[Path], os.statvfs_result]
Readyz = Callable[[str], Awaitable[tuple[int, str]]]
_MAX_WALK = 20_000  # directories of DEST inspected for mount points


@dataclass(frozen=True)
class DoctorRequest:
    source: S3Url
    dest: Path | None = None
    role: str = "mirror"
    readyz_url: str | None = None


async def _ask(coro: Awaitable[T]) -> T | Exception:
    """The answer, or the dagmirror error that stood for it (doctor reports; it does not stop)."""
    try:
        return await coro
    except DagmirrorError as exc:
        return exc


async def diagnose(
    request: DoctorRequest,
    probe: BucketProbe | Exception,
    *,
    clock: Callable[[], float] = time.time,
    statvfs: Statvfs = os.statvfs,
    get_readyz: Readyz | None = None,
) -> list[Check]:
    if isinstance(probe, Exception):  # not even a client: every bucket check would say the same
        failure = Check(
            "credentials", "fail", str(probe), "fix the AWS configuration (profile, region, endpoint)"
        )
        return [failure, *await local_checks(request, None, clock, statvfs, get_readyz)]
    source = request.source
    identity = await _ask(probe.caller_identity())
    no_credentials = isinstance(identity, Exception) and str(identity) == NO_CREDENTIALS
    exists = await _ask(probe.bucket_exists())
    region: str | Exception = await _ask(probe.bucket_region()) if exists is True else "?"
    result = [
        checks.credentials(identity, no_credentials=no_credentials),
        checks.endpoint(probe.endpoint, probe.region, region),
        checks.clock(await _ask(probe.server_date()), clock()),
        checks.bucket(source.bucket, exists, await _ask(probe.get_versioning()) if exists is True else ""),
    ]
    pointer = None
    if exists is True:  # without a bucket, every check below would only repeat that
        release, pointer = checks.releases(source.prefix, await _ask(probe.read(pointer_key(source.prefix))))
        result += [release, checks.read_access(source.prefix, await _ask(probe.count_objects(source.prefix)))]
        if request.role != "admin":
            result.append(checks.write_access(request.role, await _write_probes(probe, source.prefix)))
    return result + await local_checks(request, pointer, clock, statvfs, get_readyz)


async def local_checks(
    request: DoctorRequest,
    pointer: Pointer | None,
    clock: Callable[[], float],
    statvfs: Statvfs,
    get_readyz: Readyz | None,
) -> list[Check]:
    result = []
    if request.dest is not None:
        result += dest_checks(request.dest, pointer, statvfs)
    if request.readyz_url is not None:
        status, body = await _ask_readyz(request.readyz_url, get_readyz or fetch_readyz)
        result.append(checks.readyz(request.readyz_url, status, body))
    return result


async def _write_probes(probe: BucketProbe, prefix: str) -> dict[str, str | Exception]:
    name = f".dagmirror-doctor-{secrets.token_hex(6)}"
    keys = [
        f"{prefix}{name}",
        pointer_key(prefix),
        f"{ROOT}bodies/sha256/00/{'0' * 64}",
        f"metadata/fleet/{prefix}{name}.json",
    ]
    return {key: await _ask(probe.probe_write(key)) for key in keys}


def dest_checks(dest: Path, pointer: Pointer | None, statvfs: Statvfs) -> list[Check]:
    """DEST, or its nearest existing ancestor when DEST is yet to be created (dagmirror creates it)."""
    existing = dest
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    shown = str(dest) if existing == dest else f"{dest} (not yet created; checked {existing})"
    result = [checks.dest_writable(shown, _write_error(existing))]
    if existing == dest:
        result.append(checks.dest_filesystem(shown, _mounts_inside(dest), _is_mount(dest)))
    try:
        stats = statvfs(existing)
    except OSError as exc:
        return [*result, Check("dest-space", "fail", f"statvfs {existing}: {exc.strerror}", "")]
    return [*result, checks.dest_space(shown, stats.f_bavail * stats.f_frsize, pointer)]


def _write_error(path: Path) -> str | None:
    probe = path / f".dagmirror-doctor-{secrets.token_hex(6)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(probe)
    return None


def _is_mount(path: Path) -> bool:
    return path.stat().st_dev != path.parent.stat().st_dev if path != path.parent else True


def _mounts_inside(dest: Path) -> list[str]:
    device = dest.stat().st_dev
    found: list[str] = []
    for count, (root, dirs, _) in enumerate(os.walk(dest)):  # os.walk does not follow links by default
        if count >= _MAX_WALK:
            break
        for name in dirs:
            child = Path(root, name)
            if not child.is_symlink() and child.stat().st_dev != device:
                found.append(str(child))
    return found


async def _ask_readyz(url: str, get: Readyz) -> tuple[int | Exception, str]:
    try:
        return await get(url)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        return Exception(f"{type(exc).__name__}: {exc}".rstrip(": ")), ""


async def fetch_readyz(url: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        return resp.status, (await resp.text())[:2000]
