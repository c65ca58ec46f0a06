"""What a threshold measures, on a real filesystem with blocks reserved for root.

A fresh ext4 keeps 5 % of its blocks for root: libvirt counts them as available, QEMU (not root)
cannot write them. A used-ratio limit ("60%") compares libvirt's allocation / capacity, the
figure poolwatch exports; a free-space limit ("< 9MiB") compares what a guest can still write,
the smaller of libvirt's available and the filesystem's f_bavail. The level, the hook's
POOLWATCH_USED_RATIO and POOLWATCH_AVAILABLE_BYTES, /api/v1/pools and /metrics must all say so.

poolwatch runs in libvirtd's private mount namespace, where libvirt mounted the `fs` pool, so
that it can stat the pool's filesystem as it does on a real host. How the rest is built: see
policy_helpers.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness.commands import MiB
from tests.harness.libvirtd import Libvirtd, in_mount_namespace
from tests.helpers import PoolwatchProcess, fetch, scrape, until_metric
from tests.integration.policy_helpers import (
    HOST,
    SETTLE,
    hook_runs,
    policy_toml,
    pool_info,
    q,
    record_hook,
    unique,
    value,
    virsh,
)

WARNING_RATIO = 0.60
# Clearly apart: the figures under test differ by the reserve, about five points.
SAME = 0.003  # two readings of one figure (ratio), taken a poll apart
APART = 0.03  # allocation / capacity against 1 - free / capacity


class FsPool:
    """A running `fs` pool on a fresh ext4 loop device, filled with fully allocated volumes."""

    def __init__(self, libvirtd: Libvirtd, name: str, target: Path) -> None:
        self.libvirtd, self.name, self.target = libvirtd, name, target
        self.volumes = 0

    async def libvirt(self) -> tuple[int, int, int]:
        """(capacity, allocation, available) as libvirt reports them."""
        info = await pool_info(self.libvirtd, self.name)
        return int(info["Capacity"]), int(info["Allocation"]), int(info["Available"])

    async def statfs(self) -> tuple[int, int]:
        """(free, avail) bytes of the mounted filesystem: f_bfree and f_bavail."""
        out = await asyncio.to_thread(
            self.libvirtd.nsenter, "stat", "-f", "-c", "%S %f %a", str(self.target)
        )
        size, free, avail = map(int, out.split())
        return free * size, avail * size

    async def add(self, size_mib: int) -> None:
        self.volumes += 1
        await virsh(
            self.libvirtd,
            "vol-create-as",
            self.name,
            f"fill-{self.volumes}.img",
            f"{size_mib}M",
            "--allocation",
            f"{size_mib}M",
        )

    async def fill_to(self, ratio: float) -> None:
        """Volumes until allocation / capacity >= ratio."""
        while True:
            capacity, allocation, _ = await self.libvirt()
            missing = ratio * capacity - allocation
            if missing <= 0:
                return
            await self.add(min(8, math.ceil(missing / MiB)))

    async def fill_until_avail_below(self, limit: int) -> None:
        while (await self.statfs())[1] >= limit:
            await self.add(1)


async def pools_api(url: str, name: str) -> dict[str, Any]:
    status, text = await fetch(f"{url}/api/v1/pools")
    assert status == 200, text
    [found] = [p for h in json.loads(text)["hosts"] for p in h["pools"] if p["name"] == name]
    return found


async def exported(url: str, name: str) -> tuple[float, float]:
    """(allocation / capacity, free bytes) from /metrics: the smaller of libvirt's available
    and the filesystem's avail."""
    text = await scrape(url)
    labels = {"host": HOST, "storage_pool": name}
    allocation = value(text, "libvirt_storage_pool_allocation_bytes", **labels)
    capacity = value(text, "libvirt_storage_pool_capacity_bytes", **labels)
    free = min(
        value(text, "libvirt_storage_pool_available_bytes", **labels),
        value(text, "libvirt_storage_pool_filesystem_avail_bytes", **labels),
    )
    return allocation / capacity, free


