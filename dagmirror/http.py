"""/healthz, /readyz and /metrics on aiohttp, and POST /sync. Nothing here changes state or shows a secret:
POST /sync only asks for a pass sooner, which the daemon coalesces and rate-limits.

The listener may face a network (docs/operations.md binds it to 0.0.0.0 in a pod): aiohttp has no deadline
for a request's headers and no cap on connections, so each connection is given MAX_CONNECTION_SECONDS to
live and at most MAX_CONNECTIONS are served at once; a slowloris client cannot hold file descriptors the
mirror needs (docs/security.md, "The network")."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from dagmirror.config import parse_listen
from dagmirror.errors import ConfigError

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_CONNECTIONS = 64  # probes and a scraper need a handful; past this, new connections are closed at once
MAX_CONNECTION_SECONDS = 10.0  # a probe answers in milliseconds; a scraper simply connects again
KEEPALIVE_SECONDS = 5.0


@dataclass(frozen=True)
class SyncAnswer:
    outcome: str  # "accepted", "coalesced" (joins a pass already requested) or "limited"
    retry_after: float = 0.0


@dataclass(frozen=True)
class Probes:
    healthy: Callable[[], bool]
    readiness: Callable[[], tuple[bool, dict[str, object]]]
    metrics: Callable[[], bytes]
    sync: Callable[[], SyncAnswer] | None = None  # None: no POST /sync


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's handler behind a connection cap and a lifetime deadline."""

    def __init__(self, inner: asyncio.Protocol, guard: _Guard) -> None:
        self._inner, self._guard = inner, guard
        self._timer: asyncio.TimerHandle | None = None
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._guard.live >= self._guard.cap:
            transport.abort()  # type: ignore[attr-defined]  # a TCP transport
            return
        self._guard.live += 1
        self._counted = True
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.seconds, transport.abort)  # type: ignore[attr-defined]
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._counted:
            return
        self._guard.live -= 1
        if self._timer is not None:
            self._timer.cancel()
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _Guard:
    """The listener's protocol factory: aiohttp's, each connection wrapped in `_Guarded`."""

    def __init__(self, server: web.Server, cap: int, seconds: float) -> None:
        self.server, self.cap, self.seconds, self.live = server, cap, seconds, 0

    def __call__(self) -> _Guarded:
        return _Guarded(self.server(), self)


class HttpServer:
    def __init__(
        self,
        listen: str,
        probes: Probes,
        *,
        max_connections: int = MAX_CONNECTIONS,
        connection_seconds: float = MAX_CONNECTION_SECONDS,
    ) -> None:
        self.host, self.port = parse_listen(listen)
        self._probes = probes
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._cap, self._seconds = max_connections, connection_seconds

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        if self._probes.sync is not None:
            app.router.add_post("/sync", self._sync)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=KEEPALIVE_SECONDS
        )
        await self._runner.setup()
        if self._runner.server is None:  # pragma: no cover - set by setup()
            raise RuntimeError("aiohttp runner without a server after setup")
        guard = _Guard(self._runner.server, self._cap, self._seconds)
        loop = asyncio.get_running_loop()
        try:  # the listener is ours (not a TCPSite) so that every connection goes through the guard
            self._listener = await loop.create_server(guard, self.host, self.port, reuse_address=True)
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        if self.port == 0:  # an ephemeral port (tests): report the real one
            self.port = self._listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        ok = self._probes.healthy()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "unhealthy\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, detail = self._probes.readiness()
        body = orjson.dumps({"ready": ready, "mappings": detail})
        return web.Response(status=200 if ready else 503, body=body, content_type="application/json")

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self._probes.metrics(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    async def _sync(self, _: web.Request) -> web.Response:
        assert self._probes.sync is not None  # the route exists only then
        answer = self._probes.sync()
        body = orjson.dumps({"outcome": answer.outcome, "retry_after": math.ceil(answer.retry_after)})
        if answer.outcome == "limited":
            headers = {"Retry-After": str(max(1, math.ceil(answer.retry_after)))}
            return web.Response(status=429, body=body, content_type="application/json", headers=headers)
        return web.Response(status=202, body=body, content_type="application/json")
