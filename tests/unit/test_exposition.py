from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Sequence
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.samples import Sample

from poolwatch.exporter.collector import InventoryCollector
from poolwatch.exporter.encoding import Encoder
from poolwatch.exporter.exposition import (
    INLINE_SAMPLES,
    OPENMETRICS_1_0_0,
    TEXT_0_0_4,
    TEXT_1_0_0,
    Exposition,
    negotiate,
)
from poolwatch.exporter.page_gzip import PlainPage
from poolwatch.inventory import Inventory
from poolwatch.model import PoolEventKind, PoolPolicy, PoolState, VolumeScan
from poolwatch.telemetry import Telemetry
from tests.unit.factories import (
    HOST_A,
    HOSTILE,
    NOW,
    event,
    pool,
    sample_inventory,
    sample_telemetry,
    volume,
)

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1"
)


class CountingCollector(InventoryCollector):
    """Counts full renders: every render collects exactly once."""

    collects = 0

    def collect(self) -> list[Metric]:
        self.collects += 1
        return super().collect()


@pytest.fixture
def inventory() -> Inventory:
    return sample_inventory()


@pytest.fixture
def telemetry() -> Telemetry:
    return sample_telemetry()


@pytest.fixture
def collector(inventory: Inventory, telemetry: Telemetry) -> CountingCollector:
    return CountingCollector(
        inventory, telemetry, version="1", libvirt_version="2", python_version="3"
    )


@pytest.fixture
def exposition(collector: CountingCollector) -> Exposition:
    registry = CollectorRegistry()
    registry.register(collector)
    return Exposition(registry, collector.generation)


