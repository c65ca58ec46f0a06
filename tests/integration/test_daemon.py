"""poolwatch against a private real libvirtd: what it exports (pools, volumes, filesystems,
growth behind libvirt's back) and how a real process follows lifecycle events.

How it lives through libvirtd being killed and frozen is in test_libvirtd_outages.py; what both
share is in daemon_helpers.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.harness.commands import MiB
from tests.harness.libvirtd import Libvirtd
from tests.helpers import (
    PoolwatchProcess,
    base_url,
    config_for,
    eventually,
    running,
    sample,
    scrape,
    series,
    until_metric,
)
from tests.integration.daemon_helpers import POLL, Pool, value, virsh, wait_running


def pool_info(libvirtd: Libvirtd, name: str) -> dict[str, str]:
    """`virsh pool-info --bytes` as a dict: State, Capacity, Allocation, ..."""
    out = libvirtd.virsh("pool-info", name, "--bytes")
    return {
        k.strip(): v.strip()
        for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)
    }


def volume_names(libvirtd: Libvirtd, pool: str) -> list[str]:
    """The volume names of `virsh vol-list` (9.0 has no --name: skip the table's header)."""
    lines = libvirtd.virsh("vol-list", pool).splitlines()[2:]
    return [line.split()[0] for line in lines if line.strip()]


def pool_series_names(text: str, pool: str) -> set[str]:
    """The names of every sample that carries storage_pool=pool."""
    return {
        s.name
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("storage_pool") == pool
    }


async def test_dir_and_fs_pools_are_exported(
    libvirtd: Libvirtd, dir_pool: Pool, fs_pool: Pool
) -> None:
    async with running(config_for(libvirtd.uri, **POLL)) as daemon:
        url = base_url(daemon)
        text = await wait_running(url, dir_pool, fs_pool)

        for pool in (dir_pool, fs_pool):
            labels = {"host": "test", "storage_pool": pool.name}
            info = pool_info(libvirtd, pool.name)
            assert value(text, "libvirt_storage_pool_capacity_bytes", **labels) == int(
                info["Capacity"]
            )
            capacity = value(text, "libvirt_storage_pool_capacity_bytes", **labels)
            allocation = value(text, "libvirt_storage_pool_allocation_bytes", **labels)
            available = value(text, "libvirt_storage_pool_available_bytes", **labels)
            # One pool.info(): libvirt computes allocation as capacity - available.
            assert allocation > 0
            assert available > 0
            assert allocation + available == capacity
            assert value(text, "libvirt_storage_pool_active", **labels) == 1
            assert value(text, "libvirt_storage_pool_persistent", **labels) == 1
            assert value(text, "libvirt_storage_pool_autostart", **labels) == 0
            # A fresh ext4 has lost+found, which libvirt lists as a volume (of type dir).
            assert value(text, "libvirt_storage_pool_volumes", **labels) == len(
                volume_names(libvirtd, pool.name)
            )

            [labelset] = series(text, "libvirt_storage_pool_info", storage_pool=pool.name)
            assert labelset["host"] == "test"
            assert labelset["type"] == pool.type
            assert labelset["target_path"] == str(pool.target)
            assert labelset["source"] == pool.source
            assert labelset["uuid"] == libvirtd.virsh("pool-uuid", pool.name).strip()
        assert (
            32 * MiB
            < value(text, "libvirt_storage_pool_capacity_bytes", storage_pool=fs_pool.name)
            <= (64 * MiB)
        )

        before = {
            pool.name: (
                len(volume_names(libvirtd, pool.name)),
                value(text, "libvirt_storage_pool_volumes_capacity_bytes", storage_pool=pool.name),
                value(
                    text, "libvirt_storage_pool_volumes_allocation_bytes", storage_pool=pool.name
                ),
            )
            for pool in (dir_pool, fs_pool)
        }
        # Volumes send no event: the volume timer (or the info poll's count) finds them.
        await virsh(libvirtd, "vol-create-as", dir_pool.name, "disk-a.img", "3M")
        await virsh(libvirtd, "vol-create-as", fs_pool.name, "disk-b.img", "5M")
        started = time.monotonic()
        for pool, volume, size in ((dir_pool, "disk-a.img", 3), (fs_pool, "disk-b.img", 5)):
            count, capacity, allocation = before[pool.name]
            labels = {"storage_pool": pool.name}
            await until_metric(url, "libvirt_storage_pool_volumes", count + 1, within=5, **labels)
            text = await scrape(url)
            vol = {"volume": volume, **labels}
            assert value(text, "libvirt_storage_volume_capacity_bytes", **vol) == size * MiB
            assert value(text, "libvirt_storage_volume_allocation_bytes", **vol) >= size * MiB
            assert value(text, "libvirt_storage_volume_physical_bytes", **vol) == size * MiB
            assert value(text, "libvirt_storage_pool_volumes_capacity_bytes", **labels) == (
                capacity + size * MiB
            )
            assert value(text, "libvirt_storage_pool_volumes_allocation_bytes", **labels) >= (
                allocation + size * MiB
            )
            assert value(text, "poolwatch_volumes_unexported", **labels) == 0
            exported = {s["volume"] for s in series(text, "libvirt_storage_volume_capacity_bytes")}
            assert set(volume_names(libvirtd, pool.name)) <= exported
        print(f"\nnew volumes on /metrics after {time.monotonic() - started:.2f} s")


async def test_growth_outside_libvirt_is_seen_after_refresh(
    libvirtd: Libvirtd, fs_pool: Pool
) -> None:
    pool = {"storage_pool": fs_pool.name}
    async with running(config_for(libvirtd.uri, **POLL)) as daemon:
        url = base_url(daemon)

        async def refreshed_once() -> bool:
            # A baseline from poolwatch's own refresh, not from the pool's start.
            text = await scrape(url)
            stamp = sample(text, "libvirt_storage_pool_last_refresh_timestamp_seconds", **pool)
            return stamp is not None

        await eventually(refreshed_once, within=10)
        text = await scrape(url)
        before = value(text, "libvirt_storage_pool_allocation_bytes", **pool)
        refreshed_at = value(text, "libvirt_storage_pool_last_refresh_timestamp_seconds", **pool)
        refreshes = value(text, "libvirt_storage_pool_events_total", event="refreshed", **pool)

        # Written behind libvirt's back, inside the namespace where the pool is mounted.
        await asyncio.to_thread(
            libvirtd.nsenter,
            "dd",
            "if=/dev/urandom",
            f"of={fs_pool.target}/outside.bin",
            "bs=1M",
            "count=16",
            "conv=fsync",
        )
        written = time.monotonic()
        grown = [0.0]

        async def grew() -> bool:
            text = await scrape(url)
            grown[0] = value(text, "libvirt_storage_pool_allocation_bytes", **pool) - before
            return grown[0] >= 15 * MiB

        try:
            await eventually(grew, within=3 * POLL["refresh_interval"] + 3)
        except AssertionError:
            raise AssertionError(f"allocation grew by {grown[0] / MiB:.1f} MiB only") from None
        print(f"\n16 MiB written outside libvirt visible after {time.monotonic() - written:.2f} s")
        assert grown[0] <= 20 * MiB  # 16 MiB plus filesystem metadata, nothing else

        text = await scrape(url)
        assert value(text, "libvirt_storage_pool_last_refresh_timestamp_seconds", **pool) > (
            refreshed_at
        )
        assert (
            value(text, "libvirt_storage_pool_events_total", event="refreshed", **pool) > refreshes
        )
        # The refresh also made libvirt (and so poolwatch) see the file as a volume.
        volume = {"volume": "outside.bin", **pool}

        async def listed() -> bool:
            text = await scrape(url)
            return sample(text, "libvirt_storage_volume_allocation_bytes", **volume) is not None

        await eventually(listed, within=5)
        text = await scrape(url)
        assert value(text, "libvirt_storage_volume_allocation_bytes", **volume) >= 16 * MiB


async def test_filesystem_of_local_targets(
    libvirtd: Libvirtd, dir_pool: Pool, fs_pool: Pool
) -> None:
    tolerance = 64 * MiB  # other processes write to the host's disk meanwhile
    async with running(config_for(libvirtd.uri, **POLL)) as daemon:
        url = base_url(daemon)
        await wait_running(url, dir_pool, fs_pool, volumes=False)
        dir_labels = {"storage_pool": dir_pool.name}
        seen: list[tuple[float, float]] = []

        async def avail_matches() -> bool:
            text = await scrape(url)
            st = os.statvfs(dir_pool.target)
            reported = sample(text, "libvirt_storage_pool_filesystem_avail_bytes", **dir_labels)
            if reported is None:
                return False
            seen.append((reported, st.f_bavail * st.f_frsize))
            return abs(reported - st.f_bavail * st.f_frsize) <= tolerance

        try:
            await eventually(avail_matches, within=5)
        except AssertionError:
            raise AssertionError(f"(poolwatch, statvfs) avail: {seen[-3:]}") from None

        text = await scrape(url)
        st = os.statvfs(dir_pool.target)
        assert value(text, "libvirt_storage_pool_filesystem_size_bytes", **dir_labels) == (
            st.f_blocks * st.f_frsize
        )
        device = os.stat(dir_pool.target).st_dev
        [info] = series(text, "libvirt_storage_pool_info", **dir_labels)
        assert info["filesystem"] == f"{os.major(device)}:{os.minor(device)}"

        # The fs pool is mounted in libvirtd's namespace only: in ours its target is a plain
        # directory on the root filesystem, so poolwatch must not report that filesystem.
        fs_labels = {"storage_pool": fs_pool.name}
        assert not await asyncio.to_thread(os.path.ismount, fs_pool.target)
        assert sample(text, "libvirt_storage_pool_filesystem_avail_bytes", **fs_labels) is None
        assert sample(text, "libvirt_storage_pool_filesystem_size_bytes", **fs_labels) is None
        [info] = series(text, "libvirt_storage_pool_info", **fs_labels)
        assert info["filesystem"] == ""
        assert value(text, "libvirt_storage_pool_available_bytes", **fs_labels) > 0


async def test_real_process_follows_lifecycle_events(
    libvirtd: Libvirtd, dir_pool: Pool, tmp_path: Path
) -> None:
    config = tmp_path / "poolwatch.toml"
    config.write_text(
        '[poll]\ninterval = "1s"\nvolumes_interval = "1s"\nrefresh_interval = "1s"\n'
        'call_timeout = "3s"\n'
    )
    process = PoolwatchProcess(
        "--libvirt.uri",
        libvirtd.uri,
        "--web.listen-address",
        "127.0.0.1:0",
        "--config.file",
        str(config),
    )
    await asyncio.to_thread(process.start)
    try:
        url = process.url
        pool = {"storage_pool": dir_pool.name}
        await wait_running(url, dir_pool)

        await virsh(libvirtd, "pool-destroy", dir_pool.name)
        destroyed = time.monotonic()
        await until_metric(url, "libvirt_storage_pool_state", 0, within=5, **pool)
        print(f"\npool-destroy on /metrics {time.monotonic() - destroyed:.3f} s after virsh")
        text = await scrape(url)
        assert sample(text, "libvirt_storage_pool_capacity_bytes", **pool) is None

        await virsh(libvirtd, "pool-undefine", dir_pool.name)
        left: set[str] = set()

        async def only_events_left() -> bool:
            left.clear()
            left.update(pool_series_names(await scrape(url), dir_pool.name))
            return left == {"libvirt_storage_pool_events_total"}

        try:
            await eventually(only_events_left, within=5)
        except AssertionError:
            raise AssertionError(f"series left of {dir_pool.name}: {sorted(left)}") from None
        text = await scrape(url)
        for event in ("stopped", "undefined"):
            assert value(text, "libvirt_storage_pool_events_total", event=event, **pool) == 1
    finally:
        code = await asyncio.to_thread(process.stop)
    assert code == 0, process.logs[-5:]
    assert process.events("shutting_down")
