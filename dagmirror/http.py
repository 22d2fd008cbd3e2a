"""/healthz, /readyz and /metrics on aiohttp, and POST /sync. Nothing here changes state or shows a secret:
POST /sync only asks for a pass sooner, which the daemon coalesces and rate-limits."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from dagmirror.config import parse_listen
from dagmirror.errors import ConfigError

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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


class HttpServer:
    def __init__(self, listen: str, probes: Probes) -> None:
        self.host, self.port = parse_listen(listen)
        self._probes = probes
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        if self._probes.sync is not None:
            app.router.add_post("/sync", self._sync)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        if self.port == 0:  # an ephemeral port (tests): report the real one
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else 0

    async def stop(self) -> None:
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
