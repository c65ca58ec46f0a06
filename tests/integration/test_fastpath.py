"""The local fast path against a private libvirtd: pool and volume figures read from the files
themselves, files made by hand noticed within a second, and libvirt's own figures matched.

poolwatch runs in this process, in the host's mount namespace; libvirtd in its own. A `dir`
pool's directory is the same in both. An `fs` pool is mounted by libvirtd in its namespace only,
so `visible_fs_pool` mounts the same device on the same target here too (as on a real host,
where poolwatch and libvirtd share one namespace); unmounting it here is "the mount vanished".
"""

from __future__ import annotations

import asyncio
import mmap
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.commands import MiB
from tests.harness.libvirtd import Libvirtd
from tests.helpers import base_url, config_for, eventually, running, sample, scrape, unavailable
from tests.integration.daemon_helpers import Pool, value, virsh, wait_running

# Every timer far away except the info poll: what moves, moves by the fast path (or inotify).
FAR = 3600.0
POLL = {
    "interval": 0.5,
    "volumes_interval": FAR,
    "refresh_interval": FAR,
    "sweep_interval": FAR,
    "call_timeout": 2.0,
}
# Nothing but inotify and the event it sets off may notice a file made by hand.
QUIET = {**POLL, "interval": FAR, "volumes_interval": FAR}

FIGURES = re.compile(
    r"<capacity unit='bytes'>(\d+)</capacity>\s*<allocation unit='bytes'>(\d+)</allocation>"
    r"\s*(?:<physical unit='bytes'>(\d+)</physical>)?"
)


@pytest.fixture
def visible_fs_pool(fs_pool: Pool) -> Iterator[Pool]:
    """The `fs` pool, its filesystem also mounted here; unmounted again on the way out."""
    subprocess.run(["mount", "-n", fs_pool.source, str(fs_pool.target)], check=True)
    try:
        yield fs_pool
    finally:
        subprocess.run(["umount", "-n", "-l", str(fs_pool.target)], check=False)


def libvirt_figures(libvirtd: Libvirtd, pool: str, volume: str) -> tuple[int, int, int | None]:
    """(capacity, allocation, physical) of `virsh vol-dumpxml`: libvirt's XMLDesc()."""
    found = FIGURES.search(libvirtd.virsh("vol-dumpxml", "--pool", pool, volume))
    assert found is not None
    physical = None if found[3] is None else int(found[3])
    return int(found[1]), int(found[2]), physical


def exported_figures(text: str, pool: str, volume: str) -> tuple[float | None, ...]:
    labels = {"storage_pool": pool, "volume": volume}
    return tuple(
        sample(text, f"libvirt_storage_volume_{name}_bytes", **labels)
        for name in ("capacity", "allocation", "physical")
    )


def libvirt_space(path: Path) -> tuple[int, int, int]:
    """(capacity, allocation, available) as libvirt's refresh computes them from statvfs."""
    st = os.statvfs(path)
    capacity = st.f_frsize * st.f_blocks
    available = st.f_frsize * st.f_bfree
    return capacity, capacity - available, available


def write(path: Path, size: int) -> None:
    with path.open("r+b") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())


async def sh(*argv: str) -> None:
    await asyncio.to_thread(subprocess.run, argv, check=True)


def volume_names(libvirtd: Libvirtd, pool: str) -> set[str]:
    lines = libvirtd.virsh("vol-list", pool).splitlines()[2:]
    return {line.split()[0] for line in lines if line.strip()}


