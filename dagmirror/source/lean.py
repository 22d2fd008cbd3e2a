"""S3 over plain aiohttp for the only two requests a mirror pass makes: ListObjectsV2 and GetObject.

`LeanS3` speaks HTTP: requests signed by `sigv4.Signer` with credentials from `credentials.py` (the SDK's
chain, resolved once), LIST pages parsed with the C XML parser without converting dates the mirror never
reads; S3 errors come back as `LeanHTTPError` (status, S3 code, message). `LeanSource` is the ObjectSource
on top: one aiohttp pool, every request inside the boundary of `_translate.py`. No SDK client is built, so
the one-shot CLI skips loading aioboto3 and the S3 service model (about 0.5 s per start).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus
from xml.etree import ElementTree

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from dagmirror.config import MirrorConfig, redact_url
from dagmirror.errors import SourceConfigError
from dagmirror.models import FetchedObject, ListPage, NotModified, RemoteObject
from dagmirror.source._translate import (
    RequestCounter,
    Translator,
    classify,
    get_deadline,
    request_deadline,
)
from dagmirror.source._wire import UntrustedXML, fetched_object, next_token, read_bounded, strip_etag
from dagmirror.source.credentials import CredentialsProvider, lean_credentials
from dagmirror.source.sigv4 import Credentials, Signer

LIST_PAGE_KEYS = 1000
LIST_PAGE_LIMIT = 32 << 20  # 1,000 keys of 1,024 bytes each, URL-encoded, fit many times over
ERROR_BODY_LIMIT = 64 << 10  # an S3 error document is a few hundred bytes


@dataclass(frozen=True, slots=True)
class LeanResponse:
    status: int  # 200 or 304
    headers: Mapping[str, str]
    body: bytes


class LeanHTTPError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.headers = status, code, message, headers


def env_proxy(endpoint: str) -> tuple[URL, aiohttp.BasicAuth | None] | None:
    """The proxy $HTTPS_PROXY / $HTTP_PROXY / $NO_PROXY name for `endpoint` (as the SDK honours them), looked
    up once: a session with trust_env=True repeats that lookup and a ~/.netrc read in a thread per request."""
    try:
        return get_env_proxy_for_url(URL(endpoint))
    except LookupError:
        return None


class LeanS3:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        endpoint: str,
        bucket: str,
        signer: Signer,
        credentials: CredentialsProvider,
        *,
        virtual_host: bool = False,
    ) -> None:
        url = URL(endpoint)
        self._http = http
        self._signer = signer
        self._credentials = credentials
        # Exactly the Host header aiohttp will send: default ports dropped, IPv6 in brackets.
        netloc = url.host_port_subcomponent or ""
        base = url.raw_path.rstrip("/")  # an endpoint may carry a path (a gateway mounted under /s3)
        if virtual_host:
            self._host, self._root = f"{bucket}.{netloc}", f"{base}/"
        else:
            self._host, self._root = netloc, f"{base}/{quote(bucket, safe='')}/"
        self._origin = f"{url.scheme}://{self._host}"
        proxy = env_proxy(self._origin)
        self._proxy: URL | None = proxy[0] if proxy else None
        self._proxy_auth: aiohttp.BasicAuth | None = proxy[1] if proxy else None

    async def list_page(self, prefix: str, *, delimiter: bool, token: str | None) -> ListPage:
        query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
        if delimiter:
            query["delimiter"] = "/"
        if token:
            query["continuation-token"] = token
        status, headers, body = await self._request(self._root, query, {}, limit=LIST_PAGE_LIMIT)
        if status != 200:
            raise _error(status, headers, body)
        return parse_list(body)

    async def get(self, key: str, *, if_none_match: str | None, limit: int | None) -> LeanResponse:
        """GetObject; `limit` bounds the body (the size the listing reported), so a hostile server cannot
        make one small key cost unbounded memory."""
        headers = {"x-amz-checksum-mode": "ENABLED"}
        if if_none_match:
            headers["If-None-Match"] = f'"{if_none_match}"'
        status, out_headers, body = await self._request(
            self._root + quote(key, safe="/~"), {}, headers, limit
        )
        if status in (200, 304):
            return LeanResponse(status, out_headers, body)
        raise _error(status, out_headers, body)

    async def _request(
        self, path: str, query: dict[str, str], headers: dict[str, str], limit: int | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        creds = await self._credentials()
        # identity: a compressing proxy in front of the store must not hand us gzip we would not decode
        headers = {"Accept-Encoding": "identity", **headers}
        signed = self._signer.headers(creds, "GET", self._host, path, query, headers)
        qs = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))
        url = URL(self._origin + path + (f"?{qs}" if qs else ""), encoded=True)
        async with self._http.get(
            url, headers=signed, allow_redirects=False, proxy=self._proxy, proxy_auth=self._proxy_auth
        ) as resp:
            if resp.status not in (200, 304):
                body = await _read_prefix(resp, ERROR_BODY_LIMIT)  # enough for the S3 error code
            elif limit is None:
                body = await resp.read()
            else:
                what = "the LIST page limit" if path == self._root else "the listed size"
                body = await read_bounded(resp.content.read, resp.content_length, limit, what)
            return resp.status, resp.headers, body


async def _read_prefix(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most `limit` bytes of the body; the rest is never read (the connection is then dropped)."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(1 << 14):
        chunks.append(chunk)
        total += len(chunk)
        if total >= limit:
            break
    return b"".join(chunks)[:limit]


def parse_list(body: bytes) -> ListPage:
    """A ListObjectsV2 result -> ListPage. Namespace-agnostic: servers differ. Keys are URL-decoded only when
    the server says it encoded them (<EncodingType>url</EncodingType>), as the SDK does: a server that ignores
    encoding-type sends `a+b.py` raw, and decoding it would name a different key."""
    root = _parse_xml(body)
    encoded = any(
        e.tag.rpartition("}")[2] == "EncodingType" and (e.text or "").strip() == "url" for e in root
    )
    decode = unquote_plus if encoded else str
    objects: list[RemoteObject] = []
    prefixes: list[str] = []
    truncated, token = False, None
    for element in root:
        tag = element.tag.rpartition("}")[2]
        if tag == "Contents":
            fields = {child.tag.rpartition("}")[2]: child.text or "" for child in element}
            try:
                key, size = decode(fields["Key"]), int(fields["Size"])
            except (KeyError, ValueError):
                raise UntrustedXML(f"LIST entry without a valid Key and Size: {fields}") from None
            objects.append(RemoteObject(key, strip_etag(fields.get("ETag", "")), size))
        elif tag == "CommonPrefixes":
            prefixes += [decode(child.text or "") for child in element]
        elif tag == "IsTruncated":
            truncated = (element.text or "").strip() == "true"
        elif tag == "NextContinuationToken":
            token = element.text
    return ListPage(tuple(objects), tuple(prefixes), next_token(truncated, token))


def _parse_xml(body: bytes) -> ElementTree.Element:
    """S3 never sends a DTD; refusing any makes entity expansion (XML bombs, external entities) impossible,
    which is what defusedxml would guard against."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise UntrustedXML("S3 response carries a DTD: refused")
    return ElementTree.fromstring(body)  # noqa: S314 - DTDs refused above


