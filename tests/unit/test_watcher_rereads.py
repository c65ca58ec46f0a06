"""What an event's re-read asks libvirt, and what a scrape waits for meanwhile
(Watcher.news_in_flight, web/settle.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from poolwatch.inventory import Inventory
from poolwatch.model import PoolEventKind, PoolState, VolumeSnapshot
from poolwatch.telemetry import Telemetry
from poolwatch.watcher import Watcher
from tests.unit.test_watcher import FakeSource, fast_path_watched, reading, until, watcher_of


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


@asynccontextmanager
async def watching(
    source: FakeSource, telemetry: Telemetry
) -> AsyncIterator[tuple[Watcher, Inventory]]:
    """The watcher of ``source``, running, once its first poll is done."""
    inventory = Inventory()
    watcher = watcher_of(source, inventory, telemetry)
    async with watching_task(watcher, inventory):
        yield watcher, inventory


@asynccontextmanager
async def watching_task(watcher: Watcher, inventory: Inventory) -> AsyncIterator[None]:
    """``watcher`` running, once its first poll is done."""
    task = asyncio.create_task(watcher.run())
    try:
        await until(lambda: inventory.ready, inventory)
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_definition_or_a_policys_flag_change_reads_the_flags_again(
    telemetry: Telemetry,
) -> None:
    """A start, a stop or a refresh cannot change whether a pool is persistent or autostarts,
    so their re-reads do not ask (test_watcher.py); a definition, and the re-read a policy
    asks for after setting the flag, do."""
    source = FakeSource(reading("images"))
    async with watching(source, telemetry) as (watcher, inventory):
        source.pools["images"] = dataclasses.replace(reading("images"), autostart=True)
        watcher.reread("images")  # what the autostart policy does after setting the flag
        await until(lambda: inventory.pool("kvm01", "images").autostart, inventory)  # type: ignore[union-attr]
        source.pools["images"] = dataclasses.replace(reading("images"), persistent=False)
        source.emit("images", PoolEventKind.DEFINED)
        await until(lambda: not inventory.pool("kvm01", "images").persistent, inventory)  # type: ignore[union-attr]
        assert source.flags_read[-2:] == [True, True]


async def test_a_started_pool_is_news_in_flight_until_read_again_a_stopped_one_is_not(
    telemetry: Telemetry,
) -> None:
    """What a scrape waits for before it renders: a started pool shows once it is read again
    (filesystems are not measured here, so it is not on the fast path, whose start shows from a
    statvfs: below); a stopped one shows from its event, so its re-read is not waited for."""
    source = FakeSource(reading("images", active=False))
    async with watching(source, telemetry) as (watcher, inventory):
        assert watcher.news_in_flight() == []
        source.read_gate = asyncio.Event()  # the re-read waits behind other calls
        source.pools["images"] = reading("images")
        source.emit("images", PoolEventKind.STARTED)
        await asyncio.sleep(0.05)
        [started] = watcher.news_in_flight()
        assert not started.done()
        source.read_gate.set()
        await asyncio.wait_for(started, 2)
        assert inventory.pool("kvm01", "images").active  # type: ignore[union-attr]
        assert watcher.news_in_flight() == []

        source.read_gate = asyncio.Event()
        source.pools["images"] = reading("images", active=False)
        source.emit("images", PoolEventKind.STOPPED)
        await until(lambda: not inventory.pool("kvm01", "images").active, inventory)  # type: ignore[union-attr]
        assert watcher.news_in_flight() == []
        source.read_gate.set()


async def test_a_re_read_in_flight_that_finds_the_started_pool_running_ends_the_wait(
    telemetry: Telemetry,
) -> None:
    """A pool stopped and started at once: the stop's re-read, still in flight when the start
    comes, finds it running. A scrape waits for no more, though the start's own re-read
    follows."""
    source = FakeSource(reading("images"))
    async with watching(source, telemetry) as (watcher, inventory):
        first = source.read_gate = asyncio.Event()
        source.emit("images", PoolEventKind.STOPPED)
        await until(lambda: not inventory.pool("kvm01", "images").active, inventory)  # type: ignore[union-attr]
        source.emit("images", PoolEventKind.STARTED)
        await asyncio.sleep(0.01)
        [started] = watcher.news_in_flight()
        source.read_gate = asyncio.Event()  # holds the start's own re-read
        first.set()  # the stop's re-read returns: the pool runs
        await asyncio.wait_for(started, 2)
        assert inventory.pool("kvm01", "images").active  # type: ignore[union-attr]
        source.read_gate.set()


async def test_a_start_that_a_reading_shows_before_its_event_is_not_waited_for(
    telemetry: Telemetry,
) -> None:
    """The same, but the stop's re-read returns before the start event is handled: libvirt
    already answered that the pool runs, the page shows it, and a scrape does not wait for the
    start's own re-read (traced at 5 pools x 6,000 volumes: 3 of 200 starts waited 7-9 ms
    for it)."""
    source = FakeSource(reading("images"))
    async with watching(source, telemetry) as (watcher, inventory):
        stop_read = source.read_gate = asyncio.Event()
        source.emit("images", PoolEventKind.STOPPED)
        await until(lambda: not inventory.pool("kvm01", "images").active, inventory)  # type: ignore[union-attr]
        stop_read.set()  # the pool started meanwhile: its re-read finds it running
        await until(lambda: inventory.pool("kvm01", "images").active, inventory)  # type: ignore[union-attr]
        source.read_gate = asyncio.Event()  # holds the start's own re-read
        source.emit("images", PoolEventKind.STARTED)
        await asyncio.sleep(0.01)
        assert [f for f in watcher.news_in_flight() if not f.done()] == []
        assert inventory.pool("kvm01", "images").active  # type: ignore[union-attr]
        source.read_gate.set()


async def test_a_stop_ends_the_wait_for_the_start_before_it(telemetry: Telemetry) -> None:
    """A pool started and stopped again before the start's re-read returns: the stop shows
    from its event, so a scrape has nothing left to wait for, not even the re-reads."""
    source = FakeSource(reading("images", active=False))
    async with watching(source, telemetry) as (watcher, inventory):
        source.read_gate = asyncio.Event()
        source.emit("images", PoolEventKind.STARTED)
        await asyncio.sleep(0.01)
        [started] = watcher.news_in_flight()
        source.emit("images", PoolEventKind.STOPPED)
        await asyncio.wait_for(started, 2)
        assert watcher.news_in_flight() == []
        assert not inventory.pool("kvm01", "images").active  # type: ignore[union-attr]
        source.read_gate.set()


@asynccontextmanager
async def states_shown(inventory: Inventory, pool: str) -> AsyncIterator[list[bool]]:
    """Whether ``pool`` ran, in every generation of the inventory while the block runs."""
    shown: list[bool] = []

    async def follow() -> None:
        generation = inventory.generation
        while True:
            generation = await inventory.wait_changed(generation)
            snapshot = inventory.pool("kvm01", pool)
            shown.append(snapshot is not None and snapshot.active)

    task = asyncio.create_task(follow())
    try:
        yield shown
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_start_read_again_after_a_later_stop_is_not_shown(telemetry: Telemetry) -> None:
    """A pool started, then stopped while the start's re-read waited behind other calls: that
    re-read's answer (running) is older than the stop, so the pool does not show running again
    until the stop's own re-read; it stays stopped throughout (it showed running for a re-read's
    time, 5-8 ms in the benchmark's cycles)."""
    source = FakeSource(reading("images", active=False))
    async with watching(source, telemetry) as (_watcher, inventory):
        start_read = source.read_gate = asyncio.Event()
        source.pools["images"] = reading("images")  # what libvirt answers the start's re-read
        source.emit("images", PoolEventKind.STARTED)
        await asyncio.sleep(0.01)
        reads = len(source.flags_read)
        async with states_shown(inventory, "images") as shown:
            source.emit("images", PoolEventKind.STOPPED)
            await asyncio.sleep(0.01)
            stop_read = source.read_gate = asyncio.Event()
            start_read.set()
            await until(lambda: len(source.flags_read) > reads, inventory)
            await asyncio.sleep(0.01)
            source.pools["images"] = reading("images", active=False)
            stop_read.set()
            await until(lambda: len(source.flags_read) > reads + 1, inventory)
            await asyncio.sleep(0.01)
        assert shown  # both re-reads' answers went into the inventory
        assert True not in shown
        assert not inventory.pool("kvm01", "images").active  # type: ignore[union-attr]


