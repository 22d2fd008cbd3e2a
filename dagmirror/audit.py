"""Audit records: one JSON line per pass that changed something, kept locally until shipped to S3.

Local files are `<dir>/<UTC date>.jsonl`; shipping PUTs each day's whole file to
`s3://BUCKET/metadata/sync-logs/<host>/<date>.jsonl` (the layout teams already use), so a retry after a
failed shipment is idempotent. `<date>.jsonl.shipped` remembers how many bytes are already in S3.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from dagmirror.errors import DagmirrorError
from dagmirror.models import SyncReport
from dagmirror.source import ObjectSink

log = logging.getLogger("dagmirror")
S3_PREFIX = "metadata/sync-logs"


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
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.directory.parent.name == ".dagmirror" and self.directory.is_symlink():
            # The default folder lives inside DEST, where anyone who can write DEST could plant a link.
            log.error("audit folder %s is a symlink: refusing to write through it", self.directory)
            return False
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self._file_for(now), flags, 0o644)
        try:
            os.write(fd, line)  # one write of one line: concurrent appenders never interleave within it
        finally:
            os.close(fd)
        return True

    async def ship(self, sink: ObjectSink) -> int:
        """Upload each day file that grew since its last shipment; failures are logged and retried later."""
        shipped = 0
        for path in sorted(self.directory.glob("*.jsonl")):
            marker = path.with_name(path.name + ".shipped")
            body = path.read_bytes()
            done = int(marker.read_text() or 0) if marker.exists() else 0
            if len(body) <= done:
                continue
            try:
                await sink.put(f"{S3_PREFIX}/{self.host}/{path.name}", body)
            except DagmirrorError as exc:
                log.warning("audit shipment of %s failed, will retry: %s", path.name, exc)
                return shipped
            marker.write_text(str(len(body)))
            shipped += 1
        return shipped

    def _file_for(self, at: float) -> Path:
        return self.directory / (time.strftime("%Y-%m-%d", time.gmtime(at)) + ".jsonl")
