"""The S3 ObjectSource: the ONLY module that imports the AWS SDK. Every SDK exception is translated here."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import aiohttp
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from dagmirror.config import MirrorConfig, redact_url
from dagmirror.errors import ObjectVanished, SourceConfigError, SourceError, SourceUnavailable
from dagmirror.models import FetchedObject, ListPage, NotModified, RemoteObject
from dagmirror.source import Copied, LiveObject, ObjectHead
from dagmirror.source.lean import BodyTooLarge, LeanHTTPError, LeanS3, UntrustedXML
from dagmirror.source.sigv4 import Credentials, Signer

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
# A whole GET may take its deadline plus this long per byte: slower than 256 KiB/s is a stuck transfer.
_MIN_BYTES_PER_SECOND = 256 * 1024
log = logging.getLogger("dagmirror")


class S3Source:
    """ListObjectsV2 + GetObject for one bucket.

    Transport "lean" (default): both requests over one aiohttp pool, signed by `sigv4.Signer`, with endpoint,
    region and credentials resolved once from the SDK's own configuration chain; no SDK client is built, so
    the one-shot CLI skips loading aioboto3 and the S3 service model (about 0.5 s per start), and no page is
    parsed with dateutil. Transport "sdk": everything through one shared aioboto3 client, for setups the lean
    path does not cover (see docs/configuration.md).
    """

    def __init__(
        self, client: Any, bucket: str, endpoint: str, stack: AsyncExitStack, *, deadline: float = 35.0
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._endpoint = endpoint
        self._stack = stack
        self._counts: Counter[str] = Counter()
        self._lean: LeanS3 | None = None
        # Connect and read timeouts bound each socket operation; a server that sends one byte just before
        # each read timeout would still hold a request forever, so every request also has a whole deadline.
        self._deadline = deadline

    @classmethod
    async def open(cls, config: MirrorConfig) -> S3Source:
        if config.transport == "lean":
            return await cls._open_lean(config)
        session = _sdk_session(config.profile, config.region)
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
        return cls(client, config.source.bucket, endpoint, stack, deadline=_deadline(config))

    @classmethod
    async def _open_lean(cls, config: MirrorConfig) -> S3Source:
        provider, region = await _credentials_and_region(config)
        bucket = config.source.bucket
        if config.endpoint_url:
            endpoint, virtual = config.endpoint_url.rstrip("/"), False
        else:  # AWS itself: virtual-hosted addressing where the bucket name is a valid DNS label
            suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
            endpoint = f"https://s3.{region}.{suffix}"
            virtual = re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", bucket) is not None
        pool = config.concurrency + config.list_concurrency + 4
        stack = AsyncExitStack()
        http = await stack.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=pool, limit_per_host=pool, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(
                    sock_connect=config.connect_timeout, sock_read=config.read_timeout
                ),
                auto_decompress=False,  # bytes as stored, like the SDK: never decode Content-Encoding
                skip_auto_headers=("User-Agent",),
                trust_env=False,  # LeanS3 resolves $HTTPS_PROXY/$NO_PROXY once, not per request
            )
        )
        source = cls(None, bucket, redact_url(endpoint), stack, deadline=_deadline(config))
        source._lean = LeanS3(http, endpoint, bucket, Signer(region), provider, virtual_host=virtual)
        return source

    async def list_page(self, prefix: str, *, delimiter: bool, token: str | None) -> ListPage:
        if self._lean is not None:
            async with self._translated("LIST", prefix), self._within(self._deadline, "LIST", prefix):
                page = await self._lean.list_page(prefix, delimiter=delimiter, token=token)
            self._counts["LIST"] += 1
            return page
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        if delimiter:
            params["Delimiter"] = "/"
        if token:
            params["ContinuationToken"] = token
        async with self._translated("LIST", prefix), self._within(self._deadline, "LIST", prefix):
            resp = await self._client.list_objects_v2(**params)
        self._counts["LIST"] += 1
        if resp.get("IsTruncated") and not resp.get("NextContinuationToken"):
            # Ending here would make a partial listing look complete, and its absent keys look deleted.
            self._counts["LIST error"] += 1
            raise SourceUnavailable(f"LIST s3://{self._bucket}/{prefix}: truncated page without a token")
        objects = tuple(
            RemoteObject(o["Key"], o.get("ETag", "").strip('"'), int(o.get("Size", 0)))
            for o in resp.get("Contents", ())
        )
        prefixes = tuple(p["Prefix"] for p in resp.get("CommonPrefixes", ()))
        more = resp.get("IsTruncated") and resp.get("NextContinuationToken")
        return ListPage(objects, prefixes, resp["NextContinuationToken"] if more else None)

    async def get(self, key: str, *, if_none_match: str | None) -> FetchedObject | NotModified:
        return await self.get_at_most(key, if_none_match=if_none_match, max_bytes=None)

    async def get_at_most(
        self, key: str, *, if_none_match: str | None, max_bytes: int | None
    ) -> FetchedObject | NotModified:
        """GetObject reading at most `max_bytes` of body (the engine passes the listed size plus some room):
        a server sending a huge body for a small key fails this GET instead of filling memory."""
        deadline = self._deadline + (max_bytes or 0) / _MIN_BYTES_PER_SECOND
        if self._lean is not None:
            async with self._translated("GET", key), self._within(deadline, "GET", key):
                answer = await self._lean.get(key, if_none_match=if_none_match, limit=max_bytes)
            if answer.status == 304:
                self._counts["GET 304"] += 1
                return NotModified(if_none_match or "")
            self._counts["GET 200"] += 1
            return _fetched(key, answer.body, _lean_fields(answer.headers, len(answer.body)))
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if if_none_match:
            params["IfNoneMatch"] = f'"{if_none_match}"'
        try:
            async with self._translated("GET", key), self._within(deadline, "GET", key):
                resp = await self._client.get_object(**params)
                async with resp["Body"]:  # the context releases the connection; reads go via the body
                    body = await _read_at_most(resp["Body"], resp.get("ContentLength"), max_bytes)
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

    @contextlib.asynccontextmanager
    async def _within(self, seconds: float, op: str, target: str) -> AsyncIterator[None]:
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                yield
        except TimeoutError:
            if not deadline.expired():
                raise  # a socket timeout, translated as such
            where = f"{op} s3://{self._bucket}/{target} at {self._endpoint}"
            raise SourceUnavailable(f"{where}: no complete answer within {seconds:.0f}s") from None


def _sdk_session(profile: str | None, region: str | None) -> Any:
    """An aioboto3 Session; a bad AWS configuration (an unknown profile...) is a SourceConfigError."""
    import aioboto3  # only the sdk transport and the sink pay for importing it

    try:
        return aioboto3.Session(profile_name=profile, region_name=region)
    except BotoCoreError as exc:
        raise SourceConfigError(f"AWS configuration: {_first_line(exc)}") from None


def _deadline(config: MirrorConfig) -> float:
    return config.connect_timeout + config.read_timeout


async def _read_at_most(stream: Any, declared: object, limit: int | None) -> bytes:
    """The SDK's streaming body, read in chunks and abandoned past `limit` bytes (None: no limit)."""
    if limit is None:
        return bytes(await stream.read())
    if isinstance(declared, int) and declared > limit:
        raise BodyTooLarge(f"Content-Length {declared} exceeds the listed size {limit}")
    chunks: list[bytes] = []
    total = 0
    while chunk := await stream.read(1 << 16):
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"body exceeds the listed size {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