async def test_a_file_written_outside_libvirt_moves_pool_and_volume_allocation(
    libvirtd: Libvirtd, visible_fs_pool: Pool
) -> None:
    pool = visible_fs_pool
    await virsh(
        libvirtd,
        "vol-create-as",
        pool.name,
        "disk.img",
        "16M",
        "--allocation",
        "0",
        "--format",
        "raw",
    )
    image = pool.target / "disk.img"
    async with running(config_for(libvirtd.uri, **POLL)) as daemon:
        url = base_url(daemon)
        labels = {"storage_pool": pool.name}
        await wait_running(url, pool)
        before = await asyncio.to_thread(libvirtd.virsh, "pool-info", pool.name, "--bytes")

        await asyncio.to_thread(write, image, 8 * MiB)  # a guest writing, libvirt unaware
        expected_volume = image.stat().st_blocks * 512
        expected_pool = libvirt_space(pool.target)[1]

        async def moved() -> bool:
            text = await scrape(url)
            volume = sample(text, "libvirt_storage_volume_allocation_bytes", volume="disk.img")
            allocation = sample(text, "libvirt_storage_pool_allocation_bytes", **labels)
            return volume == expected_volume and allocation == expected_pool

        await eventually(moved, within=10)
        # libvirt itself has not looked: its figures are those of before the write.
        after = await asyncio.to_thread(libvirtd.virsh, "pool-info", pool.name, "--bytes")
        assert after == before


async def test_an_info_poll_rereads_only_the_volumes_whose_files_changed(
    libvirtd: Libvirtd, dir_pool: Pool
) -> None:
    for name in ("written.img", "mapped.img"):
        await virsh(libvirtd, "vol-create-as", dir_pool.name, name, "8M", "--allocation", "0")
    mapped = dir_pool.target / "mapped.img"
    with mapped.open("r+b") as f:  # shared mapping made before poolwatch watches
        mapping = mmap.mmap(f.fileno(), 0)
    # The sweep off at first; a reload turns it on (the sweep timer looks for that every 5 s).
    config = config_for(libvirtd.uri, **{**POLL, "sweep_interval": 0.0})
    swept = config_for(libvirtd.uri, **{**POLL, "sweep_interval": 1.0})
    async with running(config, reload_config=lambda: swept) as daemon:
        url = base_url(daemon)
        await wait_running(url, dir_pool)

        def allocation(text: str, volume: str) -> float | None:
            return sample(text, "libvirt_storage_volume_allocation_bytes", volume=volume)

        async def written_shows(expected: int) -> bool:
            return allocation(await scrape(url), "written.img") == expected

        async def write_and_wait(size: int) -> None:
            written = dir_pool.target / "written.img"
            await asyncio.to_thread(write, written, size)
            await eventually(lambda: written_shows(written.stat().st_blocks * 512), within=10)

        # Twice: the second write can only show through an info poll, so the first info poll
        # after poolwatch started watching (which reads every file) is behind us.
        await write_and_wait(1 * MiB)
        await write_and_wait(2 * MiB)
        # A write inotify cannot see (a shared mapping), then one it does see.
        mapping[: 4 * MiB] = os.urandom(4 * MiB)
        mapping.flush()
        await write_and_wait(3 * MiB)
        # The info polls re-read the written volume only: the mapped one keeps its old figure,
        # over several of them, until the sweep (the full read of a pool whose every other
        # change inotify sees) reads it.
        for _ in range(4):
            await asyncio.sleep(POLL["interval"])
            assert allocation(await scrape(url), "mapped.img") == 0
        daemon.reload()
        real = mapped.stat().st_blocks * 512
        assert real >= 4 * MiB

        async def mapped_shows() -> bool:
            return allocation(await scrape(url), "mapped.img") == real

        await eventually(mapped_shows, within=15)
    mapping.close()


async def test_a_volume_file_made_by_hand_comes_and_goes_within_two_seconds(
    libvirtd: Libvirtd, dir_pool: Pool
) -> None:
    async with running(config_for(libvirtd.uri, **QUIET)) as daemon:
        url = base_url(daemon)
        await wait_running(url, dir_pool)
        image = dir_pool.target / "by-hand.img"

        async def listed(present: bool) -> bool:
            text = await scrape(url)
            found = sample(text, "libvirt_storage_volume_capacity_bytes", volume="by-hand.img")
            return (found is not None) is present

        image.write_bytes(b"x" * 4096)
        await eventually(lambda: listed(True), within=2)
        assert "by-hand.img" in await asyncio.to_thread(volume_names, libvirtd, dir_pool.name)

        image.unlink()
        await eventually(lambda: listed(False), within=2)
        assert "by-hand.img" not in await asyncio.to_thread(volume_names, libvirtd, dir_pool.name)


