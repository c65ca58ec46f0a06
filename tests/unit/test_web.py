from __future__ import annotations

import gzip
import html
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
from poolwatch.model import PoolPolicy
from poolwatch.telemetry import Telemetry
from poolwatch.web.api import (
    AutostartDoc,
    EventDoc,
    PolicyDoc,
    PoolDoc,
    events_document,
    parse_limit,
    pools_document,
)
from poolwatch.web.app import HttpServer, create_app, start_http_server
from poolwatch.web.landing import (
    MAX_ERROR_CHARS,
    human_age,
    human_bytes,
    human_duration,
    render_landing,
)
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
    inventory: Inventory, telemetry: Telemetry, *, auto_decompress: bool = True
) -> AsyncIterator[Served]:
    registry = CollectorRegistry()
    collector = InventoryCollector(
        inventory, telemetry, version="0.1.0", libvirt_version="10.0.0", python_version="3"
    )
    registry.register(collector)
    exposition = Exposition(registry, collector.generation)
    app = create_app(
        inventory=inventory, telemetry=telemetry, exposition=exposition, clock=FakeClock(NOW + 12)
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


async def test_pools_api_policies() -> None:
    async with (
        serve(policy_inventory(), policy_telemetry()) as served,
        served.session.get("/api/v1/pools") as response,
    ):
        document = await response.json()
    pools = {(p["host"], p["name"]): p for h in document["hosts"] for p in h["pools"]}

    default = pools[HOST_A, "default"]
    assert list(default) == list(PoolDoc.__annotations__)
    assert list(default)[-1] == "policy"  # added last: earlier fields keep their places
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


def test_policy_levels_beyond_critical_and_non_finite_forecasts() -> None:
    inventory = sample_inventory()
    inventory.set_policy(
        HOST_A, "nfs", PoolPolicy(level=3, time_to_full=float("inf"), growth_rate=float("nan"))
    )
    document = pools_document(inventory)
    nfs = next(p for p in document["hosts"][0]["pools"] if p["name"] == "nfs")
    assert nfs["policy"] is not None
    assert (nfs["policy"]["level"], nfs["policy"]["level_code"]) == ("critical", 3)
    # JSON has no Infinity or NaN: a forecast without a finite answer is null.
    assert nfs["policy"]["time_to_full_seconds"] is None
    assert nfs["policy"]["growth_bytes_per_second"] is None
    json.dumps(document, allow_nan=False)


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


def test_events_document_keeps_one_shape() -> None:
    document = events_document(policy_telemetry().activity(), limit=500)
    assert {tuple(event) for event in document["events"]} == {tuple(EventDoc.__annotations__)}


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


def test_landing_shows_alarms_forecasts_and_autostart() -> None:
    page = render_landing(policy_inventory(), now=NOW + 12)

    default = _row(page, "default")
    assert "badge critical" in default
    assert ">CRITICAL<" in default  # the level in words, not only in colour
    assert "title='alarm episode ep-7'" in default
    assert "bar crit" in default  # the rule's level wins over the display-only 40 %
    assert "full in 3 h 20 m" in default
    assert "yes · boot" in default
    assert "hook:page enter_critical ok" in default
    assert "102 s ago" in default

    nfs = _row(page, "nfs")
    assert ">OK<" in nfs
    assert "bar ok" in nfs  # 92 %, but the rule says ok
    assert "not growing" in nfs

    images = _row(page, "images")
    assert ">WARNING<" in images
    assert "bar warn" in images
    assert "not enough samples" in images

    backup = _row(page, "backup")
    assert "gave up after 5 attempts: cannot mount" in backup
    assert "start_pool failed" in backup
    assert "bar" not in backup

    hostile = _row(page, html.escape(HOSTILE))
    assert ">NOT MOUNTED<" in hostile
    assert "yes · enforce" not in hostile  # the libvirt flag is off
    assert "no · enforce" in hostile
    assert "2 failed starts, next try in 40 s" in hostile
    assert "title='Cannot access storage'" in hostile

    assert f"{URI_A} · 4 pools · 1 critical · 1 not mounted · 1 gave up · " in page
    assert f"{URI_B} · 1 pool · 1 warning · " in page


def test_landing_lists_what_needs_attention_first() -> None:
    page = render_landing(policy_inventory(), now=NOW)
    attention = page[page.index("Needs attention") : page.index("</section>")]
    # Each entry links to its row; ids are made up, never taken from a pool name.
    entries = re.findall(r"<li><a href='#(h\d+-p\d+)'>([^<]*)</a>", attention)
    assert [text for _, text in entries] == [
        f"{HOST_A} / backup",
        f"{HOST_A} / default",
        f"{HOST_A} / evil &quot;pool&quot; \\ with\nnewline &lt;script&gt;alert(1)&lt;/script&gt;"
        " ünïcødé",
        f"{HOST_B} / images",
    ]
    for row_id, _ in entries:
        assert f"<tr id='{row_id}'" in page
    assert "full in 3 h 20 m" in attention
    assert "NOT MOUNTED" in attention
    assert "gave up after 5 attempts" in attention
    assert "nfs" not in attention


def test_landing_without_alarms_has_no_attention_list() -> None:
    assert "Needs attention" not in render_landing(sample_inventory(), now=NOW)


def test_landing_escapes_hostile_errors_and_actions() -> None:
    inventory = policy_inventory()
    long_error = "<b>" + "x" * 500 + "</b>"
    inventory.set_policy(
        HOST_A,
        "nfs",
        PoolPolicy(
            autostart_mode="<i>enforce</i>",
            autostart_failures=1,
            autostart_gave_up=True,
            last_error=long_error,
            last_action="hook:<script>x</script> enter_warning ok",
            last_action_at=NOW,
        ),
    )
    page = render_landing(inventory, now=NOW)
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<b>" not in page
    assert "<i>" not in page
    assert "<script>" not in page
    assert "hook:&lt;script&gt;x&lt;/script&gt; enter_warning ok" in page
    assert "gave up after 1 attempt: &lt;b&gt;" in page
    # A long error is cut in the cell (before escaping, so no entity is split) and kept whole
    # in the tooltip.
    assert "x" * (MAX_ERROR_CHARS - 4) + "…" in page
    assert f"title='{'&lt;b&gt;' + 'x' * 500 + '&lt;/b&gt;'}'" in page


def test_landing_stays_light_with_many_pools() -> None:
    inventory = Inventory(clock=FakeClock())
    inventory.add_host(HOST_A, name=HOST_A, uri=URI_A)
    inventory.set_connected(HOST_A, name=HOST_A)
    names = [f"pool-{i:03}" for i in range(300)]
    inventory.replace_pools(HOST_A, {name: pool(name) for name in names})
    for i, name in enumerate(names):
        inventory.set_policy(
            HOST_A,
            name,
            PoolPolicy(level=i % 3, time_to_full=3600.0 * i, autostart_mode="enforce"),
        )
    page = render_landing(inventory, now=NOW)
    assert page.count("<tr id=") == 300
    assert len(page) < 300 * 1500  # plain rows, no per-pool styles or scripts
    assert page.count("<li>") == 51  # 50 entries, then how many more
    assert "and 150 more below" in page


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0 s"),
        (59.9, "59 s"),
        (60, "1 m"),
        (3 * 3600 + 20 * 60 + 59, "3 h 20 m"),
        (3 * 3600 + 30, "3 h"),
        (2 * 86400 + 5 * 3600, "2 d 5 h"),
        (2 * 86400, "2 d"),
        (40 * 86400 + 5 * 3600, "40 d"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


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


def test_pools_document_is_plain_json() -> None:
    # json.dumps accepts IntEnum and tuples silently; a round trip shows only plain JSON went in.
    document = pools_document(sample_inventory(), with_volumes=True)
    assert json.loads(json.dumps(document)) == document
