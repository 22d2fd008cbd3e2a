"""The S3 ObjectSource: the ONLY module that imports the AWS SDK. Every SDK exception is translated here."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aioboto3
import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from yarl import URL

from dagmirror.config import MirrorConfig, redact_url
from dagmirror.errors import ObjectVanished, SourceConfigError, SourceError, SourceUnavailable
from dagmirror.models import FetchedObject, ListPage, NotModified, RemoteObject

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
_CHECKSUM_FIELDS = ("CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME")
_OPAQUE_ETAG_SSE = frozenset({"aws:kms", "aws:kms:dsse"})
_XML_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_XML_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")


class S3Source:
    """ListObjectsV2 + GetObject on one shared aioboto3 client whose pool fits every worker at once."""

    def __init__(self, client: Any, bucket: str, endpoint: str, stack: AsyncExitStack) -> None:
        self._client = client
        self._bucket = bucket
        self._endpoint = endpoint
        self._stack = stack
        self._counts: Counter[str] = Counter()
        self._lean: _LeanGet | None = None

    @classmethod
    async def open(cls, config: MirrorConfig) -> S3Source:
        session = aioboto3.Session(profile_name=config.profile, region_name=config.region)
        custom_endpoint = config.endpoint_url is not None
        sdk_config = Config(
            max_pool_connections=config.concurrency + config.list_concurrency + 4,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            retries={"total_max_attempts": 1},  # dagmirror's own retry policy owns every retry
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",  # dagmirror verifies bodies itself
            s3={"addressing_style": "path"} if custom_endpoint else None,
        )
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                session.client("s3", endpoint_url=config.endpoint_url, config=sdk_config)
            )
        except BotoCoreError as exc:
            await stack.aclose()
            raise SourceConfigError(f"cannot create S3 client: {exc}") from None
        endpoint = redact_url(str(client.meta.endpoint_url))
        source = cls(client, config.source.bucket, endpoint, stack)
        if config.transport == "lean":
            source._lean = await _LeanGet.open(session, client, config, stack)
        return source

    async def list_page(self, prefix: str, *, delimiter: bool, token: str | None) -> ListPage:
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        if delimiter:
            params["Delimiter"] = "/"
        if token:
            params["ContinuationToken"] = token
        async with self._translated("LIST", prefix):
            resp = await self._client.list_objects_v2(**params)
        self._counts["LIST"] += 1
        objects = tuple(
            RemoteObject(o["Key"], o.get("ETag", "").strip('"'), int(o.get("Size", 0)))
            for o in resp.get("Contents", ())
        )
        prefixes = tuple(p["Prefix"] for p in resp.get("CommonPrefixes", ()))
        more = resp.get("IsTruncated") and resp.get("NextContinuationToken")
        return ListPage(objects, prefixes, resp["NextContinuationToken"] if more else None)

    async def get(self, key: str, *, if_none_match: str | None) -> FetchedObject | NotModified:
        if self._lean is not None:
            async with self._translated("GET", key):
                result = await self._lean.get(key, if_none_match)
            self._counts["GET 304" if isinstance(result, NotModified) else "GET 200"] += 1
            return result
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if if_none_match:
            params["IfNoneMatch"] = f'"{if_none_match}"'
        try:
            async with self._translated("GET", key):
                resp = await self._client.get_object(**params)
                async with resp["Body"] as stream:
                    body = await stream.read()
        except _NotModifiedSignal:
            self._counts["GET 304"] += 1
            return NotModified(if_none_match or "")
        self._counts["GET 200"] += 1
        return _fetched(key, body, resp)

    def request_counts(self) -> dict[str, int]:
        return dict(self._counts)

    async def aclose(self) -> None:
        await self._stack.aclose()

    def _translated(self, op: str, target: str) -> _Translate:
        return _Translate(self, op, target)


class S3Sink:
    """PutObject on one bucket, through the same translation of SDK errors as the source."""

    def __init__(self, source: S3Source) -> None:
        self._source = source

    @classmethod
    async def open(
        cls, bucket: str, *, endpoint_url: str | None, region: str | None, profile: str | None
    ) -> S3Sink:
        from dagmirror.config import S3Url  # local: only the bucket matters here

        config = MirrorConfig(
            S3Url(bucket, ""), Path("."), endpoint_url=endpoint_url, region=region, profile=profile
        )
        return cls(await S3Source.open(replace(config, transport="sdk", concurrency=4)))

    async def put(self, key: str, body: bytes, *, metadata: dict[str, str] | None = None) -> str | None:
        source = self._source
        async with source._translated("PUT", key):
            resp = await source._client.put_object(
                Bucket=source._bucket, Key=key, Body=body, Metadata=metadata or {}
            )
        source._counts["PUT"] += 1
        version = resp.get("VersionId")
        return str(version) if version else None

    async def aclose(self) -> None:
        await self._source.aclose()


class _NotModifiedSignal(Exception):
    pass


class _Translate:
    """Async context manager mapping SDK/transport exceptions onto dagmirror's hierarchy."""

    def __init__(self, source: S3Source, op: str, target: str) -> None:
        self._source, self._op, self._target = source, op, target

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool:
        if exc is None or isinstance(exc, (SourceError, asyncio.CancelledError)):
            return False
        translated = self._translate(exc)
        if translated is None:
            return False
        if not isinstance(translated, _NotModifiedSignal):
            self._source._counts[f"{self._op} error"] += 1
        raise translated from None

    def _translate(self, exc: BaseException) -> Exception | None:
        where = f"{self._op} s3://{self._source._bucket}/{self._target} at {self._source._endpoint}"
        if isinstance(exc, ClientError):
            return _client_error(exc, where)
        if isinstance(exc, NoCredentialsError):
            return SourceConfigError("no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID)")
        if isinstance(exc, (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError, OSError)):
            return SourceUnavailable(f"{where}: {type(exc).__name__}: {_first_line(exc)}")
        return None


