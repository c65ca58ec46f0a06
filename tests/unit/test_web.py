from __future__ import annotations

import gzip
import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from poolwatch.errors import StartupError
from poolwatch.exporter.collector import InventoryCollector
from poolwatch.exporter.exposition import Exposition
from poolwatch.inventory import Inventory
from poolwatch.web.api import PoolDoc, parse_limit, pools_document
from poolwatch.web.app import HttpServer, create_app, start_http_server
from poolwatch.web.landing import human_age, human_bytes, render_landing
from tests.unit.factories import (
    GIB,
    HOST_A,
    HOST_B,
    HOSTILE,
    NOW,
    URI_A,
    URI_B,
    FakeClock,
    pool,
    sample_inventory,
)

PLAIN = {"Accept-Encoding": "identity"}


@dataclass
class Served:
    inventory: Inventory
    server: HttpServer
    session: aiohttp.ClientSession


@asynccontextmanager
async def serve(inventory: Inventory, *, auto_decompress: bool = True) -> AsyncIterator[Served]:
    registry = CollectorRegistry()
    registry.register(
        InventoryCollector(inventory, version="0.1.0", libvirt_version="10.0.0", python_version="3")
    )
    exposition = Exposition(registry, lambda: inventory.generation)
    app = create_app(inventory=inventory, exposition=exposition, clock=FakeClock(NOW + 12))
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
    async with serve(sample_inventory()) as served:
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
    async with serve(sample_inventory(), auto_decompress=False) as served:
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
    async with serve(inventory) as served:
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
        serve(Inventory(clock=FakeClock())) as served,
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
    assert backup["capacity"] == 500 * GIB  # raw figures stay, marked stale by active=false
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


def test_landing_escapes_what_libvirt_says() -> None:
    inventory = sample_inventory()
    inventory.put_pool(
        HOST_A, pool("x'><img src=y>", target_path="/tmp/'\"><b>", source="<i>src</i>")
    )
    page = render_landing(inventory, now=NOW)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;pool&quot;" in page
    assert "<img" not in page
    assert "<b>" not in page
    assert "<i>" not in page


def test_landing_shows_fill_and_state() -> None:
    page = render_landing(sample_inventory(), now=NOW + 12)
    default_row = _row(page, "default")
    assert "40 %" in default_row
    assert "bar ok" in default_row
    assert "50.0 GiB" in default_row  # free: the filesystem's figure, smaller than libvirt's
    assert "100.0 GiB" in default_row
    assert ">5<" in default_row  # every volume, not just the exported ones
    assert "bar crit" in _row(page, "nfs")  # 92 %
    assert "bar warn" in _row(page, "images")  # 85 %
    backup_row = _row(page, "backup")
    assert "inactive" in backup_row
    assert "bar" not in backup_row  # stale figures of a stopped pool are not drawn
    assert "GiB" not in backup_row
    assert "last poll 12 s ago" in page
    assert "badge down" in page


def test_landing_without_connections() -> None:
    page = render_landing(Inventory(clock=FakeClock()), now=NOW)
    assert "No libvirt connections configured" in page


def test_landing_before_the_first_poll() -> None:
    inventory = Inventory(clock=FakeClock())
    inventory.add_host(HOST_A, name=HOST_A, uri=URI_A)
    page = render_landing(inventory, now=NOW)
    assert "never polled" in page
    assert "No storage pools." in page


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, "0 s ago"),  # clocks of snapshot and page may disagree slightly
        (59.6, "60 s ago"),
        (600, "10 min ago"),
        (3 * 3600, "3 h ago"),
        (3 * 86400, "3 days ago"),
    ],
)
def test_human_age(seconds: float, text: str) -> None:
    assert human_age(seconds) == text


def _row(page: str, pool_name: str) -> str:
    start = page.index(f">{pool_name}</td>")
    return page[start : page.index("</tr>", start)]


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (int(12.3 * GIB), "12.3 GiB"),
        (1024**2 - 1, "1.0 MiB"),
        (5 * 1024**6, "5.0 EiB"),
        (2000 * 1024**6, "2000.0 EiB"),
    ],
)
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


# -- the server ----------------------------------------------------------------------------


async def test_server_reports_the_bound_port(served: Served) -> None:
    [(host, port)] = served.server.addresses
    assert host == "127.0.0.1"
    assert port != 0


async def test_address_in_use_raises_startup_error() -> None:
    async with serve(sample_inventory()) as served:
        _, port = served.server.addresses[0]
        app = create_app(inventory=served.inventory, exposition=_exposition(served.inventory))
        with pytest.raises(StartupError, match=re.escape(f"127.0.0.1:{port}")):
            await start_http_server(app=app, listen=[f"127.0.0.1:{port}"])


async def test_failed_start_leaves_nothing_listening() -> None:
    port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        inventory = sample_inventory()
        app = create_app(inventory=inventory, exposition=_exposition(inventory))
        with pytest.raises(StartupError):
            await start_http_server(app=app, listen=[f"127.0.0.1:{port}", f"127.0.0.1:{taken}"])
    # The first address was bound before the second failed; it must have been released.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


async def test_close_frees_the_port() -> None:
    inventory = sample_inventory()
    server = await start_http_server(
        app=create_app(inventory=inventory, exposition=_exposition(inventory)),
        listen=["127.0.0.1:0"],
    )
    _, port = server.addresses[0]
    await server.close()
    await server.close()  # idempotent
    again = await start_http_server(
        app=create_app(inventory=inventory, exposition=_exposition(inventory)),
        listen=[f"127.0.0.1:{port}"],
    )
    assert again.addresses == [("127.0.0.1", port)]
    await again.close()


async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    inventory = sample_inventory()
    app = create_app(inventory=inventory, exposition=_exposition(inventory))
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
    app = create_app(inventory=inventory, exposition=_exposition(inventory))
    with pytest.raises(StartupError, match=f"cannot listen on {re.escape(address)}"):
        await start_http_server(app=app, listen=[address])


async def test_no_listen_address() -> None:
    inventory = sample_inventory()
    app = create_app(inventory=inventory, exposition=_exposition(inventory))
    with pytest.raises(StartupError):
        await start_http_server(app=app, listen=[])


def _exposition(inventory: Inventory) -> Exposition:
    return Exposition(CollectorRegistry(), lambda: inventory.generation)


def test_pools_document_is_plain_json() -> None:
    # json.dumps accepts IntEnum and tuples silently; a round trip shows only plain JSON went in.
    document = pools_document(sample_inventory(), with_volumes=True)
    assert json.loads(json.dumps(document)) == document
