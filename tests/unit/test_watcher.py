"""The watcher against an in-memory StorageSource: events, polls, races and reconnects."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from poolwatch.config import PollConfig
from poolwatch.inventory import Inventory
from poolwatch.model import (
    GuestEventKind,
    GuestSnapshot,
    PoolEventKind,
    PoolState,
    VolumeScan,
    VolumeSnapshot,
)
from poolwatch.source import (
    Connected,
    Disconnected,
    GuestChanged,
    GuestNotFound,
    PoolChanged,
    PoolNotFound,
    PoolReading,
    SourceEvent,
    SourceUnavailable,
    VolumeDescription,
)
from poolwatch.telemetry import Telemetry
from poolwatch.watcher import Watcher
from tests.helpers import captured_logs

GiB = 1024**3


def reading(name: str, *, active: bool = True, volumes: int = 0) -> PoolReading:
    return PoolReading(
        name=name,
        uuid=f"uuid-{name}",
        type="dir",
        target_path=f"/pools/{name}",
        source="",
        state=PoolState.RUNNING if active else PoolState.INACTIVE,
        active=active,
        persistent=True,
        autostart=False,
        capacity=100 * GiB,
        allocation=10 * GiB,
        available=90 * GiB,
        volume_count=volumes if active else None,
    )


class FakeSource:
    """A libvirt host in memory; ``list_gate`` lets a test hold a listing mid-flight."""

    def __init__(self, *pools: PoolReading) -> None:
        self.pools = {p.name: p for p in pools}
        self.volumes: dict[str, list[VolumeSnapshot]] = {}
        self._listener: Callable[[SourceEvent], None] = lambda _event: None
        self._on_the_way = 0  # pushed, not handed to the listener yet
        self.list_gate: asyncio.Event | None = None
        self.read_gate: asyncio.Event | None = None  # holds an event's re-read
        self.scan_gate: asyncio.Event | None = None  # holds a volume scan, once counted
        # Awaited after each pool a listing reads: its jobs end between two pools when an event's
        # re-read waits (LibvirtSource.list_pools).
        self.between_pools: Callable[[str], Awaitable[None]] | None = None
        self.connected = False
        self.scans = 0
        self.listings: list[str] = []  # pools whose volume names were listed, in order
        self.guests: dict[str, GuestSnapshot] = {}  # by uuid
        self.resumed: list[str] = []
        self.flags_read: list[bool] = []  # per re-read: whether it asked for the flags

    def listen(self, handler: Callable[[SourceEvent], None]) -> None:
        self._listener = handler

    @property
    def read_only(self) -> bool:
        return False

    def events_on_the_way(self) -> bool:
        return self._on_the_way > 0

    def push(self, event: SourceEvent) -> None:
        """``event`` from libvirt: handed to the listener a loop turn later, as LibvirtSource
        hands over what libvirt's callbacks give it."""
        self._on_the_way += 1
        asyncio.get_running_loop().call_soon(self._hand, event)

    def _hand(self, event: SourceEvent) -> None:
        self._on_the_way -= 1
        self._listener(event)

    async def start(self) -> None:
        self.connect()

    async def close(self) -> None:
        pass

    def connect(self) -> None:
        self.connected = True
        self.push(Connected(hostname="kvm01"))

    def disconnect(self) -> None:
        self.connected = False
        self.push(Disconnected(reason="eof"))

    def emit(self, name: str, kind: PoolEventKind) -> None:
        self.push(PoolChanged(name, f"uuid-{name}", kind))

    def _check(self) -> None:
        if not self.connected:
            raise SourceUnavailable("down")

    async def list_pools(self) -> list[PoolReading]:
        self._check()
        if self.between_pools is not None:
            readings = []
            for name in list(self.pools):
                readings.append(self.pools[name])
                await self.between_pools(name)
            return readings
        snapshot = list(self.pools.values())
        if self.list_gate is not None:
            await self.list_gate.wait()
        return snapshot

    async def read_pool(
        self, name: str, *, flags: tuple[bool, bool] | None = None, uuid: str | None = None
    ) -> PoolReading:
        self._check()
        if self.read_gate is not None:
            await self.read_gate.wait()
        if name not in self.pools:
            raise PoolNotFound(name)
        self.flags_read.append(flags is None)
        if flags is not None:  # not asked for: taken as the caller knows them, as libvirt's is
            return dataclasses.replace(self.pools[name], persistent=flags[0], autostart=flags[1])
        return self.pools[name]

    async def scan_volumes(self, name: str, *, limit: int) -> VolumeScan:
        self._check()
        self.scans += 1
        if self.scan_gate is not None:
            await self.scan_gate.wait()
        volumes = sorted(self.volumes.get(name, []), key=lambda v: v.name)
        return VolumeScan(
            count=len(volumes),
            capacity_bytes=sum(v.capacity for v in volumes),
            allocation_bytes=sum(v.allocation for v in volumes),
            volumes=tuple(volumes[:limit]),
            scanned_at=float(self.scans),  # every scan is news, as with the real clock
        )

    async def refresh_pool(self, name: str, *, urgent: bool = False) -> None:
        self._check()
        self.emit(name, PoolEventKind.REFRESHED)

    async def list_volume_names(self, name: str) -> list[str]:
        self._check()
        self.listings.append(name)
        return [v.name for v in self.volumes.get(name, [])]

    async def describe_volumes(
        self, name: str, volumes: Sequence[str] | None = None
    ) -> list[VolumeDescription]:
        self._check()
        target = self.pools[name].target_path
        return [
            VolumeDescription(v, os.path.join(target, v.name), "raw")
            for v in self.volumes.get(name, [])
            if volumes is None or v.name in volumes
        ]

    async def start_flagged_pool(self, name: str) -> bool:
        self._check()
        if not self.pools[name].autostart:
            return False
        self.pools[name] = dataclasses.replace(self.pools[name], active=True)
        self.emit(name, PoolEventKind.STARTED)
        return True

    async def set_autostart(self, name: str, *, enabled: bool) -> None:
        self._check()
        self.pools[name] = dataclasses.replace(self.pools[name], autostart=enabled)

    async def list_guests(self) -> list[GuestSnapshot]:
        self._check()
        return list(self.guests.values())

    async def read_guest(self, uuid: str) -> GuestSnapshot:
        self._check()
        if uuid not in self.guests:
            raise GuestNotFound(uuid)
        return self.guests[uuid]

    async def resume_guest(self, uuid: str) -> None:
        self._check()
        self.resumed.append(uuid)

    async def destroy_guest(self, uuid: str) -> None:
        self._check()


