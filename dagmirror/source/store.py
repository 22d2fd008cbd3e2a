"""The write side of a bucket over aioboto3: `S3Store` is the `ObjectSink` audit shipping writes to and the
`DeployStore` `dagmirror deploy` publishes through (versioned listings and reads, copies, deletes). It has
its own client and the same error translation as the sources. One of the three modules that import the AWS
SDK (with sdk.py and credentials.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from botocore.config import Config

from dagmirror.config import MirrorConfig, S3Url, redact_url
from dagmirror.errors import ObjectVanished, PreconditionFailed, SourceError, SourceUnavailable
from dagmirror.models import FetchedObject, StoredObject
from dagmirror.source import Copied, LiveObject, ObjectHead
from dagmirror.source._translate import RequestCounter, Translator, first_line, request_deadline
from dagmirror.source._wire import check_page_entries, next_token, strip_etag
from dagmirror.source.credentials import sdk_session
from dagmirror.source.sdk import get_object, open_client, sdk_error

log = logging.getLogger("dagmirror")


class S3Store:
    """Writes and versioned reads on one bucket."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        endpoint: str,
        stack: AsyncExitStack,
        *,
        sts_session: Any = None,
        deadline: float = 35.0,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._stack = stack
        self._sts_session = sts_session  # None: do not ask STS who we are
        self._translator = Translator(bucket, endpoint, RequestCounter(), sdk_error)
        self._counter = self._translator.counter
        self._deadline = deadline  # for LIST pages, as a mirror's; writes keep the socket timeouts only

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
    ) -> S3Store:
        """`sts`: let `caller_identity` ask STS, at the endpoint the SDK resolves for it (AWS, or
        $AWS_ENDPOINT_URL_STS / $AWS_ENDPOINT_URL)."""
        config = MirrorConfig(S3Url(bucket, ""), Path("."), endpoint_url=endpoint_url, region=region)
        config = replace(config, profile=profile, concurrency=concurrency, transport="sdk")
        session = sdk_session(profile, region)
        stack = AsyncExitStack()
        client = await open_client(stack, config, session)
        endpoint, deadline = redact_url(str(client.meta.endpoint_url)), request_deadline(config)
        return cls(client, bucket, endpoint, stack, sts_session=session if sts else None, deadline=deadline)

    async def put(
        self,
        key: str,
        body: bytes,
        *,
        metadata: dict[str, str] | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
    ) -> str | None:
        """PutObject with Content-MD5, so the server refuses a body damaged on the way (BadDigest); with
        `if_match` (an unquoted ETag) or `if_none_match` ('*') a conditional write: PreconditionFailed when
        the object is not that version, or exists."""
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")
        params: dict[str, Any] = {}
        if if_match is not None:
            params["IfMatch"] = f'"{if_match}"'
        if if_none_match is not None:
            params["IfNoneMatch"] = if_none_match
        try:
            async with self._translator.request("PUT", key):
                resp = await self._client.put_object(
                    Bucket=self._bucket, Key=key, Body=body, Metadata=metadata or {}, ContentMD5=md5, **params
                )
        except ObjectVanished:  # If-Match on a key that is gone: moto answers 404, AWS and SeaweedFS 412
            if if_match is None:
                raise
            raise PreconditionFailed(
                f"PUT s3://{self._bucket}/{key}: If-Match {if_match}: no such key"
            ) from None
        self._counter.add("PUT")
        return _version_id(resp.get("VersionId"))

    async def list_live(self, prefix: str) -> tuple[LiveObject, ...]:
        """ListObjectVersions, keeping each key's latest version; a latest delete marker means deleted."""
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        live: list[LiveObject] = []
        while True:
            async with self._translator.request("LIST", prefix):
                resp = await self._client.list_object_versions(**params)
            self._counter.add("LIST")
            live += [
                LiveObject(v["Key"], _version_id(v.get("VersionId")), _etag(v), int(v.get("Size", 0)))
                for v in resp.get("Versions", ())
                if v.get("IsLatest")
            ]
            if not resp.get("IsTruncated"):
                return tuple(sorted(live, key=lambda o: o.key))
            if not resp.get("NextKeyMarker"):  # would restart from the top forever
                raise SourceUnavailable(
                    f"LIST versions s3://{self._bucket}/{prefix}: truncated without a marker"
                )
            params["KeyMarker"] = resp.get("NextKeyMarker", "")
            params["VersionIdMarker"] = resp.get("NextVersionIdMarker", "")

    async def list_stamped(self, prefix: str) -> tuple[StoredObject, ...]:
        """ListObjectsV2, paginated, keeping size and LastModified (for `gc`'s grace period)."""
        found: list[StoredObject] = []
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        while True:
            async with self._translator.request("LIST", prefix, self._deadline):
                resp = await self._client.list_objects_v2(**params)
                token = next_token(bool(resp.get("IsTruncated")), resp.get("NextContinuationToken"))
                check_page_entries(len(resp.get("Contents", ())))
                found += [
                    StoredObject(o["Key"], int(o.get("Size", 0)), o["LastModified"].timestamp())
                    for o in resp.get("Contents", ())
                ]
            self._counter.add("LIST")
            if token is None:
                return tuple(sorted(found, key=lambda o: o.key))
            params["ContinuationToken"] = token

    async def get_version(
        self, key: str, version_id: str | None, *, max_bytes: int | None = None
    ) -> FetchedObject:
        async with self._translator.request("GET", key):
            fetched = await get_object(
                self._client, self._bucket, key, version_id=version_id, max_bytes=max_bytes
            )
        self._counter.add("GET 200")
        return fetched

    async def head(self, key: str, version_id: str | None = None) -> ObjectHead | None:
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        try:
            async with self._translator.request("HEAD", key):
                resp = await self._client.head_object(**params)
        except ObjectVanished:
            return None
        except SourceError as exc:
            if exc.code in ("404", "NoSuchVersion"):  # a HEAD answer has no body: "not found" is a bare 404
                return None
            raise
        self._counter.add("HEAD")
        meta = resp.get("Metadata") or {}
        return ObjectHead(
            key,
            _version_id(resp.get("VersionId")),
            _etag(resp),
            int(resp.get("ContentLength", 0)),
            meta.get("xxh3"),
        )

    async def copy(self, source_key: str, version_id: str | None, key: str) -> Copied:
        origin: dict[str, str] = {"Bucket": self._bucket, "Key": source_key}
        if version_id:
            origin["VersionId"] = version_id
        async with self._translator.request("COPY", key):
            resp = await self._client.copy_object(
                Bucket=self._bucket, Key=key, CopySource=origin, MetadataDirective="COPY"
            )
        self._counter.add("COPY")
        return Copied(_version_id(resp.get("VersionId")), _etag(resp.get("CopyObjectResult") or {}))

    async def delete(self, key: str) -> str | None:
        async with self._translator.request("DELETE", key):
            resp = await self._client.delete_object(Bucket=self._bucket, Key=key)
        self._counter.add("DELETE")
        return _version_id(resp.get("VersionId"))

    async def versioning(self) -> str:
        async with self._translator.request("VERSIONING", ""):
            resp = await self._client.get_bucket_versioning(Bucket=self._bucket)
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
            log.info("caller identity unavailable from STS: %s", first_line(exc))
            return None
        arn = resp.get("Arn")
        return str(arn) if arn else None

    def request_counts(self) -> dict[str, int]:
        return self._counter.snapshot()

    async def aclose(self) -> None:
        await self._stack.aclose()


def _version_id(value: object) -> str | None:
    """S3 says 'null' for objects written while versioning was off."""
    return None if value in (None, "", "null") else str(value)


def _etag(fields: dict[str, Any]) -> str:
    return strip_etag(str(fields.get("ETag", "")))
