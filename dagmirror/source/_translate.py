"""The source boundary: every transport's request runs inside `Translator.request`, which gives it a whole
deadline, maps whatever it raises onto dagmirror.errors (transient or fatal, NoSuchKey, 304) and counts the
failures; the transport counts its successes in the same `RequestCounter`.

Each transport passes a `Mapper` for its own exceptions (LeanHTTPError, botocore's ClientError...); what both
share (timeouts, sockets, aiohttp, bodies too large, untrusted XML) is mapped here. No SDK import here."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from xml.etree import ElementTree

from dagmirror.config import MirrorConfig
from dagmirror.errors import (
    ObjectVanished,
    PreconditionFailed,
    SourceConfigError,
    SourceError,
    SourceUnavailable,
    printable,
)
from dagmirror.source._wire import BodyTooLarge, PageTooLarge, UntrustedXML

# A transport's own exceptions -> a dagmirror error (None: not one of its own). The str is where it happened.
Mapper = Callable[[BaseException, str], Exception | None]
NO_CREDENTIALS = "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID)"
# Codes that mean "this source is misconfigured": retrying cannot help, the pass stops.
_FATAL_CODES = frozenset(
    {
        "NoSuchBucket",
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidBucketName",
        "InvalidToken",
        "ExpiredToken",
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
    }
)
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable"}
)
# A whole GET may take its deadline plus this long per byte: slower than 256 KiB/s is a stuck transfer.
_MIN_BYTES_PER_SECOND = 256 * 1024


class RequestCounter:
    """Requests by operation and outcome: 'LIST', 'GET 200', 'GET 304', 'GET 404', 'LIST error'..."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def add(self, outcome: str) -> None:
        self._counts[outcome] += 1

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)


class NotModifiedSignal(Exception):
    """A conditional GET answered 304 through an SDK that raises it as an error; the caller returns
    NotModified, and it is not counted as an error."""


def request_deadline(config: MirrorConfig) -> float:
    """Connect and read timeouts bound each socket operation; a server that sends one byte just before each
    read timeout would still hold a request forever, so every request also has a whole deadline."""
    return config.connect_timeout + config.read_timeout


def get_deadline(base: float, max_bytes: int | None) -> float:
    return base + (max_bytes or 0) / _MIN_BYTES_PER_SECOND


class Translator:
    """One bucket at one endpoint, as its errors name it."""

    __slots__ = ("_mapper", "bucket", "counter", "endpoint")

    def __init__(self, bucket: str, endpoint: str, counter: RequestCounter, mapper: Mapper) -> None:
        self.bucket, self.endpoint, self.counter, self._mapper = bucket, endpoint, counter, mapper

    def request(self, op: str, target: str, deadline: float | None = None) -> _Request:
        """`async with` this around one request; `deadline` None: no whole deadline."""
        return _Request(self, op, target, deadline)

    def where(self, op: str, target: str) -> str:
        return f"{op} s3://{self.bucket}/{target} at {self.endpoint}"

    def translate(self, exc: BaseException, where: str) -> Exception | None:
        mapped = self._mapper(exc, where)
        if mapped is not None:
            return mapped
        if isinstance(exc, PageTooLarge):
            return SourceError(f"{where}: {exc}", transient=False, code="PageTooLarge")
        if isinstance(exc, BodyTooLarge):
            return SourceError(f"{where}: {exc}", transient=False, code="BodyTooLarge")
        if isinstance(exc, (UntrustedXML, ElementTree.ParseError)):
            return SourceUnavailable(f"{where}: malformed S3 response: {exc}")
        aiohttp = sys.modules.get("aiohttp")  # loaded only behind a proxy (lean) or by the SDK transport
        if isinstance(exc, (asyncio.TimeoutError, OSError)) or (
            aiohttp and isinstance(exc, aiohttp.ClientError)
        ):
            return SourceUnavailable(f"{where}: {type(exc).__name__}: {first_line(exc)}")
        return None


class _Request:
    """One class rather than two stacked context managers: this runs around every GET of the hot path."""

    __slots__ = ("_deadline", "_op", "_target", "_timeout", "_translator")

    def __init__(self, translator: Translator, op: str, target: str, deadline: float | None) -> None:
        self._translator, self._op, self._target, self._deadline = translator, op, target, deadline
        self._timeout: asyncio.Timeout | None = None

    async def __aenter__(self) -> None:
        if self._deadline is not None:
            self._timeout = asyncio.timeout(self._deadline)
            await self._timeout.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:  # never swallows: re-raises translated, or lets the original through
        if self._timeout is not None:
            try:
                await self._timeout.__aexit__(exc_type, exc, tb)
            except TimeoutError as expired:  # the whole deadline passed (it cancelled the request)
                exc = expired
            if isinstance(exc, TimeoutError) and self._timeout.expired():
                where = self._translator.where(self._op, self._target)
                raise SourceUnavailable(f"{where}: no complete answer within {self._deadline:.0f}s") from None
        if exc is None or isinstance(exc, (SourceError, asyncio.CancelledError)):
            return
        translator = self._translator
        translated = translator.translate(exc, translator.where(self._op, self._target))
        if translated is None:
            return
        if isinstance(translated, ObjectVanished):  # an expected answer (deletes are confirmed this way)
            translator.counter.add(f"{self._op} 404")
        elif isinstance(translated, PreconditionFailed):  # a conditional write refused: an answer, too
            translator.counter.add(f"{self._op} 412")
        elif not isinstance(translated, NotModifiedSignal):
            translator.counter.add(f"{self._op} error")
        raise translated from None


def classify(code: str, status: int, message: str, where: str) -> Exception:
    """An S3 error answer (its code, HTTP status and message) -> the dagmirror error it means. The code and
    message are the server's words: one printable line each, cut short, before they join any error."""
    code, message = printable(code, 64), printable(message, 300)
    if code == "304" or status == 304:
        return NotModifiedSignal()
    if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
        return PreconditionFailed(f"{where}: {code or status}: {message}", code=code or "PreconditionFailed")
    if code == "NoSuchBucket":
        return SourceConfigError(f"bucket does not exist: {where}", code=code)
    if code == "NoSuchKey":
        # Only S3's own answer counts: a bare 404 (an ingress or proxy misroute) must never confirm that an
        # object is gone, because a confirmed absence deletes the local file.
        return ObjectVanished(f"object vanished before download: {where}")
    if code in _FATAL_CODES or status in (301, 400, 401, 403):
        return SourceConfigError(f"{where}: {code}: {message}", code=code)
    transient = code in _TRANSIENT_CODES or status >= 500 or status == 429
    return SourceError(f"{where}: {code or status}: {message}", transient=transient, code=code)


def first_line(value: object) -> str:
    """The first line of an error's text (often a server's or the SDK's words), printable and cut short."""
    text = str(value).strip()
    return printable(text.splitlines()[0], 300) if text else ""