async def test_plain_text_by_default(exposition: Exposition) -> None:
    body, headers = await exposition.render(None, None)
    assert headers == {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    assert b"libvirt_storage_pool_state{" in body


async def test_unchanged_inventory_is_served_from_cache(
    exposition: Exposition, collector: CountingCollector
) -> None:
    first = await exposition.render(None, None)
    second = await exposition.render(None, None)
    assert second[0] is first[0]
    assert second[1] is first[1]
    assert collector.collects == 1


async def test_new_generation_renders_again(
    inventory: Inventory, exposition: Exposition, collector: CountingCollector
) -> None:
    before, _ = await exposition.render(None, None)
    inventory.put_pool(HOST_A, pool("fresh"))
    after, _ = await exposition.render(None, None)
    assert collector.collects == 2
    assert b'storage_pool="fresh"' in after
    assert b'storage_pool="fresh"' not in before


async def test_counted_work_renders_again(
    telemetry: Telemetry, exposition: Exposition, collector: CountingCollector
) -> None:
    await exposition.render(None, None)
    telemetry.record_poll(HOST_A, "info", 0.01, ok=False)
    after, _ = await exposition.render(None, None)
    assert collector.collects == 2
    assert b'poolwatch_poll_errors_total{host="alpha",kind="info"} 2.0' in after


async def test_a_counted_pool_event_waits_for_the_re_read(
    inventory: Inventory,
    telemetry: Telemetry,
    exposition: Exposition,
    collector: CountingCollector,
) -> None:
    """One render per pool event: counting it moves nothing, the re-read publishes both."""
    await exposition.render(None, None)
    telemetry.record_pool_event(HOST_A, event("default", PoolEventKind.STOPPED))
    await exposition.render(None, None)
    assert collector.collects == 1
    inventory.put_pool(HOST_A, pool("default", active=False))
    after, _ = await exposition.render(None, None)
    assert collector.collects == 2
    assert b'event="stopped"' in after


async def test_openmetrics_when_asked(exposition: Exposition) -> None:
    body, headers = await exposition.render(OPENMETRICS, None)
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    samples = [
        s
        # untyped upstream
        for family in openmetrics_families(body.decode())  # type: ignore[no-untyped-call]
        for s in family.samples
        if s.name == "libvirt_storage_pool_state"
    ]
    assert {"host": HOST_A, "storage_pool": HOSTILE} in [s.labels for s in samples]


async def test_prometheus_scrape_accept_header_gets_openmetrics(exposition: Exposition) -> None:
    body, headers = await exposition.render(PROMETHEUS_ACCEPT, "gzip")
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert gzip.decompress(body).endswith(b"# EOF\n")


async def test_formats_are_cached_separately(
    exposition: Exposition, collector: CountingCollector
) -> None:
    plain, _ = await exposition.render(None, None)
    openmetrics, _ = await exposition.render(OPENMETRICS, None)
    assert plain != openmetrics
    assert (await exposition.render(OPENMETRICS, None))[0] is openmetrics
    assert (await exposition.render("text/plain", None))[0] is plain
    assert collector.collects == 2


async def test_gzip_when_accepted(exposition: Exposition, collector: CountingCollector) -> None:
    plain, _ = await exposition.render(None, None)
    body, headers = await exposition.render(None, "deflate, gzip;q=0.8")
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert gzip.decompress(body) == plain
    # Compressed from the cached plain page, not rendered again.
    assert collector.collects == 1
    assert (await exposition.render(None, "gzip"))[0] is body


async def test_no_gzip_unless_accepted(exposition: Exposition) -> None:
    _, headers = await exposition.render(None, "identity, br")
    assert "Content-Encoding" not in headers


async def test_gzip_first_then_plain_renders_once(
    exposition: Exposition, collector: CountingCollector
) -> None:
    compressed, _ = await exposition.render(None, "gzip")
    plain, _ = await exposition.render(None, None)
    assert gzip.decompress(compressed) == plain
    assert collector.collects == 1


async def test_accept_variants_share_one_render(
    exposition: Exposition, collector: CountingCollector
) -> None:
    # Each made-up version used to be a cache entry of its own, rendered from scratch.
    for minor in range(40):
        _, headers = await exposition.render(
            f"application/openmetrics-text; version=1.0.{minor}", None
        )
        assert headers["Content-Type"] == OPENMETRICS_1_0_0.content_type
    for minor in range(40):
        await exposition.render(f"text/plain; version=1.{minor}.0; escaping=dots", None)
    await exposition.render(None, None)
    # One render per encoding: OpenMetrics, then text (1.0.0 and 0.0.4 share their body).
    assert collector.collects == 2


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain; version=zz",
        "application/openmetrics-text; version=abc",
        "application/openmetrics-text; version=1.x.0",
        "application/openmetrics-text; version=0.0.1",
        "text/plain; version=",
        ";;;,,=",
        "text/plain; version=\u0661.0.0",
    ],
)
async def test_malformed_accept_falls_back_to_the_text_format(
    exposition: Exposition, accept: str
) -> None:
    body, headers = await exposition.render(accept, None)
    assert headers == {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    assert body == (await exposition.render(None, None))[0]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, TEXT_0_0_4),
        ("*/*", TEXT_0_0_4),
        ("text/plain; version=0.0.4", TEXT_0_0_4),
        ("text/plain;version=1.0.0;escaping=allow-utf-8", TEXT_1_0_0),
        ('application/openmetrics-text; version="1.0.0"', OPENMETRICS_1_0_0),
        ("application/openmetrics-text; version=2.0.0", OPENMETRICS_1_0_0),
        # Prometheus 3's header: OpenMetrics 1.0.0 first.
        (
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
            "application/openmetrics-text;version=0.0.1;q=0.5,"
            "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
            "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
            OPENMETRICS_1_0_0,
        ),
        # A range this server cannot serve is skipped, as by prometheus_client.
        ("application/openmetrics-text; version=0.0.1, text/plain; version=1.0.0", TEXT_1_0_0),
    ],
)
def test_negotiation_ends_in_a_known_format(accept: str | None, expected: object) -> None:
    assert negotiate(accept) == expected


async def test_concurrent_scrapes_share_one_render(
    exposition: Exposition, collector: CountingCollector
) -> None:
    pages = await asyncio.gather(*(exposition.render(None, "gzip") for _ in range(10)))
    assert collector.collects == 1
    assert all(page[0] is pages[0][0] for page in pages)


async def test_a_change_during_a_render_is_served_by_the_next_scrape(
    inventory: Inventory, exposition: Exposition
) -> None:
    first = asyncio.ensure_future(exposition.render(None, None))
    await asyncio.sleep(0)  # the render is collected and now encoding in its thread
    inventory.put_pool(HOST_A, pool("late"))
    assert b'storage_pool="late"' not in (await first)[0]
    assert b'storage_pool="late"' in (await exposition.render(None, None))[0]


async def test_a_scrape_during_an_older_render_is_served_the_change(
    inventory: Inventory, exposition: Exposition, collector: CountingCollector
) -> None:
    """An event lands while a render of the page before it is in flight: the scrapes that
    came after the event get a page showing it, not the older one, and share one render."""
    first = asyncio.ensure_future(exposition.render(None, None))
    await asyncio.sleep(0)  # the render is collected and now encoding in its thread
    inventory.put_pool(HOST_A, pool("late"))
    later = [asyncio.ensure_future(exposition.render(None, None)) for _ in range(5)]
    assert b'storage_pool="late"' not in (await first)[0]
    pages = [page for page, _headers in await asyncio.gather(*later)]
    assert all(b'storage_pool="late"' in page for page in pages)
    assert collector.collects == 2
    # A gzip scrape meanwhile is compressed from the plain page it got: the same change.
    inventory.put_pool(HOST_A, pool("later"))
    zipped, _ = await exposition.render(None, "gzip")
    assert b'storage_pool="later"' in gzip.decompress(zipped)


