"""S3 over plain aiohttp for the only two requests a mirror pass makes: ListObjectsV2 and GetObject.

No AWS SDK here: requests are signed by `sigv4.Signer` with credentials from a provider that `s3.py` builds
from the SDK's credential chain, and LIST pages are parsed with the C XML parser without converting dates
the mirror never reads. Errors come back as `LeanHTTPError` (status, S3 code, message) for `s3.py` to
classify; transport errors (aiohttp, timeouts, OSError) propagate as they are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus
from xml.etree import ElementTree

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from dagmirror.models import ListPage, RemoteObject
from dagmirror.source.sigv4 import Credentials, Signer

CredentialsProvider = Callable[[], Awaitable[Credentials]]
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


class BodyTooLarge(Exception):
    """The server sent more bytes than the listing said the object has."""


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
                body = await _read_bounded(resp, limit, what)
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


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"Content-Length {declared} exceeds {what} {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"body exceeds {what} {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


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
            objects.append(RemoteObject(key, fields.get("ETag", "").strip('"'), size))
        elif tag == "CommonPrefixes":
            prefixes += [decode(child.text or "") for child in element]
        elif tag == "IsTruncated":
            truncated = (element.text or "").strip() == "true"
        elif tag == "NextContinuationToken":
            token = element.text
    if truncated and not token:
        # Ending here would make a partial listing look complete, and its absent keys look deleted.
        raise UntrustedXML("truncated LIST page without a continuation token")
    return ListPage(tuple(objects), tuple(prefixes), token if truncated else None)


class UntrustedXML(ValueError):
    pass


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
