"""The lean HTTP/1.1 client (source/h1.py) against a scripted server on 127.0.0.1: framings, limits, reuse,
stale connections, stalls and malformed answers. The S3 paths over it are in test_lean, test_sync_s3 and
the fault suites (resets, truncation, corruption through devtools.proxy)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from dagmirror.source._wire import BodyTooLarge
from dagmirror.source.h1 import H1Pool, build_request
from dagmirror.source.h1parse import MAX_HEAD, Limits, ProtocolError

Script = Callable[[int, bytes], bytes | None]  # (request number on this connection, request) -> answer
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
LIMITS = Limits(body=1000, error=100, what="the listed size")


class Server:
    """Answers each request with script(n, request); None: close the connection without answering."""

    def __init__(self, script: Script, *, stall: float = 0.0, close_after: bool = False) -> None:
        self.script, self.stall, self.close_after = script, stall, close_after
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while request := await reader.readuntil(b"\r\n\r\n"):
                self.requests += 1
                answer = self.script(n, request)
                n += 1
                if answer is None:
                    break
                if self.stall:
                    writer.write(answer[:10])
                    await asyncio.sleep(self.stall)
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serve(server: Server, *, read_timeout: float = 5.0) -> AsyncIterator[H1Pool]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    pool = H1Pool("127.0.0.1", port, tls=None, size=4, connect_timeout=2, read_timeout=read_timeout)
    try:
        yield pool
    finally:
        await pool.aclose()
        listener.close()


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def get(path: str = "/k") -> bytes:
    return build_request(path, "127.0.0.1", {"x-amz-date": "20261130T000000Z"})


async def test_keep_alive_answers_reuse_one_connection_and_read_each_body_exactly() -> None:
    server = Server(lambda n, _: ok(b"body %d" % n, 'ETag: "e"\r\nX-Twice: a\r\nx-twice: b\r\n'))
    async with serve(server) as pool:
        answers = [await pool.request(get(), LIMITS) for _ in range(3)]
    assert [a.body for a in answers] == [b"body 0", b"body 1", b"body 2"]
    assert answers[0].headers["etag"] == '"e"'
    assert answers[0].headers["x-twice"] == "a, b"
    assert server.connections == 1


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            b"abcde",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\nT: v\r\n\r\n", b"z"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", b"hi"),
        (b'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\n\r\n', b""),
    ],
)
async def test_every_framing_of_an_answer_is_read_to_its_end(answer: bytes, body: bytes) -> None:
    server = Server(lambda n, _: answer)
    async with serve(server) as pool:
        first = await pool.request(get(), LIMITS)
        second = await pool.request(get(), LIMITS)
    assert first.body == second.body == body
    assert server.connections == 1  # read exactly to its end: the connection was reused


async def test_a_body_framed_by_the_end_of_the_connection_is_complete_at_close_and_not_reused() -> None:
    server = Server(lambda n, _: b"HTTP/1.0 200 OK\r\n\r\nuntil close", close_after=True)
    async with serve(server) as pool:
        assert (await pool.request(get(), LIMITS)).body == b"until close"
        assert (await pool.request(get(), LIMITS)).body == b"until close"
    assert server.connections == 2


async def test_a_content_length_over_the_limit_is_refused_before_its_body_is_read() -> None:
    server = Server(lambda n, _: b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n")
    async with serve(server) as pool:
        with pytest.raises(BodyTooLarge, match="Content-Length 5000 exceeds the listed size 1000"):
            await pool.request(get(), LIMITS)


async def test_a_chunked_body_over_the_limit_is_refused_as_it_arrives() -> None:
    chunk = b"%x\r\n%s\r\n" % (600, b"a" * 600)
    server = Server(lambda n, _: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3)
    async with serve(server) as pool:
        with pytest.raises(BodyTooLarge, match="body exceeds the listed size 1000"):
            await pool.request(get(), LIMITS)


async def test_an_error_answer_keeps_only_its_first_bytes_and_drops_the_connection() -> None:
    server = Server(lambda n, _: f"HTTP/1.1 503 Slow\r\nContent-Length: 50000\r\n\r\n{'e' * 50000}".encode())
    async with serve(server) as pool:
        answer = await pool.request(get(), LIMITS)
        assert (answer.status, answer.body) == (503, b"e" * 100)
        await pool.request(get(), LIMITS)
    assert server.connections == 2


async def test_an_error_body_cut_at_its_cap_is_answered_without_waiting_for_the_rest() -> None:
    head = b"HTTP/1.1 500 Oops\r\nContent-Length: 50000\r\n\r\n"
    chunked = b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % 50000
    for answer in (head + b"e" * 200, chunked + b"e" * 200):  # then the server sends nothing more
        async with serve(Server(lambda n, _, a=answer: a), read_timeout=5) as pool:
            async with asyncio.timeout(2):
                got = await pool.request(get(), LIMITS)
        assert (got.status, got.body) == (500, b"e" * 100)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"SPDY/3 200 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc", "chunk not followed by CRLF"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD, "answer head larger than"),
    ],
)
async def test_a_malformed_answer_is_a_protocol_error(answer: bytes, why: str) -> None:
    async with serve(Server(lambda n, _: answer)) as pool:
        with pytest.raises(ProtocolError, match=why):
            await pool.request(get(), LIMITS)


async def test_an_idle_connection_the_server_closed_is_retried_once_on_a_new_one() -> None:
    # The server answers the first request of each connection, then closes without answering the second.
    server = Server(lambda n, _: ok(b"fresh") if n == 0 else None)
    async with serve(server) as pool:
        assert (await pool.request(get(), LIMITS)).body == b"fresh"
        assert (await pool.request(get(), LIMITS)).body == b"fresh"
    assert (server.connections, server.requests) == (2, 3)


async def test_a_new_connection_closed_before_the_answer_is_an_error_not_a_retry() -> None:
    server = Server(lambda n, _: None)
    async with serve(server) as pool:
        with pytest.raises(ConnectionResetError, match="closed by the server"):
            await pool.request(get(), LIMITS)
    assert server.requests == 1


async def test_a_server_that_stops_sending_fails_after_the_read_timeout() -> None:
    server = Server(lambda n, _: ok(b"slow"), stall=2.0)
    async with serve(server, read_timeout=0.3) as pool:
        with pytest.raises(TimeoutError, match=r"no data from the server for 0\.3s"):
            await pool.request(get(), LIMITS)


async def test_a_cancelled_request_never_returns_its_connection_to_the_pool() -> None:
    server = Server(lambda n, _: ok(b"late"), stall=0.5)
    async with serve(server) as pool:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await pool.request(get(), LIMITS)
        server.stall = 0
        assert (await pool.request(get(), LIMITS)).body == b"late"
    assert server.connections == 2


def test_a_header_with_cr_or_lf_is_refused() -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        build_request("/k", "h", {"x-amz-security-token": "a\r\nX-Evil: 1"})
    with pytest.raises(ValueError, match="CR or LF"):
        build_request("/k\n", "h", {})
    assert build_request("/k", "h", {"a": "b"}) == b"GET /k HTTP/1.1\r\nHost: h\r\na: b\r\n\r\n"
