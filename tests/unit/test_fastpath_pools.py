"""The info poll's restat of fast-path pools (fastpath/pools.py): only the files inotify saw
change, unless inotify cannot be trusted there (lost events, a network filesystem); the volume
poll of a pool whose every change inotify sees does no more than that."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import mmap
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
import structlog

from poolwatch.fastpath.pools import LocalPools
from poolwatch.filesystem import stat_target
from poolwatch.model import PoolSnapshot, PoolState, VolumeScan, VolumeSnapshot
from poolwatch.source import PoolReading, SourceError, VolumeDescription
from tests.helpers import eventually
from tests.unit.test_fastpath_inotify import overflow

MiB = 1 << 20


class FakeLibvirt:
    """Describes the files of one pool directory as libvirt 9.0 would."""

    read_only = False

    def __init__(self, target: Path) -> None:
        self.target = target
        self.described: list[str] = []
        self.refreshed: list[str] = []
        self.listings = 0
        self.refresh_fails = False

    async def list_volume_names(self, name: str) -> list[str]:
        self.listings += 1
        return sorted(p.name for p in self.target.glob("*.img"))

    async def describe_volumes(
        self, name: str, volumes: Sequence[str] | None = None
    ) -> list[VolumeDescription]:
        out = []
        for volume in volumes if volumes is not None else await self.list_volume_names(name):
            self.described.append(volume)
            st = os.stat(self.target / volume)
            snapshot = VolumeSnapshot(volume, 0, st.st_size, st.st_blocks * 512, st.st_size)
            out.append(VolumeDescription(snapshot, str(self.target / volume), "raw"))
        return out

    async def refresh_pool(self, name: str, *, urgent: bool = False) -> None:
        self.refreshed.append(name)
        if self.refresh_fails:
            raise SourceError("refresh failed", code=1)

    async def read_pool(
        self, name: str, *, flags: tuple[bool, bool] | None = None, uuid: str | None = None
    ) -> PoolReading:
        return running_pool(self.target)


def running_pool(target: Path) -> PoolReading:
    """The pool "p", running on ``target`` (libvirt's figures of it play no part here)."""
    return PoolReading(
        name="p",
        uuid="u",
        type="dir",
        target_path=str(target),
        source="",
        state=PoolState.RUNNING,
        active=True,
        persistent=True,
        autostart=False,
        capacity=0,
        allocation=0,
        available=0,
        volume_count=2,
    )


class Pool:
    """One running `dir` pool on ``target`` with two sparse volumes, as the watcher drives it;
    b.img is mapped (shared) from before its directory is watched."""

    def __init__(self, target: Path, local: LocalPools) -> None:
        self.target = target
        self.local = local
        for name in ("a.img", "b.img"):
            with (target / name).open("wb") as f:
                f.truncate(4 * MiB)
        with (target / "b.img").open("r+b") as f:
            self.mapping = mmap.mmap(f.fileno(), 0)
        reading = running_pool(target)
        target_fs = (stat_target("dir", str(target)), True)
        self.snapshot: PoolSnapshot = local.snapshot("h", reading, target_fs, None, None, 0.0)

    async def poll(self, *, listed: bool) -> VolumeScan:
        """An info poll's restat (``listed=False``) or a listing scan."""
        scan = await self.local.scan(self.snapshot, limit=10, listed=listed)
        assert scan is not None
        self.snapshot = dataclasses.replace(self.snapshot, volumes=scan)
        return scan

    async def volume_poll(self) -> VolumeScan:
        """The volume poll, as the watcher makes it (with the sweep on)."""
        return await self.poll(listed=not self.local.covered(self.snapshot))

    async def sweep(self) -> None:
        swept = await self.local.sweep(self.snapshot, limit=10, log=structlog.get_logger())
        self.snapshot = dataclasses.replace(self.snapshot, volumes=swept.scan)

    def write_unseen(self) -> None:
        """A write into b.img that inotify does not see: through the shared mapping."""
        self.mapping[MiB : 2 * MiB] = os.urandom(MiB)
        self.mapping.flush()

    def allocation(self, volume: str) -> int:
        assert self.snapshot.volumes is not None
        return next(v.allocation for v in self.snapshot.volumes.volumes if v.name == volume)


def write(path: Path) -> None:
    with path.open("r+b") as f:
        f.write(os.urandom(MiB))


@pytest.fixture
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield pool


@pytest.fixture
async def fake(tmp_path: Path) -> FakeLibvirt:
    return FakeLibvirt(tmp_path)


async def local_pools(
    fake: FakeLibvirt, executor: concurrent.futures.Executor, mountinfo: str | None = None
) -> AsyncIterator[LocalPools]:
    extra = {} if mountinfo is None else {"mountinfo": mountinfo}
    local = LocalPools(
        fake,  # type: ignore[arg-type]
        executor,
        enabled=True,
        timeout=lambda: 5.0,
        rescan=lambda _pool: None,
        **extra,
    )
    try:
        yield local
    finally:
        await local.close()


@pytest.fixture
async def pool(
    tmp_path: Path, fake: FakeLibvirt, executor: concurrent.futures.Executor
) -> AsyncIterator[Pool]:
    async for local in local_pools(fake, executor):
        pool = Pool(tmp_path, local)
        yield pool
        pool.mapping.close()


async def test_an_info_poll_reads_only_the_files_that_changed(
    pool: Pool, fake: FakeLibvirt
) -> None:
    await pool.poll(listed=True)
    settled = await pool.poll(listed=False)  # the first restat reads everything
    assert await pool.poll(listed=False) is settled  # nothing changed: the same scan, unread
    before = {v: pool.allocation(v) for v in ("a.img", "b.img")}
    write(pool.target / "a.img")
    pool.write_unseen()
    await pool.poll(listed=False)
    assert pool.allocation("a.img") > before["a.img"]
    assert pool.allocation("b.img") == before["b.img"]  # not read again: inotify saw nothing
    await pool.poll(listed=True)  # the volume poll reads every file
    assert pool.allocation("b.img") > before["b.img"]
    assert fake.described == ["a.img", "b.img"]  # libvirt asked about each volume once only
    assert fake.refreshed == []  # a changed file is no reason to refresh the pool


async def test_lost_events_make_the_next_info_poll_read_every_file(pool: Pool) -> None:
    await pool.poll(listed=True)
    await pool.poll(listed=False)
    before = pool.allocation("b.img")
    pool.write_unseen()
    overflow(pool.target)
    await pool.poll(listed=False)
    assert pool.allocation("b.img") > before


async def test_an_overflow_refreshes_the_pools_but_not_again_and_again(
    pool: Pool, fake: FakeLibvirt
) -> None:
    await pool.poll(listed=True)
    overflow(pool.target)  # files may have come or gone unseen: libvirt must look

    async def refreshed() -> bool:
        return fake.refreshed == ["p"]

    await eventually(refreshed, within=5)
    overflow(pool.target)  # guests writing hard in many pools overflow the queue again
    await pool.poll(listed=False)  # reads the queue: every file read again, but no refresh yet
    await asyncio.sleep(0.5)
    assert fake.refreshed == ["p"]


async def test_a_pool_on_a_network_filesystem_reads_every_file_each_info_poll(
    tmp_path: Path, fake: FakeLibvirt, executor: concurrent.futures.Executor
) -> None:
    target = tmp_path / "pool"
    target.mkdir()
    fake.target = target
    device = os.stat(target).st_dev
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"40 1 {os.major(device)}:{os.minor(device)} / {target} rw - nfs4 nas:/images rw\n"
    )
    async for local in local_pools(fake, executor, str(mountinfo)):
        pool = Pool(target, local)
        await pool.poll(listed=True)
        settled = await pool.poll(listed=False)
        assert await pool.poll(listed=False) is settled  # every file read, no figure moved
        before = pool.allocation("b.img")
        pool.write_unseen()  # as another host writing: nothing this kernel sees
        await pool.poll(listed=False)
        pool.mapping.close()
        assert pool.allocation("b.img") > before