async def test_a_stop_read_again_after_a_later_start_does_not_hide_the_start(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    """The converse on the fast path: a stop's re-read still in flight when the pool starts
    again and shows running from a statvfs; that re-read's answer (stopped) is older than the
    start, so the pool keeps showing running."""
    source, inventory, watcher = fast_path_watched(tmp_path, telemetry)
    running = source.pools["images"]
    stopped = dataclasses.replace(running, state=PoolState.INACTIVE, active=False)
    async with watching_task(watcher, inventory):
        stop_read = source.read_gate = asyncio.Event()
        source.pools["images"] = stopped  # what libvirt answers the stop's re-read
        source.emit("images", PoolEventKind.STOPPED)
        await until(lambda: not inventory.pool("kvm01", "images").active, inventory)  # type: ignore[union-attr]
        reads = len(source.flags_read)
        source.emit("images", PoolEventKind.STARTED)
        await until(lambda: inventory.pool("kvm01", "images").active, inventory)  # type: ignore[union-attr]
        async with states_shown(inventory, "images") as shown:
            start_read = source.read_gate = asyncio.Event()
            stop_read.set()
            await until(lambda: len(source.flags_read) > reads, inventory)
            await asyncio.sleep(0.01)
            source.pools["images"] = running
            start_read.set()
            await until(lambda: len(source.flags_read) > reads + 1, inventory)
            await asyncio.sleep(0.01)
        assert shown
        assert False not in shown
        assert inventory.pool("kvm01", "images").active  # type: ignore[union-attr]


async def test_a_fast_path_pool_shows_started_from_its_event_and_a_statvfs(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    """A pool whose target poolwatch can see shows running once the start event and a statvfs
    of the target are in, before its re-read returns (calls that may wait behind others): its
    figures are the statvfs's, as after the re-read, and a scrape has nothing to wait for. Then
    the re-read has the last word, and watches the directory again (the early show leaves that
    to it): a file made by hand shows up."""
    source, inventory, watcher = fast_path_watched(tmp_path, telemetry)
    running = source.pools["images"]
    async with watching_task(watcher, inventory):
        reads = len(source.flags_read)
        source.pools["images"] = dataclasses.replace(
            running, state=PoolState.INACTIVE, active=False, volume_count=None
        )
        source.emit("images", PoolEventKind.STOPPED)
        await until(lambda: len(source.flags_read) > reads, inventory)  # its re-read returned
        source.read_gate = asyncio.Event()
        source.pools["images"] = running
        reads = len(source.flags_read)
        watcher._measured.clear()  # a statvfs of its own, not a quick restart's last one
        source.emit("images", PoolEventKind.STARTED)
        await until(lambda: inventory.pool("kvm01", "images").active, inventory)  # type: ignore[union-attr]
        pool = inventory.pool("kvm01", "images")
        assert pool is not None
        assert len(source.flags_read) == reads  # the re-read has not returned
        st = os.statvfs(tmp_path)
        assert (pool.state, pool.fast_path) == (PoolState.RUNNING, True)
        assert pool.capacity == st.f_blocks * st.f_frsize  # not the 100 GiB libvirt would say
        assert watcher.news_in_flight() == []
        source.read_gate.set()
        await until(lambda: len(source.flags_read) > reads, inventory)
        await until(lambda: inventory.pool("kvm01", "images").volumes is not None, inventory)  # type: ignore[union-attr]
        assert inventory.pool("kvm01", "images").active  # type: ignore[union-attr]
        (tmp_path / "b.img").write_bytes(b"y" * 8192)
        source.volumes["images"].append(VolumeSnapshot("b.img", 0, 8192, 8192, 8192))
        await until(lambda: volume_names(inventory) == ["a.img", "b.img"], inventory)


def volume_names(inventory: Inventory) -> list[str]:
    pool = inventory.pool("kvm01", "images")
    scan = None if pool is None else pool.volumes
    return [] if scan is None else sorted(v.name for v in scan.volumes)


async def test_a_start_shows_from_its_statvfs_while_the_fast_paths_file_passes_run(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    """The stat() of every file of a pool (thousands) must not hold up the statvfs a start
    shows from: measured at 5 pools x 6,000 volumes, 14 of 100 starts waited for their re-read
    instead, their statvfs queued behind the file passes of earlier transitions."""
    source, inventory, watcher = fast_path_watched(tmp_path, telemetry)
    running = source.pools["images"]
    release = threading.Event()
    async with watching_task(watcher, inventory):
        reads = len(source.flags_read)
        source.pools["images"] = dataclasses.replace(
            running, state=PoolState.INACTIVE, active=False, volume_count=None
        )
        source.emit("images", PoolEventKind.STOPPED)
        await until(lambda: len(source.flags_read) > reads, inventory)
        passes = [watcher._file_stats.submit(release.wait, 5) for _ in range(2)]  # both workers
        try:
            source.read_gate = asyncio.Event()
            source.pools["images"] = running
            watcher._measured.clear()  # a statvfs of its own, not a quick restart's last one
            source.emit("images", PoolEventKind.STARTED)
            await until(lambda: inventory.pool("kvm01", "images").active, inventory)  # type: ignore[union-attr]
            assert inventory.pool("kvm01", "images").fast_path  # type: ignore[union-attr]
        finally:
            release.set()
            source.read_gate.set()  # type: ignore[union-attr]
        assert all(future.result(5) for future in passes)


async def test_a_dir_pool_restarted_within_an_info_poll_shows_from_its_last_statvfs(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    """A dir pool's filesystem does not change with a stop and a start: restarted within an
    info poll of its last statvfs, it shows running at its event, from that statvfs (as fresh
    as any info poll's figures), with no statvfs of its own to wait for (its worker waits for
    a CPU on a busy host). Restarted later, it waits for a statvfs as before."""
    source, inventory, watcher = fast_path_watched(tmp_path, telemetry)
    running = source.pools["images"]
    stopped = dataclasses.replace(running, state=PoolState.INACTIVE, active=False)

    def active() -> bool:
        return inventory.pool("kvm01", "images").active  # type: ignore[union-attr]

    async def stop() -> None:
        reads = len(source.flags_read)
        source.pools["images"] = stopped
        source.emit("images", PoolEventKind.STOPPED)
        await until(lambda: len(source.flags_read) > reads, inventory)  # its re-read returned

    async with watching_task(watcher, inventory):
        await stop()
        release = threading.Event()
        blocked = [watcher._statfs.submit(release.wait, 5) for _ in range(2)]  # both workers
        try:
            source.read_gate = asyncio.Event()  # nor does the re-read return
            source.pools["images"] = running
            measured = watcher._measured["images"]
            source.emit("images", PoolEventKind.STARTED)
            await until(active, inventory)
            assert watcher._measured["images"] == measured  # its reuse does not date it anew
            pool = inventory.pool("kvm01", "images")
            assert pool is not None
            st = os.statvfs(tmp_path)
            assert (pool.state, pool.fast_path) == (PoolState.RUNNING, True)
            assert pool.capacity == st.f_blocks * st.f_frsize
            assert watcher.news_in_flight() == []
        finally:
            release.set()
            source.read_gate.set()  # type: ignore[union-attr]
        assert all(future.result(5) for future in blocked)
        async with asyncio.timeout(2):
            while watcher._reading:  # the start's re-read is over  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        await stop()
        path, inspected, at = watcher._measured["images"]
        watcher._measured["images"] = (path, inspected, at - watcher.poll.interval - 1)
        release = threading.Event()
        blocked = [watcher._statfs.submit(release.wait, 5) for _ in range(2)]
        try:
            source.read_gate = asyncio.Event()
            source.pools["images"] = running
            source.emit("images", PoolEventKind.STARTED)
            await asyncio.sleep(0.05)
            assert not active()  # its last statvfs is older than an info poll
            assert watcher.news_in_flight() != []
            release.set()
            await until(active, inventory)  # from a statvfs of its own
        finally:
            release.set()
            source.read_gate.set()  # type: ignore[union-attr]
