"""S3 over plain HTTP for the only two requests a mirror pass makes: ListObjectsV2 and GetObject.

`LeanS3` speaks HTTP: requests signed by `sigv4.Signer` with credentials from `credentials.py` (the SDK's
chain, resolved once), LIST pages parsed with the C XML parser without converting dates the mirror never
reads; S3 errors come back as `LeanHTTPError` (status, S3 code, message). `LeanSource` is the ObjectSource
on top: one connection pool (h1.py's, or aiohttp's behind a proxy), every request inside the boundary of
`_translate.py`; aiohttp is imported only when a proxy is used. No SDK client is built, so
the one-shot CLI skips loading aioboto3 and the S3 service model (about 0.5 s per start).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, cast
from urllib.parse import quote, unquote_plus
from xml.etree import ElementTree

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
from dagmirror.source._wire import (
    LIST_PAGE_BYTES,
    MAX_KEYS_PER_PAGE,
    PageTooLarge,
    UntrustedXML,
    check_page_entries,
    fetched_object,
    next_token,
    strip_etag,
)
from dagmirror.source.credentials import CredentialsProvider, lean_credentials
from dagmirror.source.h1parse import Answer, Limits
from dagmirror.source.sigv4 import Credentials, Signer
from dagmirror.source.transport import Address, Transport, open_transport

if TYPE_CHECKING:
    pass

LIST_PAGE_KEYS = 1000
MAX_ELEMENTS = MAX_KEYS_PER_PAGE * 32  # an entry of S3's has about a dozen elements, Owner and checksums in
ERROR_BODY_LIMIT = 64 << 10  # an S3 error document is a few hundred bytes


class LeanHTTPError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.headers = status, code, message, headers


class LeanS3:
    def __init__(
        self,
        transport: Transport,
        address: Address,
        signer: Signer,
        credentials: CredentialsProvider,
    ) -> None:
        self._transport = transport
        self._signer = signer
        self._credentials = credentials
        self._host, self._root = address.host, address.root

    async def list_page(
        self, prefix: str, *, delimiter: bool, token: str | None, start_after: str | None = None
    ) -> ListPage:
        query = {
            "list-type": "2",
            "prefix": prefix,
            "encoding-type": "url",
            "max-keys": str(MAX_KEYS_PER_PAGE),
        }
        if delimiter:
            query["delimiter"] = "/"
        if token:
            query["continuation-token"] = token
        elif start_after:
            query["start-after"] = start_after
        answer = await self._request(
            self._root, query, {}, Limits(LIST_PAGE_BYTES, ERROR_BODY_LIMIT, "the LIST page limit")
        )
        if answer.status != 200:
            raise _error(answer.status, answer.headers, answer.body)
        return parse_list(answer.body)

    async def get(self, key: str, *, if_none_match: str | None, limit: int | None) -> Answer:
        """GetObject; `limit` bounds the body (the size the listing reported), so a hostile server cannot
        make one small key cost unbounded memory."""
        headers = {"x-amz-checksum-mode": "ENABLED"}
        if if_none_match:
            headers["If-None-Match"] = f'"{if_none_match}"'
        limits = Limits(limit, ERROR_BODY_LIMIT, "the listed size")
        answer = await self._request(self._root + quote(key, safe="/~"), {}, headers, limits)
        if answer.status in (200, 304):
            return answer
        raise _error(answer.status, answer.headers, answer.body)

    async def _request(
        self, path: str, query: dict[str, str], headers: dict[str, str], limits: Limits
    ) -> Answer:
        creds = await self._credentials()
        # identity: a compressing proxy in front of the store must not hand us gzip we would not decode
        headers = {"Accept-Encoding": "identity", **headers}
        signed = self._signer.headers(creds, "GET", self._host, path, query, headers)
        qs = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))
        return await self._transport.get(path + (f"?{qs}" if qs else ""), signed, limits)


def parse_list(body: bytes) -> ListPage:
    """A ListObjectsV2 result -> ListPage. Namespace-agnostic: servers differ. Keys are URL-decoded only when
    the server says it encoded them (<EncodingType>url</EncodingType>), as the SDK does: a server that ignores
    encoding-type sends `a+b.py` raw, and decoding it would name a different key. Parsed as a stream, each
    entry dropped once read, refused at its 1,001st entry: a hostile page costs no more than a real one."""
    encoded, truncated, token = False, False, None
    raw: list[tuple[str, str, str]] = []  # (key, etag, size) as sent
    prefixes: list[str] = []
    for tag, element in _entries(body):
        if tag == "Contents":
            fields = {child.tag.rpartition("}")[2]: child.text or "" for child in element}
            if "Key" not in fields or "Size" not in fields:
                raise UntrustedXML(f"LIST entry without a Key and Size: {sorted(fields)}")
            raw.append((fields["Key"], fields.get("ETag", ""), fields["Size"]))
        elif tag == "CommonPrefixes":
            prefixes += [child.text or "" for child in element]
        elif tag == "EncodingType":
            encoded = (element.text or "").strip() == "url"
        elif tag == "IsTruncated":
            truncated = (element.text or "").strip() == "true"
        elif tag == "NextContinuationToken":
            token = element.text
        check_page_entries(len(raw) + len(prefixes))
    decode = unquote_plus if encoded else str
    try:
        objects = tuple(RemoteObject(decode(k), strip_etag(e), int(n)) for k, e, n in raw)
    except ValueError:
        raise UntrustedXML("LIST entry whose Size is not a number") from None
    return ListPage(objects, tuple(decode(p) for p in prefixes), next_token(truncated, token))


def _entries(body: bytes) -> Iterator[tuple[str, ElementTree.Element]]:
    """(tag, element) of each child of the answer's root, fed to the parser in slices, each element
    cleared once the caller has it, so memory follows the entries kept, not the document. An entry has
    about a dozen elements; a page with more than MAX_ELEMENTS in all is refused as it is read."""
    _refuse_dtd(body)
    parser: ElementTree.XMLPullParser[ElementTree.Element] = ElementTree.XMLPullParser(
        events=("start", "end")
    )
    depth = elements = 0
    for at in range(0, len(body), 1 << 16):
        parser.feed(body[at : at + (1 << 16)])
        for event, element in cast("Iterator[tuple[str, object]]", parser.read_events()):
            if not isinstance(element, ElementTree.Element):
                continue
            if event == "start":
                depth, elements = depth + 1, elements + 1
                if elements > MAX_ELEMENTS:
                    raise PageTooLarge(f"LIST page with more than {MAX_ELEMENTS} XML elements")
                continue
            depth -= 1
            if depth == 1:
                yield element.tag.rpartition("}")[2], element
                element.clear()
    parser.close()


def _refuse_dtd(body: bytes) -> None:
    """S3 never sends a DTD; refusing any makes entity expansion (XML bombs, external entities) impossible,
    which is what defusedxml would guard against."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise UntrustedXML("S3 response carries a DTD: refused")


