"""A reverse proxy in front of a real S3 server that counts requests and injects faults on demand.

It runs its own event loop in a thread, so synchronous tests, async tests and subprocesses can all use it.
Requests are forwarded unchanged, Host header included, so SigV4 signatures made for the proxy still verify.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from aiohttp import ClientSession, ClientTimeout, web
from yarl import URL

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


@dataclass(frozen=True)
class ProxyRequest:
    method: str
    path: str
    query: str
    op: str  # LIST, GET, HEAD, PUT, DELETE, POST, OTHER


@dataclass(frozen=True)
class Fault:
    """Instead of (or on top of) forwarding: wait `delay`, then answer `status` with an S3 error."""

    status: int | None = None
    delay: float = 0.0
    code: str = "SlowDown"


FaultRule = Callable[[ProxyRequest], Fault | None]


def classify(method: str, path: str, query: str) -> str:
    parts = [p for p in path.split("/") if p]
    if method == "GET":
        if len(parts) == 1 or "list-type=" in query:
            return "LIST"
        return "GET" if parts else "OTHER"
    return method if method in ("HEAD", "PUT", "DELETE", "POST") else "OTHER"


class S3Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = 0
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._fault: FaultRule | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def set_fault(self, rule: FaultRule | None) -> None:
        self._fault = rule

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="s3-proxy", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("S3 proxy did not start")

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> S3Proxy:
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    async def _start(self) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=120), auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- forwarding ----------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        op = classify(request.method, request.path, request.query_string)
        self._count(op)
        rule = self._fault
        fault = rule(ProxyRequest(request.method, request.path, request.query_string, op)) if rule else None
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            self._count(f"{op} {fault.status}")
            body = f"<Error><Code>{fault.code}</Code><Message>injected by the test proxy</Message></Error>"
            return web.Response(status=fault.status, text=body, content_type="application/xml")
        assert self._session is not None
        data = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        url = URL(self.upstream + request.raw_path, encoded=True)
        async with self._session.request(
            request.method, url, headers=headers, data=data or None, allow_redirects=False
        ) as upstream:
            payload = await upstream.read()
            self._count(f"{op} {upstream.status}")
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=upstream.status, body=payload, headers=out_headers)

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1