class S3Sink:
    """Writes and versioned reads on one bucket (`ObjectSink` for audit shipping, `DeployStore` for deploys),
    through the same translation of SDK errors as the source."""

    def __init__(self, source: S3Source, *, session: Any = None) -> None:
        self._source = source
        self._sts_session = session  # None: do not ask STS who we are

    @classmethod
    async def open(
        cls,
        bucket: str,
        *,
        endpoint_url: str | None,
        region: str | None,
        profile: str | None,
        concurrency: int = 4,
        sts: bool = False,
    ) -> S3Sink:
        """`sts`: let `caller_identity` ask STS, at the endpoint the SDK resolves for it (AWS, or
        $AWS_ENDPOINT_URL_STS / $AWS_ENDPOINT_URL)."""
        from dagmirror.config import S3Url  # local: only the bucket matters here

        config = MirrorConfig(
            S3Url(bucket, ""), Path("."), endpoint_url=endpoint_url, region=region, profile=profile
        )
        source = await S3Source.open(replace(config, transport="sdk", concurrency=concurrency))
        session = _sdk_session(profile, region) if sts else None
        return cls(source, session=session)

    async def put(self, key: str, body: bytes, *, metadata: dict[str, str] | None = None) -> str | None:
        """PutObject with Content-MD5, so the server refuses a body damaged on the way (BadDigest)."""
        source = self._source
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")
        async with source._translated("PUT", key):
            resp = await source._client.put_object(
                Bucket=source._bucket, Key=key, Body=body, Metadata=metadata or {}, ContentMD5=md5
            )
        source._counts["PUT"] += 1
        return _version_id(resp.get("VersionId"))

    async def list_live(self, prefix: str) -> tuple[LiveObject, ...]:
        """ListObjectVersions, keeping each key's latest version; a latest delete marker means deleted."""
        source = self._source
        params: dict[str, Any] = {"Bucket": source._bucket, "Prefix": prefix}
        live: list[LiveObject] = []
        while True:
            async with source._translated("LIST", prefix):
                resp = await source._client.list_object_versions(**params)
            source._counts["LIST"] += 1
            live += [
                LiveObject(v["Key"], _version_id(v.get("VersionId")), _etag(v), int(v.get("Size", 0)))
                for v in resp.get("Versions", ())
                if v.get("IsLatest")
            ]
            if not resp.get("IsTruncated"):
                return tuple(sorted(live, key=lambda o: o.key))
            if not resp.get("NextKeyMarker"):  # would restart from the top forever
                raise SourceUnavailable(
                    f"LIST versions s3://{source._bucket}/{prefix}: truncated without a marker"
                )
            params["KeyMarker"] = resp.get("NextKeyMarker", "")
            params["VersionIdMarker"] = resp.get("NextVersionIdMarker", "")

    async def list_keys(self, prefix: str) -> tuple[str, ...]:
        keys: list[str] = []
        token: str | None = None
        while True:
            page = await self._source.list_page(prefix, delimiter=False, token=token)
            keys += [o.key for o in page.objects]
            if (token := page.next_token) is None:
                return tuple(sorted(keys))

    async def get_version(self, key: str, version_id: str | None) -> FetchedObject:
        source = self._source
        params: dict[str, Any] = {"Bucket": source._bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if version_id:
            params["VersionId"] = version_id
        async with source._translated("GET", key):
            resp = await source._client.get_object(**params)
            async with resp["Body"] as stream:
                body = await stream.read()
        source._counts["GET 200"] += 1
        return _fetched(key, body, resp)

    async def head(self, key: str, version_id: str | None = None) -> ObjectHead | None:
        source = self._source
        params: dict[str, Any] = {"Bucket": source._bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        try:
            async with source._translated("HEAD", key):
                resp = await source._client.head_object(**params)
        except ObjectVanished:
            return None
        except SourceError as exc:
            if exc.code in ("404", "NoSuchVersion"):  # a HEAD answer has no body: "not found" is a bare 404
                return None
            raise
        source._counts["HEAD"] += 1
        meta = resp.get("Metadata") or {}
        return ObjectHead(
            key,
            _version_id(resp.get("VersionId")),
            _etag(resp),
            int(resp.get("ContentLength", 0)),
            meta.get("xxh3"),
        )

    async def copy(self, source_key: str, version_id: str | None, key: str) -> Copied:
        source = self._source
        origin: dict[str, str] = {"Bucket": source._bucket, "Key": source_key}
        if version_id:
            origin["VersionId"] = version_id
        async with source._translated("COPY", key):
            resp = await source._client.copy_object(
                Bucket=source._bucket, Key=key, CopySource=origin, MetadataDirective="COPY"
            )
        source._counts["COPY"] += 1
        return Copied(_version_id(resp.get("VersionId")), _etag(resp.get("CopyObjectResult") or {}))

    async def delete(self, key: str) -> str | None:
        source = self._source
        async with source._translated("DELETE", key):
            resp = await source._client.delete_object(Bucket=source._bucket, Key=key)
        source._counts["DELETE"] += 1
        return _version_id(resp.get("VersionId"))

    async def versioning(self) -> str:
        source = self._source
        async with source._translated("VERSIONING", ""):
            resp = await source._client.get_bucket_versioning(Bucket=source._bucket)
        return str(resp.get("Status") or "")

    async def caller_identity(self) -> str | None:
        """STS GetCallerIdentity's ARN, or None: who deployed is best effort and must never stop a deploy,
        so any failure (no STS at this endpoint, no permission, offline) is only logged."""
        if self._sts_session is None:
            return None
        config = Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1})
        try:
            async with self._sts_session.client("sts", config=config) as sts:
                resp = await asyncio.wait_for(sts.get_caller_identity(), timeout=10)
        except Exception as exc:  # best effort by design (see docstring)
            log.info("caller identity unavailable from STS: %s", _first_line(exc))
            return None
        arn = resp.get("Arn")
        return str(arn) if arn else None

    async def aclose(self) -> None:
        await self._source.aclose()


