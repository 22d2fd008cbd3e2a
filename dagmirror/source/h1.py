"""A lean HTTP/1.1 client for the mirror's two requests (GET of an object, GET of a LIST page), on asyncio
Protocols: a pool of keep-alive connections, one request at a time on each, answers parsed as they arrive.

Why not aiohttp's client here: a GET through it cost about 170 us of the loop's CPU on these machines
(request and response objects, header multidicts, timers, the stream reader), through this module about 95
us, signing and the source boundary included (`python -m benchmarks.getcost`, docs/benchmarks.md "Where the
time goes"). On a cold pass of 10,000 small files that is most of a core-second. aiohttp stays the
transport when a proxy is set.

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
from dataclasses import dataclass
from typing import cast

from dagmirror.source._wire import BodyTooLarge

MAX_HEAD = 64 << 10  # status line and headers; S3's are about 1 KiB
_NO_BODY = (204, 304)


class ProtocolError(ConnectionError):
    """The server's bytes are not HTTP/1.1 as spoken here: the connection is dropped (transient)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes


@dataclass(frozen=True, slots=True)
class Limits:
    """`body`: most bytes a 2xx body may have (None: no bound); `error`: most bytes of any other answer's body
    kept (the rest is not read and the connection is dropped); `what`: the bound's name in errors."""

    body: int | None
    error: int
    what: str


class _Stale(ConnectionError):
    """A reused connection closed before any byte of the answer: safe to send again on a new one."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `send` one request, await its Answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self._loop = loop
        self._read_timeout = read_timeout
        self._transport: asyncio.Transport | None = None
        self._parser: _Parser | None = None
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
        self._parser = _Parser(limits)
        self._waiter = waiter = self._loop.create_future()
        self.reusable = False
        self._last_data = self._loop.time()
        self._timer = self._loop.call_later(self._read_timeout, self._check_idle)
        self._transport.write(request)
        return waiter

    def close(self) -> None:
        self.reusable = False
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


class _Parser:
    """One answer, parsed incrementally: head, then the body by its framing."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._status = 0
        self._headers: dict[str, str] = {}
        self._mode = "head"  # head | length | chunked | trailers | close | done
        self._remaining = 0  # length: bytes still to come; chunked: of the current chunk
        self._cap: int | None = None  # most body bytes kept
        self._truncate = False  # an error body: stop at the cap, drop the connection
        self._body = bytearray()
        self.untouched = True
        self.reusable = False

    def feed(self, data: bytes) -> Answer | None:
        self.untouched = False
        self._buf += data
        while True:
            if self._mode == "head":
                if not self._head():
                    return None
            elif self._mode == "length":
                return self._take_length()
            elif self._mode == "chunked":
                if not self._take_chunks():
                    return None
            elif self._mode == "trailers":
                if not self._trailers():
                    return None
            elif self._mode == "close":
                self._take_all()
                return self.answer() if self._mode == "done" else None
            if self._mode == "done":
                return self.answer()

    def at_close(self) -> bool:
        return self._mode == "close"

    def answer(self) -> Answer:
        return Answer(self._status, self._headers, bytes(self._body))

    # -- head ------------------------------------------------------------------------------------------------
    def _head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError(f"answer head larger than {MAX_HEAD} bytes")
            return False
        if end > MAX_HEAD:
            raise ProtocolError(f"answer head larger than {MAX_HEAD} bytes")
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        version, status = _status_line(lines[0])
        if 100 <= status < 200:  # 100 Continue and friends: the real answer follows
            return True
        self._status, self._headers = status, _headers(lines[1:])
        self._frame(version)
        return True

    def _frame(self, version: str) -> None:
        headers, limits = self._headers, self._limits
        ok = 200 <= self._status < 300
        self._cap = limits.body if ok else limits.error
        self._truncate = not ok
        keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if self._status in _NO_BODY:
            self._mode, self.reusable = "done", keep_alive
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._mode, self._remaining, self.reusable = "chunked", -1, keep_alive
        elif "content-length" in headers:
            self._remaining = _content_length(headers["content-length"])
            if ok and self._cap is not None and self._remaining > self._cap:
                raise BodyTooLarge(f"Content-Length {self._remaining} exceeds {limits.what} {self._cap}")
            self._mode, self.reusable = "length", keep_alive
        else:
            self._mode = "close"

    # -- bodies ----------------------------------------------------------------------------------------------
    def _take_length(self) -> Answer | None:
        take = min(self._remaining, len(self._buf))
        self._keep(self._buf[:take])
        del self._buf[:take]
        self._remaining -= take
        if self._remaining:
            return None
        self._mode = "done"
        self.reusable = self.reusable and not self._buf  # bytes after the body: not an answer we know
        return self.answer()

    def _take_all(self) -> None:
        self._keep(self._buf)
        self._buf.clear()

    def _take_chunks(self) -> bool:
        """False: more bytes are needed; True: the last chunk and trailers were read (mode "done")."""
        while True:
            if self._remaining < 0:  # at a chunk-size line
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if len(self._buf) > 1024:
                        raise ProtocolError("chunk-size line too long")
                    return False
                size = bytes(self._buf[:end]).split(b";", 1)[0].strip()
                try:
                    self._remaining = int(size, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size[:20]!r}") from None
                del self._buf[: end + 2]
                if self._remaining == 0:
                    return self._trailers()
            take = min(self._remaining, len(self._buf))
            self._keep(self._buf[:take])
            del self._buf[:take]
            self._remaining -= take
            if self._remaining or len(self._buf) < 2:
                return False
            if self._buf[:2] != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
            del self._buf[:2]
            self._remaining = -1

    def _trailers(self) -> bool:
        """After the last chunk: no trailers (CRLF) or trailer lines up to an empty line."""
        self._mode = "trailers"
        if self._buf.startswith(b"\r\n"):
            del self._buf[:2]
        else:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD:
                    raise ProtocolError("chunked trailers too large")
                return False
            del self._buf[: end + 4]
        self._mode = "done"
        self.reusable = self.reusable and not self._buf
        return True

    def _keep(self, data: bytes | bytearray) -> None:
        cap = self._cap
        if cap is not None and len(self._body) + len(data) > cap:
            if not self._truncate:
                raise BodyTooLarge(f"body exceeds {self._limits.what} {cap}")
            self._body += data[: cap - len(self._body)]
            self._mode, self.reusable = "done", False  # the rest is never read: drop the connection
            return
        self._body += data


def _status_line(line: str) -> tuple[str, int]:
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ProtocolError(f"not an HTTP/1.x status line: {line[:60]!r}")
    return parts[0], int(parts[1])


def _headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"malformed header line: {line[:60]!r}")
        name, value = name.lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _content_length(value: str) -> int:
    first = value.split(",", maxsplit=1)[0].strip()  # a repeated identical Content-Length was joined above
    if not first.isdigit() or any(v.strip() != first for v in value.split(",")):
        raise ProtocolError(f"bad Content-Length {value[:40]!r}")
    return int(first)


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