@pytest.mark.parametrize("kind", ["dir", "fs"])
async def test_fast_path_figures_equal_libvirts_after_a_refresh(
    libvirtd: Libvirtd, request: pytest.FixtureRequest, kind: str
) -> None:
    if shutil.which("qemu-img") is None:
        unavailable("qemu-img (qemu-utils) is needed for a qcow2 volume")
    pool: Pool = request.getfixturevalue("dir_pool" if kind == "dir" else "visible_fs_pool")
    await virsh(libvirtd, "vol-create-as", pool.name, "raw.img", "4M", "--format", "raw")
    await virsh(libvirtd, "vol-create-as", pool.name, "lib.qcow2", "1G", "--format", "qcow2")
    sparse = pool.target / "sparse.img"
    with sparse.open("wb") as f:
        f.truncate(32 * MiB)
    await sh("qemu-img", "create", "-q", "-f", "qcow2", str(pool.target / "hand.qcow2"), "2G")
    await virsh(libvirtd, "pool-refresh", pool.name)
    names = ("raw.img", "lib.qcow2", "sparse.img", "hand.qcow2")
    async with running(config_for(libvirtd.uri, **POLL)) as daemon:
        url = base_url(daemon)
        await wait_running(url, pool)
        # Writes after the first scan: from here on the figures are the fast path's own.
        await asyncio.to_thread(write, pool.target / "raw.img", 1 * MiB)
        await asyncio.to_thread(write, sparse, 2 * MiB)
        await sh("qemu-img", "resize", "-q", str(pool.target / "hand.qcow2"), "3G")
        expected = {
            name: tuple(float(v) if v is not None else None for v in f)
            for name in names
            for f in [await asyncio.to_thread(libvirt_figures, libvirtd, pool.name, name)]
        }

        async def agree() -> bool:
            text = await scrape(url)
            return all(exported_figures(text, pool.name, n) == expected[n] for n in names)

        await eventually(agree, within=10)
        if kind == "fs":  # a filesystem of its own: nobody else moves its figures
            await virsh(libvirtd, "pool-refresh", pool.name)
            info = await asyncio.to_thread(libvirtd.virsh, "pool-info", pool.name, "--bytes")
            text = await scrape(url)
            for field in ("Capacity", "Allocation", "Available"):
                libvirt = int(re.search(rf"{field}:\s+(\d+)", info)[1])  # type: ignore[index]
                metric = f"libvirt_storage_pool_{field.lower()}_bytes"
                assert value(text, metric, storage_pool=pool.name) == libvirt


async def test_a_pool_whose_mount_vanished_falls_back_to_libvirt(
    libvirtd: Libvirtd, visible_fs_pool: Pool
) -> None:
    pool = visible_fs_pool
    labels = {"storage_pool": pool.name}
    async with running(config_for(libvirtd.uri, **POLL)) as daemon:
        url = base_url(daemon)
        await wait_running(url, pool)
        info = await asyncio.to_thread(libvirtd.virsh, "pool-info", pool.name, "--bytes")
        libvirt = {
            f: float(re.search(rf"{f}:\s+(\d+)", info)[1])  # type: ignore[index]
            for f in ("Capacity", "Allocation", "Available")
        }
        await sh("umount", "-n", str(pool.target))
        # The target is now a plain directory on whatever holds tmp_path: its statvfs must
        # never reach /metrics. Several info polls, each served from libvirt's figures.
        for _ in range(6):
            await asyncio.sleep(POLL["interval"])
            text = await scrape(url)
            for field, figure in libvirt.items():
                metric = f"libvirt_storage_pool_{field.lower()}_bytes"
                assert value(text, metric, **labels) == figure
            assert sample(text, "libvirt_storage_pool_filesystem_size_bytes", **labels) is None