def _error(status: int, headers: Mapping[str, str], body: bytes) -> LeanHTTPError:
    code = message = ""
    if body.lstrip().startswith(b"<"):
        try:
            root = _parse_xml(body)
        except (ElementTree.ParseError, UntrustedXML):
            root = None
        if root is not None:
            fields = {child.tag.rpartition("}")[2]: child.text or "" for child in root}
            code, message = fields.get("Code", ""), fields.get("Message", "")
    return LeanHTTPError(status, code or str(status), message or code or str(status), headers)


class LeanSource:
    """ObjectSource over `LeanS3`: one aiohttp pool, every request with a whole deadline and translated."""

    def __init__(self, s3: LeanS3, translator: Translator, stack: AsyncExitStack, *, deadline: float) -> None:
        self._s3 = s3
        self._translator = translator
        self._counter = translator.counter
        self._stack = stack
        self._deadline = deadline

    @classmethod
    async def open(cls, config: MirrorConfig, credentials: Credentials | None = None) -> LeanSource:
        """`credentials`: fixed keys (an Airflow connection's) instead of the SDK's chain."""
        if credentials is None:
            provider, region = await lean_credentials(config)
        else:
            provider, region = _fixed(credentials), config.region or "us-east-1"
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
        s3 = LeanS3(http, endpoint, bucket, Signer(region), provider, virtual_host=virtual)
        translator = Translator(bucket, redact_url(endpoint), RequestCounter(), lean_error)
        return cls(s3, translator, stack, deadline=request_deadline(config))

    async def list_page(self, prefix: str, *, delimiter: bool, token: str | None) -> ListPage:
        async with self._translator.request("LIST", prefix, self._deadline):
            page = await self._s3.list_page(prefix, delimiter=delimiter, token=token)
        self._counter.add("LIST")
        return page

    async def get(
        self, key: str, *, if_none_match: str | None, max_bytes: int | None = None
    ) -> FetchedObject | NotModified:
        async with self._translator.request("GET", key, get_deadline(self._deadline, max_bytes)):
            answer = await self._s3.get(key, if_none_match=if_none_match, limit=max_bytes)
        if answer.status == 304:
            self._counter.add("GET 304")
            return NotModified(if_none_match or "")
        self._counter.add("GET 200")
        return fetched_object(key, answer.body, answer.headers)

    def request_counts(self) -> dict[str, int]:
        return self._counter.snapshot()

    async def aclose(self) -> None:
        await self._stack.aclose()


def lean_error(exc: BaseException, where: str) -> Exception | None:
    """An S3 error answer over plain HTTP -> dagmirror error; everything else is mapped in _translate.py."""
    if not isinstance(exc, LeanHTTPError):
        return None
    if "x-amz-bucket-region" in exc.headers and exc.status in (301, 400):
        region = exc.headers["x-amz-bucket-region"]
        return SourceConfigError(f"{where}: the bucket is in region {region}: pass --region {region}")
    return classify(exc.code, exc.status, exc.message, where)


def _fixed(credentials: Credentials) -> CredentialsProvider:
    async def provider() -> Credentials:
        return credentials

    return provider
