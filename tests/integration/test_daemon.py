"""poolwatch against a private real libvirtd: what it exports, and how it lives through libvirtd
being killed, restarted and frozen.

Every test defines its own pools (unique names, targets under its tmp_path) and undefines them
on the way out, and leaves libvirtd running and thawed whatever happens. Blocking calls (virsh,
kill, freeze) run in threads: the in-process daemon shares the test's event loop, and a blocked
loop would distort every latency measured here. Starting libvirtd is the exception (see
`ensure_serving`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.commands import MiB
from tests.harness.libvirtd import Libvirtd
from tests.helpers import (
    PoolwatchProcess,
    base_url,
    config_for,
    eventually,
    fetch,
    running,
    sample,
    scrape,
    series,
    until_metric,
)

# Fast polls keep the tier quick; call_timeout 2 s arms keepalive at 1 s x 2 probes (3 s).
CALL_TIMEOUT = 2.0
POLL: dict[str, Any] = {
    "interval": 0.5,
    "volumes_interval": 1.0,
    "refresh_interval": 1.0,
    "call_timeout": CALL_TIMEOUT,
}
KEEPALIVE = max(1, int(CALL_TIMEOUT // 3)) * 3  # interval * (count + 1), as LibvirtSource arms it


@dataclass(frozen=True)
class Pool:
    name: str
    type: str
    target: Path
    source: str  # the loop device of an fs pool, "" for a dir pool


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ensure_serving(libvirtd: Libvirtd) -> None:
    """Leave the session's libvirtd as the next test expects it: running and not frozen.

    Called on the main thread, like every start of libvirtd here: the harness arms
    PR_SET_PDEATHSIG only there, so a test process that dies cannot leak a libvirtd.
    """
    if libvirtd.running and libvirtd.frozen:
        libvirtd.thaw()
    if not libvirtd.running:
        libvirtd.start()


def remove_pool(libvirtd: Libvirtd, name: str) -> None:
    ensure_serving(libvirtd)
    libvirtd.virsh("pool-destroy", name, check=False)
    libvirtd.virsh("pool-undefine", name, check=False)


async def virsh(libvirtd: Libvirtd, *args: str) -> str:
    return await asyncio.to_thread(libvirtd.virsh, *args)


@pytest.fixture
def dir_pool(libvirtd: Libvirtd, tmp_path: Path) -> Iterator[Pool]:
    """A persistent, running `dir` pool of its own."""
    name = unique("it-dir")
    target = tmp_path / name
    target.mkdir()
    libvirtd.virsh_xml(
        "pool-define",
        f"<pool type='dir'><name>{name}</name><target><path>{target}</path></target></pool>",
    )
    try:
        libvirtd.virsh("pool-start", name)
        yield Pool(name, "dir", target, "")
    finally:
        remove_pool(libvirtd, name)


@pytest.fixture
def fs_pool(libvirtd: Libvirtd, make_loop_fs: Callable[..., str], tmp_path: Path) -> Iterator[Pool]:
    """A persistent, running `fs` pool on a 64 MiB ext4 loop device (mounted in libvirtd's
    namespace only); destroyed (unmounted) before the loop device is detached."""
    device = make_loop_fs(64 * MiB)
    name = unique("it-fs")
    target = tmp_path / name
    target.mkdir()
    libvirtd.virsh_xml(
        "pool-define",
        f"""<pool type='fs'><name>{name}</name>
              <source><device path='{device}'/><format type='ext4'/></source>
              <target><path>{target}</path></target></pool>""",
    )
    try:
        libvirtd.virsh("pool-start", name)
        yield Pool(name, "fs", target, device)
    finally:
        remove_pool(libvirtd, name)


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


def value(text: str, name: str, **labels: str) -> float:
    """Like `sample`, but the series must exist."""
    found = sample(text, name, **labels)
    assert found is not None, f"{name}{labels} is absent"
    return found


def pool_series_names(text: str, pool: str) -> set[str]:
    """The names of every sample that carries storage_pool=pool."""
    return {
        s.name
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("storage_pool") == pool
    }


async def wait_running(url: str, *pools: Pool, volumes: bool = True) -> str:
    """Scrape until every pool is running (and has been volume-scanned); return that page."""
    page = [""]

    async def check() -> bool:
        page[0] = text = await scrape(url)
        for pool in pools:
            if sample(text, "libvirt_storage_pool_state", storage_pool=pool.name) != 2:
                return False
            scanned = sample(text, "libvirt_storage_pool_volumes", storage_pool=pool.name)
            if volumes and scanned is None:
                return False
        return True

    await eventually(check, within=10)
    return page[0]


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


async def test_reconnects_after_libvirtd_is_killed(
    libvirtd: Libvirtd, dir_pool: Pool, fs_pool: Pool
) -> None:
    host = {"host": "test"}
    async with running(config_for(libvirtd.uri, **POLL)) as daemon:
        url = base_url(daemon)
        await wait_running(url, dir_pool, fs_pool, volumes=False)
        text = await scrape(url)
        assert value(text, "poolwatch_libvirt_up", **host) == 1
        assert value(text, "poolwatch_libvirt_connects_total", **host) == 1
        assert value(text, "poolwatch_libvirt_disconnects_total", **host) == 0

        try:
            began = time.monotonic()
            await asyncio.to_thread(libvirtd.kill, signal.SIGKILL)
            killed = time.monotonic()
            down = await until_metric(url, "poolwatch_libvirt_up", 0, within=5, **host)
            libvirtd.restart()  # on the main thread (see ensure_serving); takes ~50 ms
            restarted = time.monotonic()
            up = await until_metric(url, "poolwatch_libvirt_up", 1, within=10, **host)
        finally:
            ensure_serving(libvirtd)

        text = await scrape(url)
        assert value(text, "poolwatch_libvirt_connects_total", **host) == 2
        assert value(text, "poolwatch_libvirt_disconnects_total", **host) == 1

        # Events flow on the new connection: a stop reaches /metrics without a restart of
        # poolwatch. (libvirtd found both pools active again at its start.)
        await wait_running(url, dir_pool, fs_pool, volumes=False)
        await virsh(libvirtd, "pool-destroy", dir_pool.name)
        destroyed = time.monotonic()
        seen = await until_metric(
            url, "libvirt_storage_pool_state", 0, within=5, storage_pool=dir_pool.name
        )
        text = await scrape(url)
        assert value(text, "libvirt_storage_pool_state", storage_pool=fs_pool.name) == 2
        assert value(text, "poolwatch_libvirt_connects_total", **host) == 2
        print(
            f"\nkill -9: {killed - began:.3f} s; up=0 after {down:.3f} s; "
            f"libvirtd restart {restarted - killed - down:.3f} s (its start: "
            f"{libvirtd.start_seconds:.3f} s); up=1 {up:.3f} s after the "
            f"restart; pool-destroy on /metrics {time.monotonic() - destroyed:.3f} s after "
            f"virsh returned (scraped for {seen:.3f} s)"
        )


async def test_frozen_libvirtd_never_hangs_metrics(libvirtd: Libvirtd, dir_pool: Pool) -> None:
    host = {"host": "test"}
    async with running(config_for(libvirtd.uri, **POLL)) as daemon:
        url = base_url(daemon)
        metrics = f"{url}/metrics"
        await wait_running(url, dir_pool)
        latencies: list[float] = []
        went_down: float | None = None
        bound = CALL_TIMEOUT + KEEPALIVE + 1  # the call times out, or keepalive gives up
        # Frozen past the keepalive timeout, so calls stuck in libvirtd are aborted before it
        # returns: with calls from several threads on one connection, libvirt < 10.3 clients
        # crashed right there (CVE-2024-4418; see poolwatch.adapter.connection._serialized).
        hold = CALL_TIMEOUT + KEEPALIVE + 0.5
        try:
            await asyncio.to_thread(libvirtd.freeze)
            frozen = time.monotonic()
            # At least 20 scrapes while frozen: each must answer at once.
            while went_down is None or len(latencies) < 20 or time.monotonic() - frozen < hold:
                assert went_down is not None or time.monotonic() - frozen < bound, (
                    f"poolwatch_libvirt_up still 1 after {time.monotonic() - frozen:.1f} s"
                )
                started = time.monotonic()
                status, text = await fetch(metrics, within=2.0)
                latencies.append(time.monotonic() - started)
                assert status == 200
                if went_down is None and sample(text, "poolwatch_libvirt_up", **host) == 0:
                    went_down = time.monotonic() - frozen
                await asyncio.sleep(0.1)
            assert libvirtd.frozen  # all of that happened while libvirtd was stopped
            assert went_down is not None
        finally:
            ensure_serving(libvirtd)
        thawed = time.monotonic()

        # Spec §10: after libvirtd returns, events flow again within 5 s, no restart needed.
        up = await until_metric(url, "poolwatch_libvirt_up", 1, within=5, **host)
        await wait_running(url, dir_pool, volumes=False)
        await virsh(libvirtd, "pool-destroy", dir_pool.name)
        destroyed = time.monotonic()
        await until_metric(
            url, "libvirt_storage_pool_state", 0, within=5, storage_pool=dir_pool.name
        )
        text = await scrape(url)
        assert value(text, "poolwatch_libvirt_disconnects_total", **host) == 1
        assert value(text, "poolwatch_libvirt_connects_total", **host) == 2
        print(
            f"\nfrozen: {len(latencies)} scrapes, max {max(latencies) * 1000:.1f} ms, "
            f"median {sorted(latencies)[len(latencies) // 2] * 1000:.1f} ms; up=0 after "
            f"{went_down:.2f} s (bound {bound:.0f} s); up=1 {up:.2f} s "
            f"after thaw (thaw at +{thawed - frozen:.2f} s); pool-destroy on /metrics "
            f"{time.monotonic() - destroyed:.3f} s after virsh returned"
        )
        assert max(latencies) < 0.5


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