async def test_ratio_limits_measure_allocation_and_free_limits_what_guests_can_write(
    libvirtd: Libvirtd, make_loop_fs: Callable[..., str], pools: list[str], tmp_path: Path
) -> None:
    device = make_loop_fs(64 * MiB)  # mkfs.ext4 defaults: 5 % reserved for root
    name = unique("pw-measure")
    target = tmp_path / name
    target.mkdir()
    libvirtd.virsh_xml(
        "pool-define",
        f"""<pool type='fs'><name>{name}</name>
              <source><device path='{device}'/><format type='ext4'/></source>
              <target><path>{target}</path></target></pool>""",
    )
    pools.append(name)
    libvirtd.virsh("pool-start", name)
    pool = FsPool(libvirtd, name, target)
    capacity, _, available = await pool.libvirt()
    free, avail = await pool.statfs()
    assert free == available  # libvirt's available is f_bfree: the reserve counts as free
    # 5 % of the device's blocks; the journal and other metadata are not part of capacity.
    reserve = (free - avail) / capacity
    assert 0.04 < reserve < 0.10, reserve
    # Critical once a guest can write less than 15 % of the pool: between f_bavail and f_bfree
    # there is the reserve, so libvirt's available alone would not be below it yet.
    critical_mib = round(0.15 * capacity / MiB)

    hook, out = record_hook(tmp_path)
    config_file = tmp_path / "poolwatch.toml"
    config_file.write_text(
        policy_toml(
            libvirtd.uri,
            f"""
[[threshold]]
pool = {q(name)}
warning = "{WARNING_RATIO:.0%}"
critical = "< {critical_mib}MiB"
clear = "1%"
hooks = ["record"]

{hook}""",
        )
    )
    # In libvirtd's mount namespace, where the pool's filesystem is mounted.
    process = PoolwatchProcess(
        "--config.file", str(config_file), prefix=in_mount_namespace(libvirtd.namespace_pid)
    )
    await asyncio.to_thread(process.start)
    labels = {"host": HOST, "storage_pool": name}
    try:
        url = process.url
        await until_metric(url, "poolwatch_pool_threshold_level", 0, within=10, **labels)

        # -- below the ratio by allocation / capacity, above it by 1 - free / capacity --------
        await pool.fill_to(WARNING_RATIO - 0.04)
        capacity, allocation, _ = await pool.libvirt()
        _, avail = await pool.statfs()
        assert allocation / capacity < WARNING_RATIO - 0.01
        assert 1 - avail / capacity >= WARNING_RATIO + 0.01
        await asyncio.sleep(SETTLE)  # polls and refreshes that would raise a warning
        ratio, free = await exported(url, name)
        assert abs(ratio - allocation / capacity) < SAME
        assert abs(free - avail) < 256 * 1024
        assert value(await scrape(url), "poolwatch_pool_threshold_level", **labels) == 0
        doc = await pools_api(url, name)
        assert doc["policy"]["level"] == "ok"
        assert abs(doc["fill_ratio"] - ratio) < SAME
        assert hook_runs(out) == []

        # -- warning: allocation / capacity reaches the ratio --------------------------------
        # One volume, so that the hook and the figures read afterwards see the same pool.
        capacity, allocation, _ = await pool.libvirt()
        await pool.add(math.ceil(((WARNING_RATIO + 0.05) * capacity - allocation) / MiB))
        await until_metric(url, "poolwatch_pool_threshold_level", 1, within=10, **labels)
        await asyncio.sleep(SETTLE)
        [warning] = hook_runs(out)
        assert warning["POOLWATCH_ACTION"] == "warning"
        used = float(warning["POOLWATCH_USED_RATIO"])
        guest_free = int(warning["POOLWATCH_AVAILABLE_BYTES"])
        ratio, free = await exported(url, name)
        assert abs(used - ratio) < SAME, (used, ratio)
        assert abs(guest_free - free) < 256 * 1024, (guest_free, free)
        assert 1 - guest_free / capacity - used > APART  # the other figure, clearly apart
        doc = await pools_api(url, name)
        assert doc["policy"]["level"] == "warning"
        assert abs(doc["fill_ratio"] - used) < SAME
        assert abs(doc["free_bytes"] - guest_free) < 256 * 1024

        # -- critical: what a guest can write drops below the free-space limit ---------------
        await pool.fill_until_avail_below(critical_mib * MiB)
        _, _, available = await pool.libvirt()
        assert available >= critical_mib * MiB  # libvirt's figure alone: not yet
        await until_metric(url, "poolwatch_pool_threshold_level", 2, within=10, **labels)
        await asyncio.sleep(SETTLE)
        runs = hook_runs(out)
        assert [r["POOLWATCH_ACTION"] for r in runs] == ["warning", "critical"], runs
        critical = runs[1]
        assert int(critical["POOLWATCH_AVAILABLE_BYTES"]) < critical_mib * MiB
        used = float(critical["POOLWATCH_USED_RATIO"])
        guest_free = int(critical["POOLWATCH_AVAILABLE_BYTES"])
        ratio, free = await exported(url, name)
        # The filesystem shows a volume's blocks while virsh still creates it, libvirt's
        # allocation once it is done: a poll in between sees the last 1 MiB in one figure only.
        assert ratio - MiB / capacity - SAME < used < ratio + SAME, (used, ratio)
        assert abs(guest_free - free) < 256 * 1024, (guest_free, free)
        assert 1 - guest_free / capacity - used > APART
        doc = await pools_api(url, name)
        assert doc["policy"]["level"] == "critical"
        assert doc["free_bytes"] < critical_mib * MiB <= doc["available"]
    finally:
        code = await asyncio.to_thread(process.stop)
    assert code == 0, process.logs[-5:]
