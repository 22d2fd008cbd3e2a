"""Audit records: one JSON line per pass that changed something, kept locally until shipped to S3.

Local files are `<dir>/<UTC date>.jsonl`; shipping PUTs each day's whole file to
`s3://BUCKET/metadata/sync-logs/<host>/<date>.jsonl` (the layout teams already use; `--audit-s3
s3://BUCKET/PREFIX` puts them under PREFIX/ instead), so a retry after a
failed shipment is idempotent. `<date>.jsonl.shipped` remembers how many bytes are already in S3.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from dagmirror.dirfd import PRIVATE_DIR, open_regular, read_regular, write_all
from dagmirror.errors import DagmirrorError
from dagmirror.models import SyncReport
from dagmirror.source import ObjectSink

log = logging.getLogger("dagmirror")
S3_PREFIX = "metadata/sync-logs"
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT
MAX_DAY_BYTES = 256 << 20  # one day's file; a larger one is not shipped (logged), never read whole


def audit_record(report: SyncReport, *, mapping: str, pass_id: str, host: str, at: float) -> dict[str, Any]:
    files: list[dict[str, Any]] = [
        {
            "action": "download",
            "reason": i.reason,
            "path": i.path,
            "key": i.key,
            "etag": i.etag,
            "xxh3": i.xxh3,
            "size": i.size,
        }
        for i in report.installed
    ]
    files += [{"action": "delete", "path": t.path, "key": t.key, "etag": t.etag} for t in report.tombstones]
    result = "guard" if report.guard else "partial" if report.failed else "ok"
    result = "untrusted" if report.untrusted else result
    return {
        "pass_id": pass_id,
        "time": round(at, 3),
        "host": host,
        "mapping": mapping,
        "source": report.source,
        "dest": report.dest,
        "result": result,
        "duration": round(report.seconds, 4),
        "files": files,
        "failures": [{"key": f.key, "error": f.error} for f in report.failures],
        "rejected": report.rejected,
        "guard": report.guard,
        "mode": report.mode,
        "release": report.release,
        "release_seq": report.release_seq,
        "untrusted": report.untrusted,  # why trust refused the release (signed releases), else null
    }


class AuditLog:
    def __init__(self, directory: Path, host: str, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.host = host
        self._clock = clock

    def append(self, report: SyncReport, *, mapping: str, pass_id: str) -> bool:
        """Record a pass if it changed, failed or refused something; return whether a line was written."""
        if not (report.changed or report.failed or report.guard):
            return False
        now = self._clock()
        line = (
            orjson.dumps(audit_record(report, mapping=mapping, pass_id=pass_id, host=self.host, at=now))
            + b"\n"
        )
        try:
            dir_fd = self._open_dir(create=True)
            try:
                # O_NONBLOCK (regular files only): append runs on the event loop, and a FIFO planted
                # here must fail at once, not block it
                fd = open_regular(self._file_for(now).name, _APPEND, dir_fd, 0o644)
                try:
                    os.write(fd, line)  # one write of one line: concurrent appenders never interleave
                finally:
                    os.close(fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:  # a full disk or a planted link must never stop the mirror itself
            log.warning("audit record not written to %s: %s", self.directory, exc)
            return False
        return True

    async def ship(self, sink: ObjectSink, *, prefix: str = S3_PREFIX) -> int:
        """Upload each day file that grew since its last shipment to `<prefix>/<host>/<date>.jsonl`;
        failures are logged and retried later.
        Files are read and markers written through the folder's fd with O_NOFOLLOW and O_NONBLOCK, in a
        thread: a link planted in the folder can neither make us upload another file nor overwrite one
        outside it, and a FIFO or device planted there is skipped, never waited on by the event loop."""
        shipped = 0
        for name in await asyncio.to_thread(self._day_files):
            body = await asyncio.to_thread(self._unshipped, name)
            if body is None:
                continue
            try:
                await sink.put(f"{prefix.rstrip('/')}/{self.host}/{name}", body)
            except DagmirrorError as exc:
                log.warning("audit shipment of %s failed, will retry: %s", name, exc)
                return shipped
            await asyncio.to_thread(self._mark_shipped, name, len(body))
            shipped += 1
        return shipped

    def _day_files(self) -> list[str]:
        try:
            dir_fd = self._open_dir(create=False)
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("audit folder %s unusable: %s", self.directory, exc)
            return []
        try:
            return sorted(n for n in os.listdir(dir_fd) if n.endswith(".jsonl"))
        finally:
            os.close(dir_fd)

    def _unshipped(self, name: str) -> bytes | None:
        """The day file `name` when it grew since its last shipment; None when not, or unreadable."""
        try:
            dir_fd = self._open_dir(create=False)
            try:
                body = read_regular(name, dir_fd, MAX_DAY_BYTES)
                try:
                    done = int(read_regular(name + ".shipped", dir_fd, 32) or 0)
                except FileNotFoundError:
                    done = 0
            finally:
                os.close(dir_fd)
        except (OSError, ValueError) as exc:
            log.warning("audit file %s unreadable: %s", name, exc)
            return None
        return body if len(body) > done else None

    def _mark_shipped(self, name: str, size: int) -> None:
        try:
            dir_fd = self._open_dir(create=False)
            try:
                fd = open_regular(name + ".shipped", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, dir_fd)
                try:
                    write_all(fd, str(size).encode())
                finally:
                    os.close(fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:  # shipped again next time: the PUT is idempotent
            log.warning("audit marker for %s not written: %s", name, exc)

    def _open_dir(self, *, create: bool) -> int:
        if create:
            self.directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        # The default folder lives inside DEST, where anyone who can write DEST could plant a link; a folder
        # the operator chose (--audit-dir) may legitimately be one.
        nofollow = os.O_NOFOLLOW if self.directory.parent.name == ".dagmirror" else 0
        return os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | nofollow)

    def _file_for(self, at: float) -> Path:
        return self.directory / (time.strftime("%Y-%m-%d", time.gmtime(at)) + ".jsonl")
