"""What a pass counts as it goes: one typed Tally, read live as the pass's progress and turned into the
SyncReport at the end (no string-keyed counters, no second copy for the progress line)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dagmirror.models import Failure, Installed, Rejection, SyncReport, Tombstone


@dataclass(slots=True)
class Tally:
    """Counters of the pass in flight. The CLI's progress line reads listed, queued, downloaded, bytes and
    listing_done while the pass runs; in a dry run, downloaded and bytes count what would be fetched."""

    listed: int = 0
    queued: int = 0
    downloaded: int = 0
    bytes: int = 0
    listing_done: bool = False
    unchanged: int = 0
    not_modified: int = 0
    restored: int = 0
    adopted: int = 0
    excluded: int = 0
    vanished: int = 0
    retries: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    installed: list[Installed] = field(default_factory=list)

    def report(
        self,
        *,
        source: str,
        dest: str,
        dry_run: bool,
        seconds: float,
        guard: str | None,
        tombstones: list[Tombstone],
        requests: dict[str, int],
    ) -> SyncReport:
        return SyncReport(
            source=source,
            dest=dest,
            dry_run=dry_run,
            listed=self.listed,
            downloaded=self.downloaded,
            unchanged=self.unchanged,
            deleted=len(tombstones),
            rejected=len(self.rejections),
            failed=len(self.failures),
            bytes=self.bytes,
            seconds=seconds,
            not_modified=self.not_modified,
            restored=self.restored,
            adopted=self.adopted,
            excluded=self.excluded,
            vanished=self.vanished,
            retries=self.retries,
            guard=guard,
            rejections=tuple(self.rejections),
            failures=tuple(self.failures),
            tombstones=tuple(tombstones),
            installed=tuple(self.installed),
            requests=requests,
        )


# The live view of a pass that callers (the CLI's progress line) read: the pass's own Tally.
Progress = Tally


def request_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Requests made between two `request_counts()` readings, leaving out operations with none."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
