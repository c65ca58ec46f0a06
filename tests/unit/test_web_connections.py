"""The connection bound, the request head deadline and idle keep-alive (poolwatch.web.connections),
on a real server on 127.0.0.1 with raw sockets, with the deadline shortened."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from poolwatch.exporter.exposition import Exposition
from poolwatch.telemetry import Telemetry
from poolwatch.web import app as app_module
from poolwatch.web.app import HttpServer, create_app, start_http_server
from tests.unit.factories import sample_inventory
from tests.unit.web_serving import TLS, WebConfigDir

DEADLINE = 0.5
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(autouse=True)
def short_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "REQUEST_HEAD_TIMEOUT", DEADLINE)


@asynccontextmanager
async def serving(
    *,
    max_connections: int | None = None,
    web_config: Path | None = None,
    extra: Callable[[web.Application], None] | None = None,
) -> AsyncIterator[tuple[HttpServer, Telemetry]]:
    telemetry = Telemetry()
    app = create_app(
        inventory=sample_inventory(),
        telemetry=telemetry,
        exposition=Exposition(CollectorRegistry(), lambda: 0),
    )
    if extra is not None:
        extra(app)
    server = await start_http_server(
        app=app,
        listen=["127.0.0.1:0"],
        web_config_file=web_config,
        max_connections=max_connections,
    )
    try:
        yield server, telemetry
    finally:
        await server.close()


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(server: HttpServer) -> Stream:
    host, port = server.addresses[0]
    return await asyncio.open_connection(host, port)


async def exchange(stream: Stream, request: bytes = REQUEST) -> bytes:
    """One request on an open connection; its response's status line."""
    reader, writer = stream
    writer.write(request)
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    length = 0
    while (line := await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def closed_after(reader: asyncio.StreamReader, *, within: float = 5.0) -> float:
    """Seconds until the server closes the connection (EOF or reset)."""
    began = time.monotonic()
    try:
        data = await asyncio.wait_for(reader.read(), within)
    except ConnectionError:
        data = b""
    assert data == b"", data
    return time.monotonic() - began


async def test_an_idle_keepalive_connection_outlives_the_head_deadline() -> None:
    async with serving() as (server, telemetry):
        stream = await connect(server)
        assert await exchange(stream) == b"HTTP/1.1 200 OK\r\n"
        # Idle for three deadlines, as a scraper between scrapes: the connection stays.
        await asyncio.sleep(3 * DEADLINE)
        assert await exchange(stream) == b"HTTP/1.1 200 OK\r\n"
        assert await exchange(stream) == b"HTTP/1.1 200 OK\r\n"
        stream[1].close()
    assert telemetry.http_connections_closed["timeout"] == 0


async def test_a_client_dribbling_its_headers_is_cut_at_the_deadline() -> None:
    async with serving() as (server, telemetry):
        reader, writer = await connect(server)
        # First a whole request and a long idle pause, as a keep-alive client ...
        assert await exchange((reader, writer)) == b"HTTP/1.1 200 OK\r\n"
        await asyncio.sleep(2 * DEADLINE)
        # ... then the next request's headers, one byte per 50 ms: cut one deadline after the
        # first byte, long before the last.
        slow = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100 + b"\r\n\r\n"
        began = time.monotonic()
        for byte in slow:
            if reader.at_eof():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the whole request went through")
        await closed_after(reader)
        assert time.monotonic() - began < len(slow) * 0.05
        writer.close()
    assert telemetry.http_connections_closed["timeout"] == 1


async def test_a_silent_connection_is_cut_at_the_deadline() -> None:
    async with serving() as (server, telemetry):
        reader, writer = await connect(server)
        assert await closed_after(reader) >= DEADLINE * 0.9
        writer.close()
    assert telemetry.http_connections_closed["timeout"] == 1


async def test_a_tls_client_that_never_says_hello_is_cut_at_the_deadline(
    web_dir: WebConfigDir,
) -> None:
    async with serving(web_config=web_dir.write(TLS)) as (server, telemetry):
        reader, writer = await connect(server)
        assert await closed_after(reader) >= DEADLINE * 0.9
        writer.close()
        # A real client still gets in.
        host, port = server.addresses[0]
        context = ssl.create_default_context(cafile=str(web_dir.pki.ca.cert))
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        assert await exchange((reader, writer)) == b"HTTP/1.1 200 OK\r\n"
        writer.close()
    assert telemetry.http_connections_closed["timeout"] == 1


async def test_the_connection_quiet_longest_makes_room() -> None:
    async with serving(max_connections=4) as (server, telemetry):
        idle = await connect(server)
        assert await exchange(idle) == b"HTTP/1.1 200 OK\r\n"
        silent = [await connect(server) for _ in range(3)]
        await asyncio.sleep(0.05)
        # The bound is reached: a newcomer is served, the idle connection (quiet longest) goes.
        newcomer = await connect(server)
        assert await exchange(newcomer) == b"HTTP/1.1 200 OK\r\n"
        await closed_after(idle[0], within=1.0)
        # The next newcomer pushes out the oldest silent one.
        assert await exchange(await connect(server)) == b"HTTP/1.1 200 OK\r\n"
        await closed_after(silent[0][0], within=1.0)
        assert not silent[1][0].at_eof()
        for _, writer in (idle, *silent, newcomer):
            writer.close()
    assert telemetry.http_connections_closed["limit"] == 2


async def test_a_newcomer_is_refused_when_every_connection_is_busy() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.Response(text="done\n")

    def add_slow(app: web.Application) -> None:
        app.router.add_get("/slow", slow)

    async with serving(max_connections=1, extra=add_slow) as (server, telemetry):
        busy = await connect(server)
        answer: Awaitable[bytes] = asyncio.ensure_future(
            exchange(busy, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        )
        await asyncio.wait_for(entered.wait(), 5)
        refused, writer = await connect(server)
        await closed_after(refused, within=1.0)
        writer.close()
        release.set()
        assert await answer == b"HTTP/1.1 200 OK\r\n"
        busy[1].close()
    assert telemetry.http_connections_closed["refused"] == 1
