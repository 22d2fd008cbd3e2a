"""A bucket's configuration and the questions `doctor` asks, over aioboto3: `S3Admin` implements the
`BucketAdmin` and `BucketProbe` Protocols of dagmirror/setup/ports.py (fakes: dagmirror/setup/memory.py).
One of the modules that import the AWS SDK (with sdk.py, store.py and credentials.py); every SDK error goes
through the same translation as the sources'."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import orjson
from botocore.config import Config
from botocore.exceptions import ClientError

from dagmirror.config import MirrorConfig, S3Url, redact_url
from dagmirror.errors import ObjectVanished, SourceConfigError, SourceError
from dagmirror.manifest import MAX_POINTER_BYTES
from dagmirror.source._translate import RequestCounter, Translator, request_deadline
from dagmirror.source.credentials import sdk_session
from dagmirror.source.sdk import get_object, open_client, sdk_error

# What S3 answers when a configuration was never set: read as "nothing".
_ABSENT = frozenset(
    {
        "NoSuchLifecycleConfiguration",
        "NoSuchBucketPolicy",
        "NoSuchPublicAccessBlockConfiguration",
    }
)
_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "403"})
_REFUSED_AFTER_AUTH = frozenset(
    {"NoSuchKey", "PreconditionFailed", "BadDigest", "InvalidDigest", "404", "412"}
)
_IMPOSSIBLE_ETAG = '"00000000000000000000000000000000"'
_WRONG_MD5 = base64.b64encode(b"\0" * 16).decode("ascii")  # no empty body has this MD5


class S3Admin:
    def __init__(
        self, client: Any, session: Any, config: MirrorConfig, endpoint: str, stack: AsyncExitStack
    ) -> None:
        self._client, self._session, self._config, self._stack = client, session, config, stack
        self._bucket = config.source.bucket
        self._translator = Translator(self._bucket, endpoint, RequestCounter(), sdk_error)
        self._deadline = request_deadline(config)
        self.endpoint = endpoint
        self.region = str(client.meta.region_name or "us-east-1")

    @classmethod
    async def open(
        cls, bucket: str, *, endpoint_url: str | None, region: str | None, profile: str | None = None
    ) -> S3Admin:
        config = MirrorConfig(S3Url(bucket, ""), Path("."), endpoint_url=endpoint_url, region=region)
        config = replace(config, profile=profile, transport="sdk", connect_timeout=5.0, read_timeout=20.0)
        session = sdk_session(profile, region)
        stack = AsyncExitStack()
        client = await open_client(stack, config, session)
        return cls(client, session, config, redact_url(str(client.meta.endpoint_url)), stack)

    async def aclose(self) -> None:
        await self._stack.aclose()

    async def _call(self, op: str, method: str, **params: Any) -> dict[str, Any]:
        async with self._translator.request(op, params.get("Key", ""), self._deadline):
            resp: dict[str, Any] = await getattr(self._client, method)(Bucket=self._bucket, **params)
        return resp

    async def _get(self, op: str, method: str) -> dict[str, Any] | None:
        try:
            return await self._call(op, method)
        except SourceError as exc:
            if exc.code in _ABSENT:
                return None
            raise

    # -- configuration (BucketAdmin) -------------------------------------------------------------------
    async def bucket_exists(self) -> bool:
        """Asked with GetBucketVersioning, not HeadBucket: HeadBucket needs s3:ListBucket on the whole
        bucket, which a mirror's policy grants only for its own prefixes."""
        try:
            await self._call("GET versioning", "get_bucket_versioning")
        except SourceError as exc:
            if exc.code in ("404", "NoSuchBucket"):
                return False
            raise
        return True

    async def create_bucket(self, region: str | None) -> None:
        params: dict[str, Any] = {}
        if region and region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            await self._call("CREATE bucket", "create_bucket", **params)
        except SourceError as exc:
            if exc.code != "BucketAlreadyOwnedByYou":
                raise

    async def get_versioning(self) -> str:
        return str((await self._call("GET versioning", "get_bucket_versioning")).get("Status") or "")

    async def enable_versioning(self) -> None:
        await self._call(
            "PUT versioning", "put_bucket_versioning", VersioningConfiguration={"Status": "Enabled"}
        )

    async def get_public_access_block(self) -> Mapping[str, Any] | None:
        resp = await self._get("GET public access block", "get_public_access_block")
        return None if resp is None else resp.get("PublicAccessBlockConfiguration")

    async def put_public_access_block(self, config: Mapping[str, Any]) -> None:
        await self._call(
            "PUT public access block", "put_public_access_block", PublicAccessBlockConfiguration=dict(config)
        )

    async def get_policy(self) -> Mapping[str, Any] | None:
        resp = await self._get("GET policy", "get_bucket_policy")
        return None if resp is None else dict(orjson.loads(resp["Policy"]))

    async def put_policy(self, policy: Mapping[str, Any]) -> None:
        await self._call("PUT policy", "put_bucket_policy", Policy=orjson.dumps(policy).decode())

    async def get_lifecycle(self) -> tuple[Mapping[str, Any], ...]:
        resp = await self._get("GET lifecycle", "get_bucket_lifecycle_configuration")
        return tuple((resp or {}).get("Rules") or ())

    async def put_lifecycle(self, rules: tuple[Mapping[str, Any], ...]) -> None:
        config = {"Rules": [dict(r) for r in rules]}
        await self._call("PUT lifecycle", "put_bucket_lifecycle_configuration", LifecycleConfiguration=config)

    async def get_notification(self) -> Mapping[str, Any]:
        resp = await self._call("GET notification", "get_bucket_notification_configuration")
        return {k: v for k, v in resp.items() if k != "ResponseMetadata"}

    async def put_notification(self, config: Mapping[str, Any]) -> None:
        await self._call(
            "PUT notification",
            "put_bucket_notification_configuration",
            NotificationConfiguration=dict(config),
        )

    # -- doctor's questions (BucketProbe) --------------------------------------------------------------
    async def caller_identity(self) -> str:
        """STS GetCallerIdentity: at $AWS_ENDPOINT_URL_STS when set, else at the S3 endpoint when one was
        given (local servers serve both), else where the SDK resolves STS."""
        endpoint = os.environ.get("AWS_ENDPOINT_URL_STS") or self._config.endpoint_url
        config = Config(connect_timeout=3, read_timeout=5, retries={"total_max_attempts": 1})
        client = self._session.client("sts", endpoint_url=endpoint, config=config)
        async with self._translator.request("STS", "", self._deadline), client as sts:
            resp = await sts.get_caller_identity()
        return str(resp.get("Arn") or "")

    async def bucket_region(self) -> str:
        location = (await self._call("GET location", "get_bucket_location")).get("LocationConstraint")
        return str(location or "us-east-1")  # S3 says null for us-east-1

    async def server_date(self) -> str:
        """S3's Date header, from any answer to a HEAD of the bucket (a 403 or 404 carries one too)."""
        async with self._translator.request("HEAD bucket", "", self._deadline):
            try:
                resp = await self._client.head_bucket(Bucket=self._bucket)
            except ClientError as exc:
                resp = exc.response
        date = (resp.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("date")
        if not date:
            raise SourceError(f"HEAD s3://{self._bucket} at {self.endpoint}: no Date header", transient=False)
        return str(date)

    async def count_objects(self, prefix: str) -> int:
        """How many keys the first page under `prefix` lists (at most 1000): proof of read access."""
        return int(
            (await self._call("LIST", "list_objects_v2", Prefix=prefix, MaxKeys=1000)).get("KeyCount", 0)
        )

    async def read(self, key: str, max_bytes: int = MAX_POINTER_BYTES) -> bytes | None:
        """The object at `key` (at most `max_bytes`: doctor reads only a release pointer), None if absent."""
        try:
            async with self._translator.request("GET", key, self._deadline):
                return (await get_object(self._client, self._bucket, key, max_bytes=max_bytes)).body
        except ObjectVanished:
            return None

    async def probe_write(self, key: str) -> Literal["denied", "allowed"]:
        """Whether a PutObject of `key` would be authorised, without writing: the PUT carries If-Match of an
        ETag no object has and a Content-MD5 the empty body does not have. S3 checks authorisation first
        (403: denied); an authorised request then fails its precondition (412, or 404 for a missing key)
        or its digest (400 BadDigest), and nothing is stored."""
        try:
            await self._call(
                "PUT probe", "put_object", Key=key, Body=b"", IfMatch=_IMPOSSIBLE_ETAG, ContentMD5=_WRONG_MD5
            )
        except SourceError as exc:
            if exc.code in _DENIED:
                return "denied"
            if exc.code in _REFUSED_AFTER_AUTH:
                return "allowed"
            raise  # bad credentials, no bucket, an outage: not an answer to the question
        raise SourceConfigError(
            f"PUT s3://{self._bucket}/{key} with an impossible If-Match and a wrong Content-MD5 was stored: "
            "the server ignores both, remove that empty object"
        )