def _parse_xml(body: bytes) -> ElementTree.Element:
    _refuse_dtd(body)
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
    async def open(
        cls, config: MirrorConfig, credentials: Credentials | None = None, *, client: str = "h1"
    ) -> LeanSource:
        """`credentials`: fixed keys (an Airflow connection's) instead of the SDK's chain; `client`: "h1", or
        "aiohttp" for aiohttp's client even without a proxy."""
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
        address = Address.of(endpoint, bucket, virtual_host=virtual)
        stack = AsyncExitStack()
        transport = await open_transport(config, address, stack, client)
        s3 = LeanS3(transport, address, Signer(region), provider)
        translator = Translator(bucket, redact_url(endpoint), RequestCounter(), lean_error)
        return cls(s3, translator, stack, deadline=request_deadline(config))

    async def list_page(
        self, prefix: str, *, delimiter: bool, token: str | None, start_after: str | None = None
    ) -> ListPage:
        async with self._translator.request("LIST", prefix, self._deadline):
            page = await self._s3.list_page(prefix, delimiter=delimiter, token=token, start_after=start_after)
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


_REGION = re.compile(r"^[a-z]{2}(-[a-z0-9]+){1,4}$")


def lean_error(exc: BaseException, where: str) -> Exception | None:
    """An S3 error answer over plain HTTP -> dagmirror error; everything else is mapped in _translate.py."""
    if not isinstance(exc, LeanHTTPError):
        return None
    if "x-amz-bucket-region" in exc.headers and exc.status in (301, 400):
        region = exc.headers["x-amz-bucket-region"]
        if not _REGION.match(region):  # a header is the server's word: only a region name is repeated
            return SourceConfigError(f"{where}: the bucket is in another region: pass --region")
        return SourceConfigError(f"{where}: the bucket is in region {region}: pass --region {region}")
    return classify(exc.code, exc.status, exc.message, where)


def _fixed(credentials: Credentials) -> CredentialsProvider:
    async def provider() -> Credentials:
        return credentials

    return provider