async def test_the_volume_poll_of_a_covered_pool_lists_nothing_and_reads_what_changed(
    pool: Pool, fake: FakeLibvirt
) -> None:
    await pool.volume_poll()  # the first: nothing known yet, everything listed and read
    assert fake.listings == 1
    before = {v: pool.allocation(v) for v in ("a.img", "b.img")}
    write(pool.target / "a.img")
    pool.write_unseen()
    await pool.volume_poll()
    await pool.volume_poll()
    assert fake.listings == 1  # libvirt was not asked for the volume names again
    assert pool.allocation("a.img") > before["a.img"]
    assert pool.allocation("b.img") == before["b.img"]  # unseen, and no full read meanwhile
    await pool.sweep()  # the safety net reads every file
    assert pool.allocation("b.img") > before["b.img"]


async def test_lost_events_make_the_next_volume_poll_list_and_read_everything(
    pool: Pool, fake: FakeLibvirt
) -> None:
    await pool.volume_poll()
    before = pool.allocation("b.img")
    pool.write_unseen()
    overflow(pool.target)
    await pool.poll(listed=False)  # the info poll reads every file, but lists nothing
    await pool.volume_poll()
    assert fake.listings == 2  # files may have come or gone unseen: listed again
    assert pool.allocation("b.img") > before
    await pool.volume_poll()
    assert fake.listings == 2  # and then covered again


async def test_a_volume_whose_file_is_elsewhere_is_read_every_info_poll(
    tmp_path: Path, fake: FakeLibvirt, executor: concurrent.futures.Executor
) -> None:
    target, elsewhere = tmp_path / "pool", tmp_path / "elsewhere"
    target.mkdir()
    elsewhere.mkdir()
    fake.target = target
    (elsewhere / "c.img").write_bytes(b"")
    os.truncate(elsewhere / "c.img", 4 * MiB)
    (target / "c.img").symlink_to(elsewhere / "c.img")  # inotify on target misses its writes
    (elsewhere / "d.img").write_bytes(b"")
    os.truncate(elsewhere / "d.img", 4 * MiB)
    os.link(elsewhere / "d.img", target / "d.img")  # so for a second hard link
    async for local in local_pools(fake, executor):
        pool = Pool(target, local)
        pool.mapping.close()
        await pool.volume_poll()
        await pool.poll(listed=False)
        before = {v: pool.allocation(v) for v in ("c.img", "d.img")}
        write(elsewhere / "c.img")
        write(elsewhere / "d.img")
        await pool.poll(listed=False)
        assert pool.allocation("c.img") > before["c.img"]
        assert pool.allocation("d.img") > before["d.img"]


async def test_a_new_file_whose_refresh_failed_makes_the_next_volume_poll_list(
    pool: Pool, fake: FakeLibvirt
) -> None:
    await pool.volume_poll()
    fake.refresh_fails = True
    (pool.target / "c.img").write_bytes(b"x" * 4096)  # no refresh, so no scan, follows

    async def refresh_tried() -> bool:
        return fake.refreshed == ["p"]

    await eventually(refresh_tried, within=5)
    scan = await pool.volume_poll()
    assert fake.listings == 2
    assert scan.count == 3