async def until(condition: Callable[[], bool], inventory: Inventory) -> None:
    async def wait() -> None:
        while not condition():
            await inventory.wait_changed(inventory.generation)

    await asyncio.wait_for(wait(), 2)


def watcher_of(
    source: FakeSource,
    inventory: Inventory,
    telemetry: Telemetry,
    *,
    stat_filesystems: bool = False,
    key: str = "kvm01",
    volumes_polled: Callable[[], None] = lambda: None,
    **poll: float,
) -> Watcher:
    """The watcher of connection ``key``; every timer far away unless ``poll`` says: changes in
    these tests come from events, explicit polls or the timers a test shortens."""
    far = {"interval": 3600.0, "volumes_interval": 3600.0, "refresh_interval": 3600.0}
    return Watcher(
        key=key,
        uri="qemu:///system" if key == "kvm01" else key,
        name=None,
        source=source,
        inventory=inventory,
        telemetry=telemetry,
        poll=PollConfig(**{**far, **poll}),
        stat_filesystems=stat_filesystems,
        volumes_polled=volumes_polled,
    )


@pytest.fixture
def telemetry() -> Telemetry:
    """The telemetry the ``watched`` watcher counts in."""
    return Telemetry()


@pytest.fixture
async def watched(telemetry: Telemetry) -> AsyncIterator[tuple[FakeSource, Inventory]]:
    source = FakeSource(reading("images", volumes=2), reading("isos", active=False))
    source.volumes["images"] = [
        VolumeSnapshot("a.qcow2", 0, 10 * GiB, 1 * GiB, None),
        VolumeSnapshot("b.qcow2", 0, 20 * GiB, 2 * GiB, None),
    ]
    inventory = Inventory()
    watcher = watcher_of(source, inventory, telemetry)
    task = asyncio.create_task(watcher.run())
    await until(lambda: inventory.ready, inventory)
    await until(lambda: inventory.pool("kvm01", "images").volumes is not None, inventory)  # type: ignore[union-attr]
    yield source, inventory
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_resync_reads_every_pool_and_the_volumes_of_active_ones(
    watched: tuple[FakeSource, Inventory],
) -> None:
    _, inventory = watched
    host = inventory.hosts["kvm01"]
    assert host.up
    assert host.name == "kvm01"
    images = host.pools["images"]
    assert images.volumes is not None
    assert images.volumes.count == 2
    assert images.volumes.capacity_bytes == 30 * GiB
    assert host.pools["isos"].volumes is None


