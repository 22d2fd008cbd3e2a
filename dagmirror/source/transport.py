"""How the lean transport reaches the endpoint: `Address` (the Host header and the bucket's path, exactly as
signed), and a `Transport` for its GETs: `H1Transport` (source/h1.py, the default) or `AiohttpTransport`
(aiohttp's client, when a proxy is named for the endpoint: it speaks CONNECT and proxy auth). aiohttp is
imported only then."""

from __future__ import annotations

import os
import ssl
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from yarl import URL

from dagmirror.config import MirrorConfig
from dagmirror.source._wire import read_bounded
from dagmirror.source.h1 import H1Pool, build_request
from dagmirror.source.h1parse import Answer, Limits

if TYPE_CHECKING:
    import aiohttp


def env_proxy(endpoint: str) -> tuple[URL, aiohttp.BasicAuth | None] | None:
    """The proxy $HTTPS_PROXY / $HTTP_PROXY / $NO_PROXY name for `endpoint` (as the SDK honours them), looked
    up once: a session with trust_env=True repeats that lookup and a ~/.netrc read in a thread per request.
    Without any *_proxy variable (what urllib's getproxies reads) there is none, and aiohttp is not loaded."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None
    from aiohttp.helpers import get_env_proxy_for_url

    try:
        return get_env_proxy_for_url(URL(endpoint))
    except LookupError:
        return None


class Transport(Protocol):
    """GETs to one origin: `target` is the encoded path and query, `headers` are sent as they are."""

    async def get(self, target: str, headers: dict[str, str], limits: Limits) -> Answer: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Address:
    """Where a bucket's requests go: `host` exactly as sent (and signed), `root` the bucket's path."""

    origin: URL
    host: str
    root: str

    @classmethod
    def of(cls, endpoint: str, bucket: str, *, virtual_host: bool) -> Address:
        url = URL(endpoint)
        # Exactly the Host header aiohttp would send: default ports dropped, IPv6 in brackets.
        netloc = url.host_port_subcomponent or ""
        base = url.raw_path.rstrip("/")  # an endpoint may carry a path (a gateway mounted under /s3)
        if virtual_host:
            host, root = f"{bucket}.{netloc}", f"{base}/"
        else:
            host, root = netloc, f"{base}/{quote(bucket, safe='')}/"
        return cls(URL(f"{url.scheme}://{host}"), host, root)


class H1Transport:
    """The default transport: h1.H1Pool's keep-alive connections, no proxy."""

    def __init__(self, address: Address, *, size: int, connect_timeout: float, read_timeout: float) -> None:
        origin = address.origin
        tls = ssl.create_default_context() if origin.scheme == "https" else None
        host, port = origin.raw_host or "", origin.port or (443 if tls else 80)
        self._host = address.host
        self._pool = H1Pool(
            host, port, tls=tls, size=size, connect_timeout=connect_timeout, read_timeout=read_timeout
        )

    async def get(self, target: str, headers: dict[str, str], limits: Limits) -> Answer:
        return await self._pool.request(build_request(target, self._host, headers), limits)

    async def aclose(self) -> None:
        await self._pool.aclose()


class AiohttpTransport:
    """Through the proxy $HTTPS_PROXY / $HTTP_PROXY name for the endpoint: aiohttp's client."""

    def __init__(
        self, http: aiohttp.ClientSession, origin: URL, proxy: tuple[URL, aiohttp.BasicAuth | None] | None
    ) -> None:
        self._http, self._origin = http, str(origin)
        self._proxy: URL | None = proxy[0] if proxy else None
        self._proxy_auth: aiohttp.BasicAuth | None = proxy[1] if proxy else None

    async def get(self, target: str, headers: dict[str, str], limits: Limits) -> Answer:
        url = URL(self._origin + target, encoded=True)
        async with self._http.get(
            url, headers=headers, allow_redirects=False, proxy=self._proxy, proxy_auth=self._proxy_auth
        ) as resp:
            if not 200 <= resp.status < 300:
                body = await _read_prefix(resp, limits.error)  # enough for the S3 error code
            elif limits.body is None:
                body = await resp.read()
            else:
                body = await read_bounded(resp.content.read, resp.content_length, limits.body, limits.what)
            return Answer(resp.status, resp.headers, body)

    async def aclose(self) -> None:
        await self._http.close()


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


async def open_transport(
    config: MirrorConfig, address: Address, stack: AsyncExitStack, client: str
) -> Transport:
    """h1's pool; aiohttp's client when a proxy is named for the endpoint (it speaks CONNECT and proxy
    auth, which h1 does not) or when `client` says so (benchmarks.getcost compares the two)."""
    pool = config.concurrency + config.list_concurrency + 4
    proxy = env_proxy(str(address.origin))
    transport: Transport
    if proxy is None and client == "h1":
        transport = H1Transport(
            address, size=pool, connect_timeout=config.connect_timeout, read_timeout=config.read_timeout
        )
    else:
        import aiohttp

        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool, limit_per_host=pool, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(sock_connect=config.connect_timeout, sock_read=config.read_timeout),
            auto_decompress=False,  # bytes as stored, like the SDK: never decode Content-Encoding
            skip_auto_headers=("User-Agent",),
            trust_env=False,  # the proxy was looked up once, above
        )
        transport = AiohttpTransport(http, address.origin, proxy)
    stack.push_async_callback(transport.aclose)
    return transport
