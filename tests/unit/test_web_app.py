"""The HTTP server for real, on 127.0.0.1 port 0: /metrics, health, the /api/v1 documents and
the landing page as served, and how the server binds, fails and closes."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from poolwatch.documents import AutostartDoc, EventDoc, PolicyDoc, PoolDoc
from poolwatch.errors import StartupError
from poolwatch.exporter.collector import InventoryCollector
from poolwatch.exporter.exposition import Exposition
from poolwatch.inventory import Inventory
from poolwatch.telemetry import Telemetry
from poolwatch.web.api import parse_limit
from poolwatch.web.app import HttpServer, create_app, start_http_server
from tests.unit.factories import (
    GIB,
    HOST_A,
    HOST_B,
    HOSTILE,
    HOSTILE_ERROR,
    NOW,
    URI_A,
    URI_B,
    FakeClock,
    policy_inventory,
    policy_telemetry,
    pool,
    sample_inventory,
    sample_telemetry,
)

PLAIN = {"Accept-Encoding": "identity"}


@dataclass
class Served:
    inventory: Inventory
    server: HttpServer
    session: aiohttp.ClientSession


@asynccontextmanager
async def serve(
    inventory: Inventory,
    telemetry: Telemetry,
    *,
    auto_decompress: bool = True,
    news_in_flight: Callable[[], list[asyncio.Future[None]]] = lambda: [],
) -> AsyncIterator[Served]:
    registry = CollectorRegistry()
    collector = InventoryCollector(
        inventory, telemetry, version="0.1.0", libvirt_version="10.0.0", python_version="3"
    )
    registry.register(collector)
    exposition = Exposition(registry, collector.generation)
    app = create_app(
        inventory=inventory,
        telemetry=telemetry,
        exposition=exposition,
        news_in_flight=news_in_flight,
        clock=FakeClock(NOW + 12),
    )
    server = await start_http_server(app=app, listen=["127.0.0.1:0"])
    try:
        host, port = server.addresses[0]
        async with aiohttp.ClientSession(
            base_url=f"http://{host}:{port}", auto_decompress=auto_decompress
        ) as session:
            yield Served(inventory, server, session)
    finally:
        await server.close()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve(sample_inventory(), sample_telemetry()) as served:
        yield served


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- /metrics ------------------------------------------------------------------------------


async def test_metrics(served: Served) -> None:
    async with served.session.get("/metrics", headers=PLAIN) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "Content-Encoding" not in response.headers
        assert response.headers["Vary"] == "Accept, Accept-Encoding"
        text = await response.text()
    assert f'libvirt_storage_pool_state{{host="{HOST_A}",storage_pool="default"}} 2.0' in text
    assert "poolwatch_volumes_unexported" in text


async def test_metrics_gzip_is_sent_as_rendered() -> None:
    async with serve(sample_inventory(), sample_telemetry(), auto_decompress=False) as served:
        async with served.session.get("/metrics", headers=PLAIN) as response:
            plain = await response.read()
        async with served.session.get("/metrics", headers={"Accept-Encoding": "gzip"}) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            compressed = await response.read()
    assert gzip.decompress(compressed) == plain


async def test_metrics_openmetrics(served: Served) -> None:
    headers = {**PLAIN, "Accept": "application/openmetrics-text; version=1.0.0"}
    async with served.session.get("/metrics", headers=headers) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await response.read()).endswith(b"# EOF\n")


async def test_metrics_head(served: Served) -> None:
    async with served.session.head("/metrics", headers=PLAIN) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        assert await response.read() == b""


async def test_metrics_follow_the_inventory(served: Served) -> None:
    served.inventory.drop_pool(HOST_A, "default")
    async with served.session.get("/metrics", headers=PLAIN) as response:
        text = await response.text()
    assert 'libvirt_storage_pool_state{host="alpha",storage_pool="default"}' not in text


async def test_a_scrape_waits_for_the_re_read_of_a_started_pool() -> None:
    """/metrics renders once the re-reads in flight of pools an event started are done
    (web/settle.py): the page shows what the re-read found."""
    inventory = sample_inventory()
    reread: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def read_again() -> None:
        inventory.drop_pool(HOST_A, "default")  # what the re-read found
        reread.set_result(None)

    def news_in_flight() -> list[asyncio.Future[None]]:
        asyncio.get_running_loop().call_soon(read_again)  # ends while the scrape waits
        return [reread]

    async with (
        serve(inventory, sample_telemetry(), news_in_flight=news_in_flight) as served,
        served.session.get("/metrics", headers=PLAIN) as response,
    ):
        text = await response.text()
    assert f'libvirt_storage_pool_state{{host="{HOST_A}",storage_pool="default"}}' not in text
    assert f'libvirt_storage_pool_state{{host="{HOST_A}",storage_pool="nfs"}}' in text


# -- health --------------------------------------------------------------------------------


async def test_healthz(served: Served) -> None:
    async with served.session.get("/healthz") as response:
        assert response.status == 200
        assert await response.text() == "ok\n"


async def test_readyz_waits_for_every_connection() -> None:
    inventory = Inventory(clock=FakeClock())
    inventory.add_host("main", name="main", uri=URI_A)
    inventory.add_host(URI_B, name="beta", uri=URI_B)
    inventory.set_connected("main", name=HOST_A)
    async with serve(inventory, Telemetry(clock=FakeClock())) as served:
        async with served.session.get("/readyz") as response:
            assert response.status == 503
            text = await response.text()
        assert f"main ({URI_A}): polling" in text
        assert f"{URI_B}: not connected" in text

        inventory.replace_pools("main", {"default": pool("default")})
        async with served.session.get("/readyz") as response:
            assert response.status == 503
            text = await response.text()
        assert "main" not in text
        assert URI_B in text

        inventory.replace_pools(URI_B, {})
        async with served.session.get("/readyz") as response:
            assert response.status == 200
            assert await response.text() == "ready\n"


async def test_readyz_without_connections() -> None:
    async with (
        serve(Inventory(clock=FakeClock()), Telemetry(clock=FakeClock())) as served,
        served.session.get("/readyz") as response,
    ):
        assert response.status == 503
        assert "no libvirt connections" in await response.text()


# -- /api/v1/pools -------------------------------------------------------------------------


async def test_pools_api(served: Served) -> None:
    async with served.session.get("/api/v1/pools") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        document = await response.json()
    hosts = document["hosts"]
    assert [(h["key"], h["name"], h["uri"], h["up"]) for h in hosts] == [
        (HOST_A, HOST_A, URI_A, True),
        (HOST_B, HOST_B, URI_B, False),
    ]
    assert hosts[0]["last_poll_success"] == NOW
    pools = {p["name"]: p for p in hosts[0]["pools"]}
    assert list(pools) == sorted(pools)

    default = pools["default"]
    assert list(default) == list(PoolDoc.__annotations__)  # stable field order
    assert default["state"] == "running"
    assert default["state_code"] == 2
    assert default["fill_ratio"] == pytest.approx(0.4)
    assert default["free_bytes"] == 50 * GIB  # the filesystem is tighter than libvirt says
    assert default["filesystem"] == {
        "avail_bytes": 50 * GIB,
        "size_bytes": 200 * GIB,
        "device": "253:1",
    }
    assert default["volumes"] == {
        "count": 5,
        "capacity_bytes": 60 * GIB,
        "allocation_bytes": 15 * GIB,
        "exported": 3,
        "scanned_at": NOW - 30,
    }

    backup = pools["backup"]
    assert (backup["state"], backup["state_code"], backup["active"]) == ("inactive", 0, False)
    assert backup["fill_ratio"] is None
    assert backup["free_bytes"] is None
    assert backup["capacity"] is None  # libvirt's stale figures are not passed on
    assert pools[HOSTILE]["volumes"] is None


async def test_pools_api_with_volumes(served: Served) -> None:
    async with served.session.get("/api/v1/pools", params={"volumes": "1"}) as response:
        document = await response.json()
    default = next(p for p in document["hosts"][0]["pools"] if p["name"] == "default")
    assert [v["name"] for v in default["volumes"]["list"]] == ["a.qcow2", "b.raw", "c.qcow2"]
    assert default["volumes"]["list"][1] == {
        "name": "b.raw",
        "type": 0,
        "capacity": GIB,
        "allocation": GIB,
        "physical": None,
    }


async def test_pools_api_gzip_when_asked() -> None:
    async with serve(sample_inventory(), sample_telemetry(), auto_decompress=False) as served:
        async with served.session.get("/api/v1/pools", headers=PLAIN) as response:
            assert "Content-Encoding" not in response.headers
            plain = await response.read()
        async with served.session.get(
            "/api/v1/pools", headers={"Accept-Encoding": "gzip"}
        ) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert response.headers["Vary"] == "Accept-Encoding"
            assert response.content_type == "application/json"
            compressed = await response.read()
    assert json.loads(gzip.decompress(compressed)) == json.loads(plain)


async def test_pools_api_policies() -> None:
    async with (
        serve(policy_inventory(), policy_telemetry()) as served,
        served.session.get("/api/v1/pools") as response,
    ):
        document = await response.json()
    pools = {(p["host"], p["name"]): p for h in document["hosts"] for p in h["pools"]}

    default = pools[HOST_A, "default"]
    assert list(default) == list(PoolDoc.__annotations__)
    # Fields are appended: earlier fields keep their places.
    assert list(default)[-2:] == ["policy", "guests"]
    assert default["policy"] == {
        "level": "critical",
        "level_code": 2,
        "episode": "ep-7",
        "time_to_full_seconds": 12000,
        "growth_bytes_per_second": 4096.0,
        "autostart": {
            "mode": "boot",
            "failures": 0,
            "gave_up": False,
            "next_attempt_at": None,
            "last_error": None,
        },
        "not_mounted": None,
        "last_action": "hook:page enter_critical ok",
        "last_action_at": NOW - 90,
    }
    assert list(default["policy"]) == list(PolicyDoc.__annotations__)
    assert list(default["policy"]["autostart"]) == list(AutostartDoc.__annotations__)

    nfs = pools[HOST_A, "nfs"]["policy"]
    assert (nfs["level"], nfs["level_code"], nfs["autostart"]) == ("ok", 0, None)
    assert (nfs["time_to_full_seconds"], nfs["growth_bytes_per_second"]) == (None, -12.5)

    backup = pools[HOST_A, "backup"]["policy"]
    assert (backup["level"], backup["level_code"]) == (None, None)  # no threshold rule
    assert backup["autostart"] == {
        "mode": "enforce",
        "failures": 5,
        "gave_up": True,
        "next_attempt_at": None,
        "last_error": HOSTILE_ERROR,
    }

    hostile = pools[HOST_A, HOSTILE]["policy"]
    assert hostile["not_mounted"] is True
    assert hostile["autostart"]["next_attempt_at"] == NOW + 52

    assert pools[HOST_B, "images"]["policy"]["level"] == "warning"


async def test_pools_api_policy_is_null_without_a_rule(served: Served) -> None:
    async with served.session.get("/api/v1/pools") as response:
        document = await response.json()
    assert all(p["policy"] is None for h in document["hosts"] for p in h["pools"])


# -- /api/v1/events ------------------------------------------------------------------------


async def test_events_newest_first(served: Served) -> None:
    async with served.session.get("/api/v1/events") as response:
        assert response.status == 200
        events = (await response.json())["events"]
    kinds = [(e["host"], e["kind"], e["pool"]) for e in events]
    assert kinds == [
        (HOST_B, "disconnected", None),
        (HOST_B, "connected", None),
        (HOST_A, "undefined", "transient"),
        (HOST_A, "refreshed", "default"),
        (HOST_A, "refreshed", "default"),
        (HOST_A, "started", "default"),
        (HOST_A, "connected", None),
    ]
    assert events[0]["detail"] == "connection reset by peer"


async def test_events_actions() -> None:
    async with (
        serve(policy_inventory(), policy_telemetry()) as served,
        served.session.get("/api/v1/events", params={"limit": "3"}) as response,
    ):
        events = (await response.json())["events"]
    hook, start, disconnected = events
    assert hook == {
        "at": NOW,
        "host": HOST_A,
        "kind": "action",
        "pool": "default",
        "detail": "enter_critical",
        "action": "hook:page",
        "result": "ok",
        "guest": None,
    }
    assert (start["action"], start["result"], start["detail"]) == (
        "start_pool",
        "failed",
        HOSTILE_ERROR,
    )
    # Every event has the same fields; those of actions are null for the others.
    assert list(disconnected) == list(EventDoc.__annotations__)
    assert (disconnected["kind"], disconnected["action"], disconnected["result"]) == (
        "disconnected",
        None,
        None,
    )


async def test_events_limit(served: Served) -> None:
    async with served.session.get("/api/v1/events", params={"limit": "2"}) as response:
        events = (await response.json())["events"]
    assert [e["kind"] for e in events] == ["disconnected", "connected"]


@pytest.mark.parametrize("limit", ["abc", "0", "-1", "1.5"])
async def test_events_bad_limit(served: Served, limit: str) -> None:
    async with served.session.get("/api/v1/events", params={"limit": limit}) as response:
        assert response.status == 400
        assert "limit" in (await response.json())["error"]


def test_limit_defaults_and_cap() -> None:
    assert parse_limit(None) == 100
    assert parse_limit("7") == 7
    assert parse_limit("100000") == 500


# -- landing page --------------------------------------------------------------------------


async def test_landing_page(served: Served) -> None:
    async with served.session.get("/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    for name in ("default", "nfs", "backup", "images"):
        assert f">{name}</td>" in page
    for link in ("/metrics", "/api/v1/pools", "/api/v1/events", "/healthz", "/readyz"):
        assert f"href='{link}'" in page


# -- the server ----------------------------------------------------------------------------


async def test_server_reports_the_bound_port(served: Served) -> None:
    [(host, port)] = served.server.addresses
    assert host == "127.0.0.1"
    assert port != 0


async def test_address_in_use_raises_startup_error() -> None:
    async with serve(sample_inventory(), sample_telemetry()) as served:
        _, port = served.server.addresses[0]
        app = create_app(
            inventory=served.inventory,
            telemetry=Telemetry(),
            exposition=_exposition(served.inventory),
        )
        with pytest.raises(StartupError, match=re.escape(f"127.0.0.1:{port}")):
            await start_http_server(app=app, listen=[f"127.0.0.1:{port}"])


async def test_failed_start_leaves_nothing_listening() -> None:
    port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        inventory = sample_inventory()
        app = create_app(
            inventory=inventory, telemetry=Telemetry(), exposition=_exposition(inventory)
        )
        with pytest.raises(StartupError):
            await start_http_server(app=app, listen=[f"127.0.0.1:{port}", f"127.0.0.1:{taken}"])
    # The first address was bound before the second failed; it must have been released.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


async def test_close_frees_the_port() -> None:
    inventory = sample_inventory()
    server = await start_http_server(
        app=create_app(
            inventory=inventory, telemetry=Telemetry(), exposition=_exposition(inventory)
        ),
        listen=["127.0.0.1:0"],
    )
    _, port = server.addresses[0]
    await server.close()
    await server.close()  # idempotent
    again = await start_http_server(
        app=create_app(
            inventory=inventory, telemetry=Telemetry(), exposition=_exposition(inventory)
        ),
        listen=[f"127.0.0.1:{port}"],
    )
    assert again.addresses == [("127.0.0.1", port)]
    await again.close()


async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    inventory = sample_inventory()
    app = create_app(inventory=inventory, telemetry=Telemetry(), exposition=_exposition(inventory))
    try:
        server = await start_http_server(app=app, listen=["[::1]:0"])
    except StartupError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    try:
        [(host, port)] = server.addresses
        assert host == "::1"
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://[::1]:{port}/healthz") as response,
        ):
            assert response.status == 200
    finally:
        await server.close()


@pytest.mark.parametrize("address", ["9479", "::1:9479", "host:70000"])
async def test_malformed_listen_address(address: str) -> None:
    inventory = sample_inventory()
    app = create_app(inventory=inventory, telemetry=Telemetry(), exposition=_exposition(inventory))
    with pytest.raises(StartupError, match=f"cannot listen on {re.escape(address)}"):
        await start_http_server(app=app, listen=[address])


async def test_no_listen_address() -> None:
    inventory = sample_inventory()
    app = create_app(inventory=inventory, telemetry=Telemetry(), exposition=_exposition(inventory))
    with pytest.raises(StartupError):
        await start_http_server(app=app, listen=[])


def _exposition(inventory: Inventory) -> Exposition:
    return Exposition(CollectorRegistry(), lambda: inventory.generation)
