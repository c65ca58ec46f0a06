"""The /metrics gzip, segment by segment: always the very plain page, deflating again only
the segments a change touched, and about as small as the whole page compressed at once."""

from __future__ import annotations

import gzip
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from poolwatch.exporter import page_gzip
from poolwatch.exporter.collector import InventoryCollector
from poolwatch.exporter.exposition import Exposition
from poolwatch.exporter.page_gzip import PageGzip, PlainPage
from poolwatch.inventory import Inventory
from poolwatch.model import PoolEventKind, PoolPolicy, PoolState, VolumeScan, VolumeSnapshot
from poolwatch.telemetry import Telemetry
from tests.unit.factories import GIB, HOST_A, NOW, FakeClock, event, pool

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def big_pool(index: int, volumes: int) -> tuple[str, object]:
    vols = tuple(
        VolumeSnapshot(
            name=f"vm-{index:03d}-disk{j:03d}.qcow2",
            type=0,
            capacity=(j % 7 + 1) * GIB,
            allocation=(index * 7919 + j * 104729) % GIB,
            physical=(index * 31 + j * 17) % GIB,
        )
        for j in range(volumes)
    )
    name = f"pool-{index:03d}"
    scan = VolumeScan(
        count=volumes,
        capacity_bytes=sum(v.capacity for v in vols),
        allocation_bytes=sum(v.allocation for v in vols),
        volumes=vols,
        scanned_at=NOW,
    )
    return name, pool(name, volumes=scan)


class World:
    """An inventory of ``pools`` pools of ``volumes`` volumes, and its /metrics."""

    def __init__(self, pools: int, volumes: int) -> None:
        clock = FakeClock()
        self.inventory = Inventory(clock=clock)
        self.inventory.add_host(HOST_A, name=HOST_A, uri="qemu:///system")
        self.inventory.set_connected(HOST_A, name=HOST_A)
        self.inventory.replace_pools(HOST_A, dict(big_pool(i, volumes) for i in range(pools)))  # type: ignore[misc]
        self.telemetry = Telemetry(clock=clock)
        self.telemetry.add_connection(HOST_A, name=HOST_A)
        self.telemetry.record_connect(HOST_A, name=HOST_A)
        collector = InventoryCollector(
            self.inventory, self.telemetry, version="1", libvirt_version="2", python_version="3"
        )
        registry = CollectorRegistry()
        registry.register(collector)
        self.exposition = Exposition(registry, collector.generation)

    async def pages(self, accept: str | None) -> tuple[bytes, bytes]:
        """The plain page and the gzip page, each as a scraper gets it."""
        plain, _ = await self.exposition.render(accept, None)
        zipped, headers = await self.exposition.render(accept, "gzip")
        assert headers["Content-Encoding"] == "gzip"
        return plain, zipped

    def change(self, name: str, **changes: object) -> None:
        self.inventory.put_pool(HOST_A, replace(self.inventory.pool(HOST_A, name), **changes))  # type: ignore[arg-type]


@pytest.mark.parametrize("accept", [None, OPENMETRICS])
async def test_gzip_page_is_the_plain_page_through_changes(accept: str | None) -> None:
    world = World(40, 30)
    steps = [
        lambda: None,
        lambda: world.change("pool-007", allocation=12345),  # a pool's figures
        lambda: world.change("pool-020", state=PoolState.INACTIVE, active=False),
        lambda: world.inventory.drop_pool(HOST_A, "pool-000"),  # the first pool goes
        lambda: world.inventory.put_pool(HOST_A, big_pool(500, 3)[1]),  # type: ignore[arg-type]
        lambda: world.inventory.put_pool(HOST_A, pool("pool-0100")),  # lands in the middle
        lambda: world.inventory.set_policy(
            HOST_A, "pool-010", PoolPolicy(level=1, growth_rate=2.5)
        ),
        lambda: (  # the event counters' family appears, with the re-read after the event
            world.telemetry.record_pool_event(HOST_A, event("pool-011", PoolEventKind.STOPPED)),
            world.change("pool-011", state=PoolState.INACTIVE, active=False),
        ),
        lambda: world.inventory.drop_pool(HOST_A, "pool-039"),  # the last pool goes
        lambda: world.inventory.replace_pools(HOST_A, {}),
    ]
    try:
        for step in steps:
            step()
            plain, zipped = await world.pages(accept)
            assert gzip.decompress(zipped) == plain
    finally:
        world.exposition.close()


async def test_a_change_to_one_pool_deflates_only_its_segments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deflated: list[int] = []
    original = page_gzip.deflate

    def counted(data: bytes, preceded_by: bytes = b"") -> bytes:
        deflated.append(len(data))
        return original(data, preceded_by)

    monkeypatch.setattr(page_gzip, "deflate", counted)
    world = World(60, 40)
    try:
        plain, _ = await world.pages(None)
        assert sum(deflated) == len(plain)  # the first gzip deflates every byte once
        deflated.clear()
        world.change("pool-030", allocation=7 * GIB, state=PoolState.INACTIVE, active=False)
        plain, zipped = await world.pages(None)
        assert gzip.decompress(zipped) == plain
        # That pool's lines in each family it is in, and what shares a segment with them: a
        # small share of the page, which was deflated whole again before.
        assert 0 < sum(deflated) < len(plain) / 5
    finally:
        world.exposition.close()


@pytest.mark.parametrize(("pools", "volumes"), [(50, 100), (500, 2)])
async def test_about_as_small_as_the_whole_page_compressed_at_once(
    pools: int, volumes: int
) -> None:
    world = World(pools, volumes)
    try:
        plain, zipped = await world.pages(None)
    finally:
        world.exposition.close()
    assert len(zipped) <= 1.2 * len(gzip.compress(plain, compresslevel=6, mtime=0))


def test_a_pool_added_moves_only_the_segments_around_it() -> None:
    def page(pools: list[int]) -> PlainPage:
        pieces = [f'size{{pool="p{i}"}} {i}\n'.encode() * 10 for i in pools]
        ends = [
            page_gzip.ends_segment(page_gzip.mark("size", (HOST_A, f"p{i}")), piece)
            for i, piece in zip(pools, pieces, strict=True)
        ]
        return PlainPage(b"".join(pieces), [(pieces, ends)])

    before = page([i for i in range(1000) if i != 500])
    after = page(list(range(1000)))
    compressor = PageGzip()
    compressor.compress(before)
    first = compressor.deflated_segments
    assert first > 8
    assert gzip.decompress(compressor.compress(after)) == after.body
    assert compressor.deflated_segments - first <= 3