async def test_an_event_is_unhandled_from_its_arrival_until_the_watcher_shows_it(
    telemetry: Telemetry,
) -> None:
    """What a scrape waits for before it renders (web/settle.py)."""
    source = FakeSource(reading("images"))
    inventory = Inventory()
    watcher = watcher_of(source, inventory, telemetry)
    task = asyncio.create_task(watcher.run())
    try:
        await until(lambda: inventory.ready, inventory)
        assert not watcher.events_unhandled()
        source.emit("images", PoolEventKind.STOPPED)
        assert watcher.events_unhandled()
        assert inventory.pool("kvm01", "images").active  # type: ignore[union-attr]
        await until(lambda: not watcher.events_unhandled(), inventory)
        assert not inventory.pool("kvm01", "images").active  # type: ignore[union-attr]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_stop_event_shows_at_once_then_rereads_the_pool(
    watched: tuple[FakeSource, Inventory], telemetry: Telemetry
) -> None:
    source, inventory = watched
    source.pools["images"] = dataclasses.replace(
        reading("images", active=False), capacity=7 * GiB, autostart=True
    )
    source.read_gate = asyncio.Event()  # the re-read waits behind other calls
    source.emit("images", PoolEventKind.STOPPED)
    # libvirt's event is its word that the pool stopped: shown before any call returns.
    await until(lambda: not inventory.pool("kvm01", "images").active, inventory)  # type: ignore[union-attr]
    pool = inventory.pool("kvm01", "images")
    assert pool is not None
    assert (pool.state, pool.volumes, pool.capacity) == (PoolState.INACTIVE, None, 100 * GiB)
    source.read_gate.set()
    await until(lambda: inventory.pool("kvm01", "images").capacity == 7 * GiB, inventory)  # type: ignore[union-attr]
    assert telemetry.stats("kvm01").pool_events["images"][PoolEventKind.STOPPED] == 1
    # A stop cannot change whether the pool is persistent or autostarts: the re-read did not
    # ask (the autostart flag changes without an event, and the info poll reads it).
    assert source.flags_read[-1] is False
    assert inventory.pool("kvm01", "images").autostart is False  # type: ignore[union-attr]


async def test_a_pool_stopped_before_its_scan_is_not_scanned(
    watched: tuple[FakeSource, Inventory],
) -> None:
    source, inventory = watched
    source.pools["isos"] = reading("isos", volumes=1)
    source.volumes["isos"] = [VolumeSnapshot("d.iso", 0, GiB, GiB, None)]
    source.scan_gate = asyncio.Event()
    scans = source.scans
    source.emit("isos", PoolEventKind.STARTED)
    await until(lambda: inventory.pool("kvm01", "isos").active, inventory)  # type: ignore[union-attr]
    await asyncio.sleep(0.05)  # its scan starts, and is held
    assert source.scans == scans + 1
    source.emit("isos", PoolEventKind.STARTED)  # started again: one more scan is asked for
    await asyncio.sleep(0.05)
    source.pools["isos"] = reading("isos", active=False)
    source.emit("isos", PoolEventKind.STOPPED)
    await until(lambda: not inventory.pool("kvm01", "isos").active, inventory)  # type: ignore[union-attr]
    source.scan_gate.set()
    await asyncio.sleep(0.05)
    assert source.scans == scans + 1  # the scan asked for before the stop did not run
    assert inventory.pool("kvm01", "isos").volumes is None  # type: ignore[union-attr]