def _version_id(value: object) -> str | None:
    """S3 says 'null' for objects written while versioning was off."""
    return None if value in (None, "", "null") else str(value)


def _etag(fields: dict[str, Any]) -> str:
    return str(fields.get("ETag", "")).strip('"')


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
        if isinstance(translated, ObjectVanished):  # an expected answer (deletes are confirmed this way)
            self._source._counts[f"{self._op} 404"] += 1
        elif not isinstance(translated, _NotModifiedSignal):
            self._source._counts[f"{self._op} error"] += 1
        raise translated from None

    def _translate(self, exc: BaseException) -> Exception | None:
        where = f"{self._op} s3://{self._source._bucket}/{self._target} at {self._source._endpoint}"
        if isinstance(exc, ClientError):
            return _client_error(exc, where)
        if isinstance(exc, (LeanHTTPError, BodyTooLarge, UntrustedXML, ElementTree.ParseError)):
            return _lean_error(exc, where)
        if isinstance(exc, NoCredentialsError):
            return SourceConfigError("no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID)")
        if isinstance(exc, (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError, OSError)):
            return SourceUnavailable(f"{where}: {type(exc).__name__}: {_first_line(exc)}")
        return None


def _lean_error(exc: Exception, where: str) -> Exception:
    if isinstance(exc, LeanHTTPError):
        if "x-amz-bucket-region" in exc.headers and exc.status in (301, 400):
            region = exc.headers["x-amz-bucket-region"]
            return SourceConfigError(f"{where}: the bucket is in region {region}: pass --region {region}")
        return _classify(exc.code, exc.status, exc.message, where)
    if isinstance(exc, BodyTooLarge):
        return SourceError(f"{where}: {exc}", transient=False, code="BodyTooLarge")
    return SourceUnavailable(f"{where}: malformed S3 response: {exc}")


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
    if code == "NoSuchKey":
        # Only S3's own answer counts: a bare 404 (an ingress or proxy misroute) must never confirm that an
        # object is gone, because a confirmed absence deletes the local file.
        return ObjectVanished(f"object vanished before download: {where}")
    if code in _FATAL_CODES or status in (301, 400, 401, 403):
        return SourceConfigError(f"{where}: {code}: {message}", code=code)
    transient = code in _TRANSIENT_CODES or status >= 500 or status == 429
    return SourceError(f"{where}: {code or status}: {message}", transient=transient, code=code)


