"""The ObjectSource over aioboto3 (transport "sdk"), for setups the lean transport does not cover (see
docs/configuration.md); `open_client`, `list_page` and `get_object` are shared with `store.py`. One of the
three modules that import the AWS SDK (with store.py and credentials.py); every SDK exception is translated
at the boundary of `_translate.py` through `sdk_error`."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from dagmirror.config import MirrorConfig, redact_url
from dagmirror.errors import SourceConfigError, SourceUnavailable
from dagmirror.models import FetchedObject, ListPage, NotModified, RemoteObject
from dagmirror.source._translate import (
    NO_CREDENTIALS,
    NotModifiedSignal,
    RequestCounter,
    Translator,
    classify,
    first_line,
    get_deadline,
    request_deadline,
)
from dagmirror.source._wire import (
    LIST_PAGE_BYTES,
    MAX_KEYS_PER_PAGE,
    PageTooLarge,
    check_page_entries,
    fetched_object,
    next_token,
    read_bounded,
    strip_etag,
)
from dagmirror.source.credentials import sdk_session


class SdkSource:
    """ListObjectsV2 + GetObject for one bucket through one shared aioboto3 client."""

    def __init__(
        self, client: Any, bucket: str, endpoint: str, stack: AsyncExitStack, *, deadline: float = 35.0
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._stack = stack
        self._translator = Translator(bucket, endpoint, RequestCounter(), sdk_error)
        self._counter = self._translator.counter
        self._deadline = deadline

    @classmethod
    async def open(cls, config: MirrorConfig) -> SdkSource:
        stack = AsyncExitStack()
        client = await open_client(stack, config, sdk_session(config.profile, config.region))
        endpoint = redact_url(str(client.meta.endpoint_url))
        return cls(client, config.source.bucket, endpoint, stack, deadline=request_deadline(config))

    async def list_page(
        self, prefix: str, *, delimiter: bool, token: str | None, start_after: str | None = None
    ) -> ListPage:
        params = _list_params(self._bucket, prefix, delimiter, token, start_after)
        async with self._translator.request("LIST", prefix, self._deadline):
            resp = await self._client.list_objects_v2(**params)
            self._counter.add("LIST")  # answered; a page that cannot be trusted counts as an error too
            return list_page(resp)

    async def get(
        self, key: str, *, if_none_match: str | None, max_bytes: int | None = None
    ) -> FetchedObject | NotModified:
        try:
            async with self._translator.request("GET", key, get_deadline(self._deadline, max_bytes)):
                fetched = await get_object(
                    self._client, self._bucket, key, if_none_match=if_none_match, max_bytes=max_bytes
                )
        except NotModifiedSignal:
            self._counter.add("GET 304")
            return NotModified(if_none_match or "")
        self._counter.add("GET 200")
        return fetched

    def request_counts(self) -> dict[str, int]:
        return self._counter.snapshot()

    async def aclose(self) -> None:
        await self._stack.aclose()


async def open_client(stack: AsyncExitStack, config: MirrorConfig, session: Any) -> Any:
    """An S3 client of `session` sized for `config`, closed with `stack`."""
    sdk_config = Config(
        max_pool_connections=config.concurrency + config.list_concurrency + 4,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        retries={"total_max_attempts": 1},  # dagmirror's own retry policy owns every retry
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",  # dagmirror verifies bodies itself
        s3={"addressing_style": "path"} if config.endpoint_url is not None else None,
    )
    try:
        client = await stack.enter_async_context(
            session.client("s3", endpoint_url=config.endpoint_url, config=sdk_config)
        )
    except BotoCoreError as exc:
        await stack.aclose()
        raise SourceConfigError(f"cannot create S3 client: {exc}") from None
    client.meta.events.register("before-parse.s3.ListObjectsV2", _refuse_oversized_page)
    return client


def _refuse_oversized_page(response_dict: dict[str, Any], **_: Any) -> None:
    """Before botocore turns a LIST page into dicts (about 900 bytes of memory per entry): a page larger
    than S3 ever sends is refused. The SDK has read the body whole by then; only the parse is saved."""
    body = response_dict.get("body") or b""
    if len(body) > LIST_PAGE_BYTES:
        raise PageTooLarge(f"LIST page of {len(body)} bytes exceeds the LIST page limit {LIST_PAGE_BYTES}")


def _list_params(
    bucket: str, prefix: str, delimiter: bool, token: str | None, start_after: str | None
) -> dict[str, Any]:
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": MAX_KEYS_PER_PAGE}
    if delimiter:
        params["Delimiter"] = "/"
    if token:
        params["ContinuationToken"] = token
    elif start_after:
        params["StartAfter"] = start_after
    return params


def list_page(resp: dict[str, Any]) -> ListPage:
    """A ListObjectsV2 answer as the SDK parsed it -> ListPage."""
    token = next_token(bool(resp.get("IsTruncated")), resp.get("NextContinuationToken"))
    check_page_entries(len(resp.get("Contents", ())) + len(resp.get("CommonPrefixes", ())))
    objects = tuple(
        RemoteObject(o["Key"], strip_etag(o.get("ETag", "")), int(o.get("Size", 0)))
        for o in resp.get("Contents", ())
    )
    prefixes = tuple(p["Prefix"] for p in resp.get("CommonPrefixes", ()))
    return ListPage(objects, prefixes, token)


async def get_object(
    client: Any,
    bucket: str,
    key: str,
    *,
    version_id: str | None = None,
    if_none_match: str | None = None,
    max_bytes: int | None = None,
) -> FetchedObject:
    """GetObject reading at most `max_bytes` of body (None: all of it); call it inside a Translator."""
    params: dict[str, Any] = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}
    if version_id:
        params["VersionId"] = version_id
    if if_none_match:
        params["IfNoneMatch"] = f'"{if_none_match}"'
    resp = await client.get_object(**params)
    stream = resp["Body"]
    async with stream:  # the context releases the connection; reads go via the body, not what it yields
        if max_bytes is None:
            body = bytes(await stream.read())
        else:
            body = await read_bounded(stream.read, resp.get("ContentLength"), max_bytes, "the listed size")
    return fetched_object(key, body, resp["ResponseMetadata"]["HTTPHeaders"])


def sdk_error(exc: BaseException, where: str) -> Exception | None:
    """botocore's exceptions -> dagmirror errors; everything else is mapped in _translate.py."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return classify(code, status, first_line(error.get("Message") or code), where)
    if isinstance(exc, NoCredentialsError):
        return SourceConfigError(NO_CREDENTIALS)
    if isinstance(exc, BotoCoreError):
        return SourceUnavailable(f"{where}: {type(exc).__name__}: {first_line(exc)}")
    return None