async def test_undefined_pool_leaves_at_once(
    watched: tuple[FakeSource, Inventory], telemetry: Telemetry
) -> None:
    source, inventory = watched
    del source.pools["isos"]
    source.emit("isos", PoolEventKind.UNDEFINED)
    await until(lambda: "isos" not in inventory.hosts["kvm01"].pools, inventory)
    assert [a.kind for a in telemetry.activity()][-1] == "undefined"


async def test_transient_pool_that_stops_vanishes(watched: tuple[FakeSource, Inventory]) -> None:
    source, inventory = watched
    del source.pools["images"]  # a transient pool stops without UNDEFINED
    source.emit("images", PoolEventKind.STOPPED)
    await until(lambda: "images" not in inventory.hosts["kvm01"].pools, inventory)


async def test_a_poll_older_than_an_event_does_not_undo_it(
    watched: tuple[FakeSource, Inventory],
) -> None:
    source, inventory = watched
    source.list_gate = asyncio.Event()
    source.disconnect()
    source.connect()  # the resync's listing starts, sees images active, and is held
    await asyncio.sleep(0.05)
    source.pools["images"] = reading("images", active=False)
    source.emit("images", PoolEventKind.STOPPED)
    await until(lambda: not inventory.pool("kvm01", "images").active, inventory)  # type: ignore[union-attr]
    synced_before = inventory.hosts["kvm01"].last_poll_success
    source.list_gate.set()
    await until(lambda: inventory.hosts["kvm01"].last_poll_success != synced_before, inventory)
    pool = inventory.pool("kvm01", "images")
    assert pool is not None
    assert not pool.active


async def test_refresh_event_sets_last_refresh_and_rescans(
    watched: tuple[FakeSource, Inventory],
) -> None:
    source, inventory = watched
    source.volumes["images"].append(VolumeSnapshot("c.qcow2", 0, 5 * GiB, 5 * GiB, None))
    source.pools["images"] = reading("images", volumes=3)
    source.emit("images", PoolEventKind.REFRESHED)
    await until(lambda: inventory.pool("kvm01", "images").volumes.count == 3, inventory)  # type: ignore[union-attr]
    pool = inventory.pool("kvm01", "images")
    assert pool is not None
    assert pool.last_refresh is not None


async def test_refresh_that_changes_no_volume_count_scans_nothing(
    watched: tuple[FakeSource, Inventory], telemetry: Telemetry
) -> None:
    source, inventory = watched
    scans = source.scans
    events = telemetry.stats("kvm01").pool_events
    source.emit("images", PoolEventKind.REFRESHED)
    await until(lambda: events["images"][PoolEventKind.REFRESHED] >= 1, inventory)
    await asyncio.sleep(0.05)  # the re-read, and a scan had one been asked for
    assert source.scans == scans


async def test_disconnect_keeps_last_pools_and_reconnect_resyncs(
    watched: tuple[FakeSource, Inventory], telemetry: Telemetry
) -> None:
    source, inventory = watched
    source.disconnect()
    await until(lambda: not inventory.hosts["kvm01"].up, inventory)
    assert set(inventory.hosts["kvm01"].pools) == {"images", "isos"}  # stale, but served
    del source.pools["isos"]  # undefined while we could not hear the event
    source.connect()
    await until(lambda: "isos" not in inventory.hosts["kvm01"].pools, inventory)
    stats = telemetry.stats("kvm01")
    assert (stats.connects, stats.disconnects) == (2, 1)
    assert [a.kind for a in telemetry.activity() if a.pool is None] == [
        "connected",
        "disconnected",
        "connected",
    ]


async def test_a_second_disconnect_counts_nothing(
    watched: tuple[FakeSource, Inventory], telemetry: Telemetry
) -> None:
    source, inventory = watched
    source.disconnect()
    source.disconnect()
    await until(lambda: not inventory.hosts["kvm01"].up, inventory)
    await asyncio.sleep(0.01)  # the second one is handled too
    assert telemetry.stats("kvm01").disconnects == 1
    assert [a.kind for a in telemetry.activity()].count("disconnected") == 1


