"""A lean HTTP/1.1 client for the mirror's two requests (GET of an object, GET of a LIST page), on asyncio
Protocols: a pool of keep-alive connections, one request at a time on each, answers parsed as they arrive
(source/h1parse.py).

Why not aiohttp's client here: a GET through it cost about 170 us of the loop's CPU on these machines
(request and response objects, header multidicts, timers, the stream reader), through this module about 85,
signing and the source boundary included (`python -m benchmarks.getcost`; docs/benchmarks.md, "List mode at
the wire's speed"). On a cold pass of 10,000 small files that is most of a core-second. aiohttp's client
stays the transport when a proxy is set (source/transport.py).

What it speaks: HTTP/1.1 (and 1.0 answers), Content-Length, chunked and read-to-close bodies, 1xx answers
skipped, 304 without a body; TLS through the loop's ssl. What it guards: a body is refused as soon as it
passes its limit (Content-Length first), a head larger than MAX_HEAD is refused, a connection is reused only
after an answer read exactly to its end, and one that was idle and closed by the server before answering is
retried once on a new connection (GET is idempotent). Errors are OSError (ConnectionError, TimeoutError)
or BodyTooLarge, which the source boundary (_translate.py) already maps.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import cast

from dagmirror.source._wire import BodyTooLarge
from dagmirror.source.h1parse import Answer, Limits, Parser, ProtocolError


class _Stale(ConnectionError):
    """A reused connection closed before any byte of the answer: safe to send again on a new one."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `send` one request, await its Answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self._loop = loop
        self._read_timeout = read_timeout
        self._transport: asyncio.Transport | None = None
        self._parser: Parser | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self.reusable = False  # the last answer was read exactly to its end on a keep-alive connection
        self.reused = False  # set by the pool before a second request on this connection

    # -- protocol callbacks ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: the connection cannot be trusted for another request
            self.close()
            return
        self._last_data = self._loop.time()
        try:
            answer = parser.feed(data)
        except (ProtocolError, BodyTooLarge) as exc:
            self._finish(exc)
            return
        if answer is not None:
            self.reusable = parser.reusable
            self._finish(answer)

    def eof_received(self) -> bool | None:
        self._lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._lost(exc)

    # -- requests --------------------------------------------------------------------------------------------
    def send(self, request: bytes, limits: Limits) -> asyncio.Future[Answer]:
        if self._transport is None or self._transport.is_closing():
            raise _Stale("connection closed while idle")
        self._parser = Parser(limits)
        self._waiter = waiter = self._loop.create_future()
        self.reusable = False
        self._last_data = self._loop.time()
        self._timer = self._loop.call_later(self._read_timeout, self._check_idle)
        self._transport.write(request)
        return waiter

    def close(self) -> None:
        self.reusable = False
        self._parser = None
        if self._timer is not None:  # a request cancelled by its deadline leaves no timer behind
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()
            self._transport = None

    def _check_idle(self) -> None:
        """sock_read semantics: fail when no byte came for `read_timeout` seconds (re-armed, not reset)."""
        idle = self._loop.time() - self._last_data
        if idle < self._read_timeout:
            self._timer = self._loop.call_later(self._read_timeout - idle, self._check_idle)
            return
        self._timer = None
        self._finish(TimeoutError(f"no data from the server for {self._read_timeout:g}s"))

    def _lost(self, exc: Exception | None) -> None:
        parser = self._parser
        if parser is None:
            return
        if parser.at_close():  # a body framed by the end of the connection is complete now
            self._finish(parser.answer())
            return
        why = f"connection closed by the server: {exc}" if exc else "connection closed by the server"
        self._finish(_Stale(why) if parser.untouched and self.reused else ConnectionResetError(why))

    def _finish(self, outcome: Answer | Exception) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._parser = None
        waiter, self._waiter = self._waiter, None
        if isinstance(outcome, Exception):
            self.close()
        if waiter is not None and not waiter.done():
            if isinstance(outcome, Exception):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)


class H1Pool:
    """Keep-alive connections to one origin (`host`, `port`, TLS or not), at most `size` in use at once."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        size: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Connection] = []
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._closed = False

    async def request(self, request: bytes, limits: Limits) -> Answer:
        """Send `request` (whole bytes, from `build_request`) and read its answer within `limits`."""
        async with self._slots:
            if self._idle:
                try:
                    return await self._exchange(self._idle.pop(), request, limits)
                except _Stale:
                    pass  # the server closed it while it was idle: once more, on a new connection
            return await self._exchange(await self._connect(), request, limits)

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    async def _exchange(self, conn: _Connection, request: bytes, limits: Limits) -> Answer:
        try:
            answer = await conn.send(request, limits)
        except BaseException:  # an error, or the request's deadline cancelled it: never reuse
            conn.close()
            raise
        if conn.reusable and not self._closed:
            conn.reused = True
            self._idle.append(conn)
        else:
            conn.close()
        return answer

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        server_hostname = self._host if self._tls is not None else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self._read_timeout),
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=server_hostname,
                )
        except TimeoutError:
            where = f"{self._host}:{self._port}"
            raise TimeoutError(f"no connection to {where} within {self._connect_timeout:g}s") from None
        return conn


def build_request(target: str, host: str, headers: Mapping[str, str]) -> bytes:
    """A GET of `target` (origin-form: the encoded path and query) with `headers`, as bytes on the wire.
    A header name or value with CR or LF (header injection) is refused."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    text = "\r\n".join(lines)
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
        raise ValueError("a request line or header contains CR or LF")
    return (text + "\r\n\r\n").encode("latin-1")
