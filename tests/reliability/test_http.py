"""HTTP under overload and hostile clients: the in-flight limit, malformed requests, huge
headers and slowloris, against poolwatch's real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from poolwatch.exporter.collector import InventoryCollector
from poolwatch.exporter.exposition import Exposition
from poolwatch.web import app as app_module
from poolwatch.web.app import HttpServer, create_app, start_http_server
from tests.reliability.conftest import FULL
from tests.unit.factories import sample_inventory, sample_telemetry

Figure = Callable[[str, str, str], None]


async def _serve(extra: Callable[[web.Application], None] | None = None) -> HttpServer:
    inventory = sample_inventory()
    registry = CollectorRegistry()
    telemetry = sample_telemetry()
    registry.register(
        InventoryCollector(
            inventory, telemetry, version="0.1.0", libvirt_version="10.0.0", python_version="3"
        )
    )
    app = create_app(
        inventory=inventory, telemetry=telemetry, exposition=Exposition(registry, lambda: 0)
    )
    if extra is not None:
        extra(app)
    return await start_http_server(app=app, listen=["127.0.0.1:0"])


@pytest.fixture
async def release() -> AsyncIterator[asyncio.Event]:
    event = asyncio.Event()
    yield event
    event.set()


async def test_in_flight_limit_refuses_fast(release: asyncio.Event, figure: Figure) -> None:
    entered = [0]
    all_entered = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered[0] += 1
        if entered[0] == app_module.MAX_IN_FLIGHT:
            all_entered.set()
        await release.wait()
        return web.Response(text="done\n")

    server = await _serve(lambda app: app.router.add_get("/slow", slow))
    host, port = server.addresses[0]
    base = f"http://{host}:{port}"
    limit = app_module.MAX_IN_FLIGHT
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=20),
        ) as session:

            async def get(path: str) -> tuple[int, str, float]:
                began = time.monotonic()
                async with session.get(base + path) as response:
                    await response.read()
                    retry = response.headers.get("Retry-After", "")
                    return response.status, retry, time.monotonic() - began

            held = [asyncio.create_task(get("/slow")) for _ in range(limit)]
            await asyncio.wait_for(all_entered.wait(), 10)
            assert entered[0] == limit
            refused = [await get("/metrics") for _ in range(20)]
            assert all(status == 503 and retry == "1" for status, retry, _ in refused), refused
            slowest = max(seconds for _, _, seconds in refused)
            assert slowest < 1.0
            health = await get("/healthz")
            assert health[0] == 200, "/healthz is exempt from the limit"
            release.set()
            done = await asyncio.gather(*held)
            assert all(status == 200 for status, _, _ in done)
            # The limit counts down again: a request now is served.
            assert (await get("/metrics"))[0] == 200
    finally:
        await server.close()
    figure(
        f"{limit} requests held in handlers, then 20 more /metrics and a /healthz",
        "the 20 got 503 + Retry-After at once; /healthz 200; all held requests finished 200",
        f"slowest refusal {slowest * 1000:.1f} ms (limit {limit})",
    )


async def _raw(host: str, port: int, data: bytes, *, within: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), within)
    finally:
        writer.close()


def _status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


async def test_malformed_requests_and_huge_headers_are_refused(figure: Figure) -> None:
    server = await _serve()
    host, port = server.addresses[0]
    cases: dict[str, tuple[bytes, set[int]]] = {
        "garbage": (b"\x00\x01\x02 garbage\r\n\r\n", {400}),
        "bad version": (b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n", {400, 505}),
        "no path": (b"GET\r\n\r\n", {400}),
        "bad header": (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", {400}),
        "huge request line": (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", {400, 414}),
        "huge header": (b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", {400, 431}),
        "many headers": (
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(500)) + b"\r\n",
            {400, 431},
        ),
        "bad content-length": (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            {400},
        ),
        "smuggling": (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            {400},
        ),
    }
    seen = {}
    try:
        for name, (data, expected) in cases.items():
            status = _status_of(await _raw(host, port, data))
            seen[name] = status
            assert status in expected, f"{name}: {status}"
        # The server is still fine.
        answer = await _raw(host, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status_of(answer) == 200
    finally:
        await server.close()
    figure(
        f"{len(cases)} malformed requests on raw sockets (garbage, 20 kB line/header, 500 "
        "headers, bad Content-Length, CL+TE smuggling)",
        "each refused with 400/414/431/505 before any handler; server healthy after",
        ", ".join(f"{k}={v}" for k, v in seen.items()),
    )


async def test_slowloris_is_bounded(monkeypatch: pytest.MonkeyPatch, figure: Figure) -> None:
    # CI: a 1 s bound so the test stays short; full: the shipped REQUEST_HEAD_TIMEOUT.
    bound = app_module.REQUEST_HEAD_TIMEOUT if FULL else 1.0
    monkeypatch.setattr(app_module, "REQUEST_HEAD_TIMEOUT", bound)
    server = await _serve()
    host, port = server.addresses[0]
    clients = 20
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"s" * 4000 + b"\r\n\r\n"

    async def slow_client() -> float:
        began = time.monotonic()
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in range(len(request)):
                if time.monotonic() - began > bound + 10:
                    return float("inf")
                try:
                    writer.write(request[i : i + 1])
                    await writer.drain()
                except ConnectionError:
                    break
                if reader.at_eof():
                    break
                await asyncio.sleep(0.1)
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), bound + 10)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
        return time.monotonic() - began

    try:
        slow = [asyncio.create_task(slow_client()) for _ in range(clients)]
        latencies = []
        async with aiohttp.ClientSession() as session:
            while not all(task.done() for task in slow):
                began = time.monotonic()
                async with session.get(f"http://{host}:{port}/metrics") as response:
                    assert response.status == 200
                    await response.read()
                latencies.append(time.monotonic() - began)
                await asyncio.sleep(0.05)
        closed_after = [task.result() for task in slow]
    finally:
        await server.close()
    assert max(closed_after) < bound + 3, closed_after
    p50 = statistics.median(latencies) * 1000
    worst = max(latencies) * 1000
    assert worst < 500
    figure(
        f"{clients} clients sending a request's headers 1 byte / 100 ms, request head bound "
        f"{bound:g} s",
        "every slow connection closed by the server within the bound (+3 s); /metrics kept "
        "answering",
        f"closed after {min(closed_after):.1f}-{max(closed_after):.1f} s; concurrent /metrics "
        f"p50 {p50:.1f} ms, max {worst:.1f} ms over {len(latencies)} scrapes",
    )