def _client_error(exc: ClientError, where: str) -> Exception:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return _classify(code, status, _first_line(error.get("Message") or code), where)


def _classify(code: str, status: int, message: str, where: str) -> Exception:
    if code == "304" or status == 304:
        return _NotModifiedSignal()
    if code == "NoSuchBucket":
        return SourceConfigError(f"bucket does not exist: {where}", code=code)
    if code in ("NoSuchKey", "404"):
        return ObjectVanished(f"object vanished before download: {where}")
    if code in _FATAL_CODES or status in (301, 400, 401, 403):
        return SourceConfigError(f"{where}: {code}: {message}", code=code)
    transient = code in _TRANSIENT_CODES or status >= 500 or status == 429
    return SourceError(f"{where}: {code or status}: {message}", transient=transient, code=code)


class _LeanGet:
    """GetObject straight over aiohttp, signed by botocore's SigV4 signer with the session's credentials.

    The SDK's per-request machinery (endpoint rules, event hooks, user-agent assembly, response parsing with
    dateutil) costs about 1.5 ms of CPU per GET, several times the HTTP work itself; on a cold pass of
    thousands of small DAG files that is the bottleneck (see docs/benchmarks.md). Endpoint, region and
    credentials still come from the SDK, resolved once.
    """

    def __init__(
        self, http: aiohttp.ClientSession, credentials: Any, region: str, base: str, where: str
    ) -> None:
        self._http = http
        self._credentials = credentials
        self._region = region
        self._base = base  # ends with '/': the URL a quoted key is appended to (path-style addressing)
        self._where = where

    @classmethod
    async def open(cls, session: Any, client: Any, config: MirrorConfig, stack: AsyncExitStack) -> _LeanGet:
        credentials = await session.get_credentials()
        if credentials is None:
            raise SourceConfigError("no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID)")
        pool = config.concurrency + 4
        http = await stack.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=pool, limit_per_host=pool, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(
                    sock_connect=config.connect_timeout, sock_read=config.read_timeout
                ),
                auto_decompress=False,  # bytes as stored, like the SDK does: never decode Content-Encoding
                skip_auto_headers=("User-Agent",),
            )
        )
        endpoint = str(client.meta.endpoint_url).rstrip("/")
        base = f"{endpoint}/{quote(config.source.bucket)}/"
        region = client.meta.region_name
        region = "us-east-1" if region in (None, "", "aws-global") else str(region)
        return cls(http, credentials, region, base, redact_url(endpoint))

    async def get(self, key: str, if_none_match: str | None) -> FetchedObject | NotModified:
        url = self._base + quote(key, safe="/~")
        headers = {"x-amz-checksum-mode": "ENABLED"}
        if if_none_match:
            headers["If-None-Match"] = f'"{if_none_match}"'
        signed = await self._sign(url, headers)
        async with self._http.get(URL(url, encoded=True), headers=signed, allow_redirects=False) as resp:
            body = await resp.read()
            if resp.status == 200:
                return _fetched(key, body, _lean_fields(resp.headers, len(body)))
            if resp.status == 304:
                return NotModified(if_none_match or "")
            if "x-amz-bucket-region" in resp.headers and resp.status in (301, 400):
                region = resp.headers["x-amz-bucket-region"]
                raise SourceConfigError(
                    f"the bucket is in region {region}, not {self._region}: pass --region {region}"
                )
            code = _xml_field(_XML_CODE, body) or str(resp.status)
            message = _xml_field(_XML_MESSAGE, body) or resp.reason or code
            raise _classify(code, resp.status, message, f"GET {key} at {self._where}")

    async def _sign(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        frozen = await self._credentials.get_frozen_credentials()
        request = AWSRequest(method="GET", url=url, headers=headers)
        S3SigV4Auth(frozen, "s3", self._region).add_auth(request)
        return dict(request.headers.items())


def _lean_fields(headers: Any, length: int) -> dict[str, Any]:
    """The subset of GetObject's response fields that _fetched reads, from raw headers."""
    fields: dict[str, Any] = {
        "ETag": headers.get("ETag", ""),
        "ContentLength": int(headers.get("Content-Length", length)),
        "Metadata": {"xxh3": headers["x-amz-meta-xxh3"]} if "x-amz-meta-xxh3" in headers else {},
        "ServerSideEncryption": headers.get("x-amz-server-side-encryption"),
        "SSECustomerAlgorithm": headers.get("x-amz-server-side-encryption-customer-algorithm"),
        "VersionId": headers.get("x-amz-version-id"),
    }
    for name in _CHECKSUM_FIELDS:
        value = headers.get(f"x-amz-checksum-{name.lower()}")
        if value:
            fields[f"Checksum{name}"] = value
    return fields


def _xml_field(pattern: re.Pattern[bytes], body: bytes) -> str:
    found = pattern.search(body[:4096])
    return found.group(1).decode("utf-8", "replace") if found else ""


def _fetched(key: str, body: bytes, resp: dict[str, Any]) -> FetchedObject:
    checksums = tuple(
        (name, str(resp[f"Checksum{name}"])) for name in _CHECKSUM_FIELDS if resp.get(f"Checksum{name}")
    )
    metadata = resp.get("Metadata") or {}
    sse = resp.get("ServerSideEncryption")
    return FetchedObject(
        key=key,
        body=body,
        etag=str(resp.get("ETag", "")).strip('"'),
        content_length=int(resp.get("ContentLength", len(body))),
        checksums=checksums,
        meta_xxh3=metadata.get("xxh3"),
        kms_or_customer_key=sse in _OPAQUE_ETAG_SSE or bool(resp.get("SSECustomerAlgorithm")),
        version_id=resp.get("VersionId"),
    )


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else ""