async def test_a_gzip_page_shows_the_same_generation_as_the_plain_one(
    inventory: Inventory, exposition: Exposition, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event lands as a render ends, before its page is compressed: the gzip of that older
    page goes to the scrape that asked for it, and to no scrape after the event."""
    loop = asyncio.get_running_loop()
    encode = exposition._encode

    def encode_then_an_event(encoding: str, families: list[Metric]) -> PlainPage:
        page = encode(encoding, families)
        loop.call_soon_threadsafe(inventory.put_pool, HOST_A, pool("late"))
        return page

    monkeypatch.setattr(exposition, "_encode", encode_then_an_event)
    first, _ = await exposition.render(None, "gzip")
    monkeypatch.undo()
    assert b'storage_pool="late"' not in gzip.decompress(first)
    for accept_encoding in ("gzip", "gzip", None):
        page, _ = await exposition.render(None, accept_encoding)
        if accept_encoding:
            page = gzip.decompress(page)
        assert b'storage_pool="late"' in page


def scan(*names: str, allocation: int = 1) -> VolumeScan:
    volumes = tuple(volume(name, allocation=allocation) for name in sorted(names))
    return VolumeScan(
        count=len(volumes),
        capacity_bytes=sum(v.capacity for v in volumes),
        allocation_bytes=sum(v.allocation for v in volumes),
        volumes=volumes,
        scanned_at=NOW,
    )


@pytest.mark.parametrize(
    ("accept", "full_encoder"),
    [(None, generate_latest), (OPENMETRICS, generate_openmetrics)],
    ids=["text", "openmetrics"],
)
async def test_page_stays_what_prometheus_client_encodes_as_volumes_change(
    inventory: Inventory,
    exposition: Exposition,
    collector: CountingCollector,
    accept: str | None,
    full_encoder: object,
) -> None:
    """Parts of the page are kept between renders; after every kind of change the page must
    still be byte for byte what prometheus_client encodes from scratch."""
    registry = CollectorRegistry()
    registry.register(collector)

    async def assert_whole() -> bytes:
        body, _ = await exposition.render(accept, None)
        assert body == full_encoder(registry)  # type: ignore[operator]
        return body

    hostile_volume = f"{HOSTILE}.qcow2"
    inventory.put_pool(HOST_A, pool("grows", volumes=scan("a", hostile_volume)))
    inventory.put_pool(HOST_A, pool(HOSTILE, volumes=scan("x")))
    first = await assert_whole()
    assert b"a\\" not in first  # no double escaping of what was cached
    # A rescan that found the same volumes, as the watcher publishes it: a new scan, the same
    # tuple of volumes (the parts encoded before are reused).
    grows = inventory.hosts[HOST_A].pools["grows"]
    assert grows.volumes is not None
    rescan = replace(grows.volumes, scanned_at=NOW + 60)
    inventory.put_pool(HOST_A, replace(grows, volumes=rescan))
    await assert_whole()
    # A volume grew, one was added, one pool stopped, one was undefined.
    inventory.put_pool(HOST_A, pool("grows", volumes=scan("a", "b", hostile_volume, allocation=7)))
    grown = await assert_whole()
    assert b'volume="b"' in grown
    running = inventory.hosts[HOST_A].pools[HOSTILE]
    inventory.put_pool(HOST_A, replace(running, active=False))
    inventory.drop_pool(HOST_A, "default")
    after = await assert_whole()
    assert b'storage_pool="default",volume=' not in after
    # And back: the stopped pool's volumes return with it.
    inventory.put_pool(HOST_A, running)
    assert (await assert_whole()).count(b'volume="x"') == 3  # capacity, allocation, physical


# Families whose samples name a pool but that are built whole on every collect: counters of
# the telemetry that only pools with corrections or actions have.
WHOLE_FAMILIES = {
    "poolwatch_fastpath_corrections",
    "poolwatch_autostart_attempts",
    "poolwatch_actions",
}


def count_encoded_pools(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """From now on, how many encoder calls encoded lines of each pool (per-pool families)."""
    counts: dict[str, int] = {}
    real = Encoder.samples

    def counting(encoder: Encoder, family: Metric, samples: Sequence[Sample]) -> bytes | None:
        if family.name not in WHOLE_FAMILIES:
            for name in {s.labels.get("storage_pool") for s in samples} - {None}:
                assert name is not None
                counts[name] = counts.get(name, 0) + 1
        return real(encoder, family, samples)

    monkeypatch.setattr(Encoder, "samples", counting)
    return counts


@pytest.mark.parametrize("accept", [None, OPENMETRICS], ids=["text", "openmetrics"])
async def test_a_change_to_one_pool_re_encodes_only_that_pools_lines(
    inventory: Inventory,
    telemetry: Telemetry,
    collector: CountingCollector,
    exposition: Exposition,
    monkeypatch: pytest.MonkeyPatch,
    accept: str | None,
) -> None:
    inventory.set_policy(HOST_A, "default", PoolPolicy(level=0))
    inventory.set_policy(HOST_A, "nfs", PoolPolicy(level=1))
    await exposition.render(accept, None)
    encoded = count_encoded_pools(monkeypatch)
    # An event on "nfs": it stopped, its policy and event count moved.
    nfs = inventory.hosts[HOST_A].pools["nfs"]
    inventory.put_pool(HOST_A, replace(nfs, state=PoolState.INACTIVE, active=False))
    inventory.set_policy(HOST_A, "nfs", PoolPolicy(level=2))
    telemetry.record_pool_event(HOST_A, event("nfs", PoolEventKind.STOPPED))
    body, _ = await exposition.render(accept, None)
    assert set(encoded) == {"nfs"}
    # One call per family it has lines in: state, info, active, persistent and autostart (a
    # stopped pool has no figures, nor volume lines), its threshold level, its event counters.
    assert encoded["nfs"] == 7
    registry = CollectorRegistry()
    registry.register(collector)
    full = generate_latest if accept is None else generate_openmetrics
    assert body == full(registry)


async def test_pools_read_again_unchanged_re_encode_no_pool_lines(
    inventory: Inventory,
    collector: CountingCollector,
    exposition: Exposition,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An info poll reads every pool again: new snapshots (and scans) with the same figures,
    as on an idle host. The page is rendered again (the poll's timestamp moves) but no pool's
    lines are encoded again."""
    await exposition.render(None, None)
    collects = collector.collects
    encoded = count_encoded_pools(monkeypatch)
    pools = dict(inventory.hosts[HOST_A].pools)
    for name, snapshot in pools.items():
        scan = snapshot.volumes
        rescan = None if scan is None else replace(scan, scanned_at=scan.scanned_at + 15)
        pools[name] = replace(snapshot, read_at=snapshot.read_at + 15, volumes=rescan)
    inventory.replace_pools(HOST_A, pools)
    second, _ = await exposition.render(None, None)
    assert collector.collects == collects + 1
    assert encoded == {}
    registry = CollectorRegistry()
    registry.register(collector)
    assert second == generate_latest(registry)


async def test_every_render_of_a_pool_stopped_and_started_again_is_the_full_page(
    inventory: Inventory, collector: CountingCollector, exposition: Exposition
) -> None:
    """Families none of whose parts changed are taken whole from the render before: each page
    still equals prometheus_client's encoding of everything."""
    registry = CollectorRegistry()
    registry.register(collector)
    running = inventory.hosts[HOST_A].pools["nfs"]
    stopped = replace(running, state=PoolState.INACTIVE, active=False, volumes=None)
    for snapshot in (stopped, running, stopped, running):
        inventory.put_pool(HOST_A, snapshot)
        body, _ = await exposition.render(None, None)
        assert body == generate_latest(registry)


async def test_an_events_render_runs_on_the_loop_and_a_long_one_in_the_render_thread(
    inventory: Inventory, exposition: Exposition, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A render that encodes one pool's lines again runs on the loop: in the render thread,
    the loop would wait for the GIL while that thread holds it. A render that encodes much
    (the first, or a scan's thousands of volumes) goes to the thread, so scrapes and events
    are not held up behind it."""
    threads: list[str] = []
    encode = exposition._encode

    def recorded(encoding: str, families: list[Metric]) -> PlainPage:
        threads.append(threading.current_thread().name)
        return encode(encoding, families)

    monkeypatch.setattr(exposition, "_encode", recorded)
    loop_thread = threading.current_thread().name
    await exposition.render(None, None)
    running = inventory.hosts[HOST_A].pools["nfs"]
    inventory.put_pool(HOST_A, replace(running, state=PoolState.INACTIVE, active=False))
    await exposition.render(None, None)
    many = scan(*(f"disk-{index:04d}.qcow2" for index in range(INLINE_SAMPLES)))
    inventory.put_pool(HOST_A, replace(running, volumes=many))
    body, _ = await exposition.render(None, None)
    assert b'volume="disk-0999.qcow2"' in body
    assert threads[0] != loop_thread
    assert threads[1:] == [loop_thread, threads[0]]