async def test_volume_count_change_seen_by_info_poll_triggers_a_scan(
    watched: tuple[FakeSource, Inventory],
) -> None:
    source, inventory = watched
    source.volumes["images"] = source.volumes["images"][:1]
    source.pools["images"] = dataclasses.replace(source.pools["images"], volume_count=1)
    source.disconnect()
    source.connect()
    await until(lambda: inventory.pool("kvm01", "images").volumes.count == 1, inventory)  # type: ignore[union-attr]


async def test_two_connections_reporting_one_hostname_get_distinct_host_labels() -> None:
    inventory = Inventory()
    telemetry = Telemetry()
    watchers = [
        watcher_of(FakeSource(reading("images")), inventory, telemetry, key=key)
        for key in ("qemu:///system", "qemu+tcp://localhost/system")
    ]
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    try:
        await until(lambda: inventory.ready, inventory)
        names = {key: h.name for key, h in inventory.hosts.items()}
        # Whichever connected first keeps the hostname; the other is named by its URI.
        assert sorted(names.values()) in (
            ["kvm01", "qemu+tcp://localhost/system"],
            ["kvm01", "qemu:///system"],
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_resync_scans_every_pool_once(watched: tuple[FakeSource, Inventory]) -> None:
    source, inventory = watched
    source.pools["isos"] = reading("isos", volumes=0)  # now running too
    before = source.scans
    source.disconnect()
    source.connect()
    await until(lambda: inventory.pool("kvm01", "isos").volumes is not None, inventory)  # type: ignore[union-attr]
    await asyncio.sleep(0.05)  # let the resync's volume poll finish
    assert source.scans - before == 2  # images and isos, once each


async def test_a_rescan_that_finds_nothing_changed_keeps_the_volumes_tuple(
    watched: tuple[FakeSource, Inventory],
) -> None:
    """The exporter reuses what it encoded for a pool while its volumes are the same object."""
    source, inventory = watched

    def volumes() -> tuple[VolumeSnapshot, ...]:
        scan = inventory.pool("kvm01", "images").volumes  # type: ignore[union-attr]
        assert scan is not None
        return scan.volumes

    before, scans = volumes(), source.scans
    source.emit("images", PoolEventKind.STARTED)  # a start always rescans
    await until(lambda: source.scans > scans, inventory)
    await asyncio.sleep(0.05)
    assert volumes() is before
    source.volumes["images"][0] = VolumeSnapshot("a.qcow2", 0, 10 * GiB, 3 * GiB, None)
    source.emit("images", PoolEventKind.STARTED)
    await until(lambda: volumes() is not before, inventory)
    assert volumes()[0].allocation == 3 * GiB


async def test_an_event_reread_between_two_parts_of_a_listing_is_not_undone(
    watched: tuple[FakeSource, Inventory],
) -> None:
    """The listing read "images" running; "images" stopped and its event's re-read ran before
    the listing read "isos": the older reading must not come back."""
    source, inventory = watched

    async def stop_images(name: str) -> None:
        if name == "images":
            source.pools["images"] = reading("images", active=False)
            source.emit("images", PoolEventKind.STOPPED)
            await until(lambda: not inventory.pool("kvm01", "images").active, inventory)  # type: ignore[union-attr]

    source.between_pools = stop_images
    synced_before = inventory.hosts["kvm01"].last_poll_success
    source.disconnect()
    source.connect()
    await until(lambda: inventory.hosts["kvm01"].last_poll_success != synced_before, inventory)
    pool = inventory.pool("kvm01", "images")
    assert pool is not None
    assert not pool.active
    assert pool.volumes is None


def fast_path_watched(
    tmp_path: Path, telemetry: Telemetry, **poll: float
) -> tuple[FakeSource, Inventory, Watcher]:
    """A watcher of one `dir` pool on ``tmp_path`` (a local filesystem: on the fast path, its
    every change seen by inotify), with one volume; every timer far away unless ``poll`` says."""
    (tmp_path / "a.img").write_bytes(b"x" * 4096)
    source = FakeSource(
        dataclasses.replace(reading("images", volumes=1), target_path=str(tmp_path))
    )
    source.volumes["images"] = [VolumeSnapshot("a.img", 0, 4096, 4096, 4096)]
    inventory = Inventory()
    return (
        source,
        inventory,
        watcher_of(source, inventory, telemetry, stat_filesystems=True, **poll),
    )


async def volume_polls(telemetry: Telemetry, count: int) -> None:
    """Until ``count`` volume polls (the resync's included) are over."""

    def done() -> int:
        try:
            durations = telemetry.stats("kvm01").poll_durations.get("volumes")
        except KeyError:  # not started yet
            return 0
        return 0 if durations is None else durations.count

    async with asyncio.timeout(5):
        # Counted in the telemetry after the last inventory change, and it has no event.
        while done() < count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_resync_reads_the_files_of_a_fast_path_pool_once(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    """After a reconnect a fast-path pool's volumes are listed and stat()ed once, not stat()ed
    by the info poll and then listed and stat()ed again by the volume poll."""
    source, inventory, watcher = fast_path_watched(tmp_path, telemetry)
    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path).endswith("a.img"):
            stats.append(str(path))
        return real_stat(path, *args, **kwargs)

    task = asyncio.create_task(watcher.run())
    try:
        await volume_polls(telemetry, 1)
        assert inventory.pool("kvm01", "images").fast_path  # type: ignore[union-attr]
        source.listings.clear()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "stat", counting_stat)
            source.disconnect()
            source.connect()
            await volume_polls(telemetry, 2)
        assert source.listings == ["images"]
        assert len(stats) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_volume_poll_lists_no_pool_whose_every_change_inotify_sees(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    """Its full read is the sweep's; without the sweep the volume poll lists it as before."""
    source, _inventory, watcher = fast_path_watched(
        tmp_path, telemetry, volumes_interval=1.0, sweep_interval=3600.0
    )
    task = asyncio.create_task(watcher.run())
    try:
        await volume_polls(telemetry, 1)  # the resync's: listed
        source.listings.clear()
        await volume_polls(telemetry, 3)
        assert source.listings == []
        watcher.poll = watcher.poll.model_copy(update={"sweep_interval": 0.0})
        await volume_polls(telemetry, 4)
        assert source.listings == ["images"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_each_volume_poll_that_read_the_host_is_told(telemetry: Telemetry) -> None:
    """The daemon freezes what a volume poll read out of the garbage collector's reach
    (heap.py): told after the resync's and each later one, not after one that failed."""
    source = FakeSource(reading("images", volumes=1))
    source.volumes["images"] = [VolumeSnapshot("a.qcow2", 0, 10 * GiB, 1 * GiB, None)]
    told: list[int] = []
    inventory = Inventory()
    watcher = watcher_of(
        source,
        inventory,
        telemetry,
        volumes_interval=0.05,
        volumes_polled=lambda: told.append(polls()),
    )

    def polls() -> int:
        durations = telemetry.stats("kvm01").poll_durations.get("volumes")
        return 0 if durations is None else durations.count

    task = asyncio.create_task(watcher.run())
    try:
        await volume_polls(telemetry, 2)
        assert told[:2] == [1, 2]  # after each poll's end
        source.connected = False  # libvirt gone, no event about it yet: the polls fail
        await volume_polls(telemetry, polls() + 1)  # one in flight may have read it still
        before = len(told)
        await volume_polls(telemetry, polls() + 2)
        assert len(told) == before
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_event_whose_handling_fails_is_logged_and_the_next_ones_are_handled(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events are handled as the loop gets them, with no task between that a failure would end:
    one that raises is logged, and the watch goes on."""
    source = FakeSource(reading("images"))
    inventory = Inventory()
    watcher = watcher_of(source, inventory, telemetry)

    def broken(_event: object) -> None:
        raise RuntimeError("a bug in the guest tracker")

    monkeypatch.setattr(watcher._guests, "on_changed", broken)
    task = asyncio.create_task(watcher.run())
    try:
        with captured_logs() as logs:
            await until(lambda: inventory.ready, inventory)
            source.push(GuestChanged("vm", "uuid-vm", GuestEventKind.DEFINED, ""))
            source.emit("images", PoolEventKind.STOPPED)
            await until(lambda: not inventory.pool("kvm01", "images").active, inventory)  # type: ignore[union-attr]
        [failed] = [e for e in logs if e["event"] == "event_handling_failed"]
        assert "GuestChanged" in failed["source_event"]
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