async def _credentials_and_region(config: MirrorConfig) -> tuple[Callable[[], Awaitable[Credentials]], str]:
    """The SDK's credential chain (env, profile, SSO, web identity, IMDS...) and region, resolved once in a
    thread (it may do network I/O); frozen credentials are re-read every minute so temporary ones refresh."""
    import botocore.session

    def resolve() -> tuple[Any, str]:
        session = botocore.session.Session(profile=config.profile)
        region = config.region or session.get_config_variable("region") or "us-east-1"
        return session.get_credentials(), str(region)

    try:
        chain, region = await asyncio.to_thread(resolve)
    except BotoCoreError as exc:  # unknown profile, partial credentials, unreadable config...
        raise SourceConfigError(f"AWS configuration: {_first_line(exc)}") from None
    if chain is None:
        raise SourceConfigError("no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID)")
    cached: list[tuple[float, Credentials]] = []
    lock = asyncio.Lock()  # one refresh at a time, not one per worker

    async def provider() -> Credentials:
        if cached and time.monotonic() - cached[0][0] <= 60:
            return cached[0][1]
        async with lock:
            if not cached or time.monotonic() - cached[0][0] > 60:
                try:
                    frozen = await asyncio.to_thread(chain.get_frozen_credentials)
                except BotoCoreError as exc:
                    raise SourceConfigError(f"AWS credentials: {_first_line(exc)}") from None
                creds = Credentials(frozen.access_key, frozen.secret_key, frozen.token)
                cached[:] = [(time.monotonic(), creds)]
        return cached[0][1]

    return provider, region


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
