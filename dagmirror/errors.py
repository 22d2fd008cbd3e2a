"""One error hierarchy. Every error's str() is one line fit for a user; `transient` says retry or stop."""

from __future__ import annotations

import re

# C0/C1 controls (ESC starts terminal sequences; CR and LF would forge lines), DEL, bidi overrides and line
# separators.
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def printable(value: object, limit: int | None = None) -> str:
    """`value` as one line safe for a terminal or a log: control and disguising characters become '?',
    and past `limit` characters it is cut (text from a server or the bucket is never trusted to be short)."""
    text = _UNSHOWABLE.sub("?", str(value))
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


class DagmirrorError(Exception):
    """Base of every error dagmirror raises on purpose."""

    transient: bool = False


class ConfigError(DagmirrorError):
    """A bad flag, URL, or config value. The CLI exits 2."""


class SourceError(DagmirrorError):
    """The object store failed a request. Raised only after the SDK's own exception was translated."""

    def __init__(self, message: str, *, transient: bool, code: str | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.code = code


class SourceUnavailable(SourceError):
    """Network faults, timeouts, 5xx and throttling: worth a retry."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, transient=True, code=code)


class SourceConfigError(SourceError):
    """The source itself is wrong (missing bucket, access denied, bad credentials): retrying cannot help."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, transient=False, code=code)


class ObjectVanished(SourceError):
    """The key was listed but deleted before its GET; the next listing will not have it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False, code="NoSuchKey")


class PreconditionFailed(SourceError):
    """A conditional write was refused (HTTP 412, or 409 ConditionalRequestConflict): the object is not what
    the writer last read (If-Match), or already exists (If-None-Match: *). Not retried: the caller decides."""

    def __init__(self, message: str, *, code: str = "PreconditionFailed") -> None:
        super().__init__(message, transient=False, code=code)


class IntegrityError(DagmirrorError):
    """A body did not match its length, ETag, checksum or xxh3: never installed, retried as transient."""

    transient = True


class InstallError(DagmirrorError):
    """Writing into DEST failed for one object (blocked path, planted symlink, full disk)."""


class PathBlocked(InstallError):
    """A file must become a directory or the reverse; `blocker` is the relative path in the way."""

    def __init__(self, message: str, blocker: str) -> None:
        super().__init__(message)
        self.blocker = blocker


class DestLocked(DagmirrorError):
    """Another dagmirror process is syncing the same DEST."""


class PassFailed(DagmirrorError):
    """The pass stopped before its listing completed; nothing was deleted. `cause` says why."""

    def __init__(self, message: str, cause: DagmirrorError) -> None:
        super().__init__(message)
        self.cause = cause
        self.transient = cause.transient


class ReleaseError(DagmirrorError):
    """A release manifest or pointer that is not what dagmirror writes (malformed, wrong hash, wrong prefix),
    or a release that could not be fetched whole: the pass fails and DEST stays at the release it had."""


class ReleaseConflict(DagmirrorError):
    """Another publish moved the environment's pointer and changed the same paths: this deploy published no
    pointer and wrote no plain file. The CLI exits 5."""


class DeployRefused(DagmirrorError):
    """Validation refused a deploy before anything was written; one line per problem. The CLI exits 4."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems) or "deploy refused")
        self.problems = tuple(problems)


class GuardRefused(DagmirrorError):
    """The delete guard refused a deploy's deletions, so nothing was written at all. The CLI exits 3."""


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error inside nested exception groups (a pass's stages nest TaskGroups): its cause."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first
