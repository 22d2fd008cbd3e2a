"""A reverse proxy in front of a real S3 server that counts requests and injects faults on demand.

It runs its own event loop in a thread, so synchronous tests, async tests and subprocesses can all use it.
Requests are forwarded unchanged, Host header included, so SigV4 signatures made for the proxy still verify
(except with `list_page_size`, which rewrites the LIST query: fine for moto and SeaweedFS without auth).
It also serves as a plain HTTP forward proxy ($HTTP_PROXY), sending every request to its one upstream.

A rule sees each request and may return a `Fault`: an S3 error answer, latency, a connection reset before
or in the middle of the body, a silently truncated or corrupted (same length) body, a LIST page with keys
silently left out, a body dribbled byte by byte, or a huge body for a small key. `ChaosRule` draws such
faults at random from a seeded generator; `injected()` counts what was actually done.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import parse_qsl

from aiohttp import ClientSession, ClientTimeout, web
from yarl import URL

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
_CONDITIONS = {"if-match", "if-none-match"}
_CONTENTS = re.compile(rb"<Contents>.*?</Contents>", re.S)
_KEY_COUNT = re.compile(rb"<KeyCount>\d+</KeyCount>")
_MAX_KEYS = re.compile(r"(^|&)max-keys=\d+")


@dataclass(frozen=True)
class ProxyRequest:
    method: str
    path: str
    query: str
    op: str  # LIST, GET, HEAD, PUT, DELETE, POST, OTHER

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))

    @property
    def continued(self) -> bool:
        """A LIST page after the first one of its listing (it carries a continuation token)."""
        return "continuation-token" in self.params


@dataclass(frozen=True)
class Fault:
    """Instead of (or on top of) forwarding: wait `delay`, then answer `status` with an S3 error, or
    damage the upstream answer in one of the ways below. Fault(delay=3600) is a server that never answers."""

    status: int | None = None
    delay: float = 0.0
    code: str = "SlowDown"
    reset: str | None = None  # "before": RST before any byte; "mid": RST after the headers and half the body
    truncate: bool = False  # half the body, with a Content-Length that matches the cut (silent truncation)
    corrupt: bool = False  # a few bytes flipped, same length
    drop_keys: int = 0  # LIST: leave out the last N <Contents> of the page and fix <KeyCount> to match
    dribble: float = 0.0  # send the body one byte at a time, this many seconds apart
    oversize: int = 0  # send this many junk bytes (chunked, no Content-Length) instead of the body

    @property
    def kind(self) -> str:
        """A short name for counting: what this fault does to the exchange."""
        if self.status is not None:
            return f"{self.status} {self.code}"
        for name in ("reset", "truncate", "corrupt", "drop_keys", "dribble", "oversize"):
            value = getattr(self, name)
            if value:
                return f"reset {value}" if name == "reset" else name
        return "latency" if self.delay else "none"

    @property
    def damages_answer(self) -> bool:
        return bool(
            self.reset or self.truncate or self.corrupt or self.drop_keys or self.dribble or self.oversize
        )


FaultRule = Callable[[ProxyRequest], Fault | None]


@dataclass
class ChaosRule:
    """A seeded random FaultRule: each request gets a fault with probability `rate`, drawn from `menu`
    (weights per op); `on` switches it off without replacing the rule."""

    seed: int
    rate: float = 0.1
    menu: Sequence[tuple[str, Fault, float]] = ()  # (op or "*", fault, weight)
    on: bool = True
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        if not self.menu:
            self.menu = default_menu()

    def __call__(self, request: ProxyRequest) -> Fault | None:
        if not self.on:
            return None
        choices = [(f, w) for op, f, w in self.menu if op in ("*", request.op)]
        with self._lock:
            if not choices or self._rng.random() >= self.rate:
                return None
            picked: Fault = self._rng.choices([f for f, _ in choices], [w for _, w in choices])[0]
            return picked


def default_menu(spike: float = 0.2) -> list[tuple[str, Fault, float]]:
    """Every fault a real S3 path can show, for LISTs and GETs alike."""
    return [
        ("*", Fault(status=503, code="SlowDown"), 3),
        ("*", Fault(status=500, code="InternalError"), 2),
        ("*", Fault(reset="before"), 2),
        ("*", Fault(reset="mid"), 2),
        ("*", Fault(truncate=True), 2),
        ("GET", Fault(corrupt=True), 3),
        ("*", Fault(delay=spike), 1),
        ("LIST", Fault(drop_keys=2), 3),
    ]


def classify(method: str, path: str, query: str) -> str:
    parts = [p for p in path.split("/") if p]
    if method == "GET":
        if len(parts) == 1 or "list-type=" in query:
            return "LIST"
        return "GET" if parts else "OTHER"
    return method if method in ("HEAD", "PUT", "DELETE", "POST") else "OTHER"


class S3Proxy:
    def __init__(
        self, upstream: str, *, list_page_size: int | None = None, ignore_conditions: bool = False
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.list_page_size = list_page_size
        # True: drop If-Match / If-None-Match from writes before forwarding, as a server that ignores
        # conditional writes would (the write then always lands).
        self.ignore_conditions = ignore_conditions
        self.port = 0
        self._counts: Counter[str] = Counter()
        self._injected: Counter[str] = Counter()
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

    def injected(self) -> dict[str, int]:
        """Faults actually applied, by "OP kind" (e.g. 'GET corrupt', 'LIST 503 SlowDown')."""
        with self._lock:
            return dict(self._injected)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._injected.clear()

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
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
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
        # A short shutdown timeout: handlers stalled on purpose are cancelled instead of awaited.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
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
        if fault is not None and fault.kind != "none":
            self._count(f"{op} {fault.kind}", injected=True)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            self._count(f"{op} {fault.status}")
            body = f"<Error><Code>{fault.code}</Code><Message>injected by the test proxy</Message></Error>"
            return web.Response(status=fault.status, text=body, content_type="application/xml")
        if fault is not None and fault.reset == "before":
            _reset(request)
            return web.Response(status=500)  # never sent: the connection is gone
        status, out_headers, payload = await self._forward(request, op)
        self._count(f"{op} {status}")
        if fault is None or not fault.damages_answer or status >= 300:
            return web.Response(status=status, body=payload, headers=out_headers)
        return await _damaged(request, fault, status, out_headers, payload)

    async def _forward(self, request: web.Request, op: str) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        data = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        if self.ignore_conditions and request.method in ("PUT", "POST"):
            headers = {k: v for k, v in headers.items() if k.lower() not in _CONDITIONS}
        raw = request.raw_path
        if raw.startswith(("http://", "https://")):  # absolute-form: a client uses us as its HTTP proxy
            raw = "/" + raw.split("://", 1)[1].partition("/")[2]
        if op == "LIST" and self.list_page_size:
            path, _, query = raw.partition("?")
            query = _MAX_KEYS.sub("", query).lstrip("&")
            raw = f"{path}?{query}&max-keys={self.list_page_size}".replace("?&", "?")
        url = URL(self.upstream + raw, encoded=True)
        async with self._session.request(
            request.method, url, headers=headers, data=data or None, allow_redirects=False
        ) as upstream:
            payload = await upstream.read()
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            if request.method == "HEAD" and "Content-Length" in upstream.headers:
                # A HEAD answer has no body: its Content-Length is the object's size, which clients read.
                out_headers["Content-Length"] = upstream.headers["Content-Length"]
            return upstream.status, out_headers, payload

    def _count(self, key: str, *, injected: bool = False) -> None:
        with self._lock:
            (self._injected if injected else self._counts)[key] += 1


async def _damaged(
    request: web.Request, fault: Fault, status: int, headers: dict[str, str], payload: bytes
) -> web.StreamResponse:
    if fault.drop_keys:
        return web.Response(status=status, body=_drop_contents(payload, fault.drop_keys), headers=headers)
    if fault.corrupt:
        return web.Response(status=status, body=_flip(payload), headers=headers)
    if fault.truncate:
        return web.Response(status=status, body=payload[: len(payload) // 2], headers=headers)
    response = web.StreamResponse(status=status, headers=headers)
    if fault.oversize:
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b"\0" * 65536
        sent = 0
        try:
            while sent < fault.oversize:
                await response.write(chunk[: fault.oversize - sent])
                sent += len(chunk)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client gave up reading, as it should
        return response
    response.content_length = len(payload)
    await response.prepare(request)
    try:
        if fault.reset == "mid":
            await response.write(payload[: len(payload) // 2])
            await asyncio.sleep(0.01)  # let the half body reach the client before the reset
            _reset(request)
            return response
        for i in range(len(payload)):  # dribble
            await response.write(payload[i : i + 1])
            await asyncio.sleep(fault.dribble)
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client hung up on a slow body, as it should
    return response


def _reset(request: web.Request) -> None:
    """Close the client's connection with a TCP RST (SO_LINGER 0), as a crashed server or middlebox does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _drop_contents(xml: bytes, n: int) -> bytes:
    entries = list(_CONTENTS.finditer(xml))
    if not entries:
        return xml
    doomed = entries[-n:]
    out = bytearray()
    last = 0
    for match in doomed:
        out += xml[last : match.start()]
        last = match.end()
    out += xml[last:]
    kept = len(_CONTENTS.findall(bytes(out))) + bytes(out).count(b"<CommonPrefixes>")
    return _KEY_COUNT.sub(f"<KeyCount>{kept}</KeyCount>".encode(), bytes(out), count=1)


def _flip(body: bytes) -> bytes:
    """Same length, different bytes: flip one bit in a few spread-out bytes."""
    if not body:
        return body
    damaged = bytearray(body)
    for i in {0, len(body) // 2, len(body) - 1}:
        damaged[i] ^= 0x01
    return bytes(damaged)
