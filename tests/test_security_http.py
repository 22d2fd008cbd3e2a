"""The probe listener faces a network (docs/security.md, "The network"): a slow client is cut off, and
connections past the cap are closed at once, so probes keep answering and file descriptors stay bounded."""

from __future__ import annotations

import asyncio
import time

from dagmirror.http import HttpServer, Probes


def probes() -> Probes:
    return Probes(lambda: True, lambda: (True, {}), lambda: b"")


async def healthz(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def slowloris(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the end of the headers
    await writer.drain()
    return reader, writer


async def test_a_client_that_never_finishes_its_headers_is_cut_off() -> None:
    server = HttpServer("127.0.0.1:0", probes(), connection_seconds=0.5)
    await server.start()
    try:
        reader, writer = await slowloris(server.port)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
        assert time.monotonic() - started < 5
        writer.close()
    finally:
        await server.stop()


async def test_connections_past_the_cap_are_closed_at_once_and_probes_answer_once_slots_free() -> None:
    server = HttpServer("127.0.0.1:0", probes(), max_connections=8, connection_seconds=1.0)
    await server.start()
    try:
        held = [await slowloris(server.port) for _ in range(8)]
        reader, writer = await slowloris(server.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the ninth: refused at once
        writer.close()
        for held_reader, _ in held:  # the eight: cut off at their deadline
            assert await asyncio.wait_for(held_reader.read(), 10) == b""
        assert (await healthz(server.port)).startswith(b"HTTP/1.1 200")
        for _, held_writer in held:
            held_writer.close()
    finally:
        await server.stop()
