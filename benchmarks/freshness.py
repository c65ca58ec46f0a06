"""What the issue "Event-driven for real" measures beside the event latency: idle cost on both
sides of the connection, and how soon changes made on disk behind libvirt show on /metrics.

- `libvirtd_alone`: libvirtd's CPU over a window with no poolwatch attached (the reference).
- `idle_with_libvirtd`: poolwatch's CPU and libvirtd's over a fixed window in which /metrics is
  scraped every 15 s, as Prometheus does; libvirtd's CPU caused by poolwatch is the difference
  of its rate against `libvirtd_alone`.
- `write_freshness`: a guest-like write (`posix_fallocate` of a volume file of a dir pool) until
  /metrics shows both the pool's allocation and the volume's allocation moved.
- `new_file_latency`: a file created by hand in a dir pool's directory until the volume shows on
  /metrics (inotify, refresh, rescan), and its removal until it is gone.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

from tests.helpers import cpu_seconds

from benchmarks.measure import fetch

SCRAPE_INTERVAL = 15.0
POLL = 0.1  # seconds between /metrics reads while waiting for a change
WRITE_BYTES = 1 << 30  # the "1 GiB written into a volume"


async def libvirtd_alone(libvirtd_pid: int, seconds: float) -> dict[str, float]:
    c0, t0 = cpu_seconds(libvirtd_pid), time.monotonic()
    await asyncio.sleep(seconds)
    c1, t1 = cpu_seconds(libvirtd_pid), time.monotonic()
    return {
        "seconds": t1 - t0,
        "cpu_seconds": c1 - c0,
        "cpu_percent_of_core": (c1 - c0) / (t1 - t0) * 100,
    }


async def idle_with_libvirtd(
    url: str, pid: int, libvirtd_pid: int, seconds: float, alone: dict[str, float]
) -> dict[str, float]:
    """Both processes' CPU over `seconds`, /metrics scraped every 15 s from the start."""
    c0, l0, t0 = cpu_seconds(pid), cpu_seconds(libvirtd_pid), time.monotonic()
    scrapes = 0
    while time.monotonic() - t0 < seconds:
        await fetch(url, gzip=True)  # Prometheus asks for gzip
        scrapes += 1
        await asyncio.sleep(min(SCRAPE_INTERVAL, max(0.0, seconds - (time.monotonic() - t0))))
    c1, l1, t1 = cpu_seconds(pid), cpu_seconds(libvirtd_pid), time.monotonic()
    libvirtd = (l1 - l0) / (t1 - t0) * 100
    return {
        "seconds": t1 - t0,
        "scrapes": scrapes,
        "cpu_seconds": c1 - c0,
        "cpu_percent_of_core": (c1 - c0) / (t1 - t0) * 100,
        "libvirtd_cpu_percent_of_core": libvirtd,
        "libvirtd_alone_percent_of_core": alone["cpu_percent_of_core"],
        "libvirtd_caused_percent_of_core": libvirtd - alone["cpu_percent_of_core"],
    }


def _value(body: bytes, family: str, labels: str) -> float | None:
    match = re.search(
        rb"^" + family.encode() + rb"\{[^}]*" + re.escape(labels.encode()) + rb"[^}]*\} (\S+)$",
        body,
        re.MULTILINE,
    )
    return None if match is None else float(match.group(1))


async def write_freshness(
    url: str, directory: Path, pool: str, volume: str, within: float = 60.0
) -> dict[str, Any]:
    """Seconds from a `posix_fallocate` of WRITE_BYTES into `volume` (a sparse file of the dir
    pool `pool`) to /metrics showing the pool's and the volume's allocation grown by it. The
    file is made sparse again afterwards."""
    pool_labels = f'storage_pool="{pool}"'
    volume_labels = f'storage_pool="{pool}",volume="{volume}"'
    body = await fetch(url, gzip=False)
    pool_before = _value(body, "libvirt_storage_pool_allocation_bytes", pool_labels)
    volume_before = _value(body, "libvirt_storage_volume_allocation_bytes", volume_labels)
    if pool_before is None or volume_before is None:
        raise RuntimeError(f"{pool}/{volume} is not on /metrics")
    path = directory / volume
    size = path.stat().st_size
    fd = os.open(path, os.O_WRONLY)
    try:
        started = time.monotonic()
        os.posix_fallocate(fd, 0, WRITE_BYTES)
        written = time.monotonic()
        out: dict[str, Any] = {"bytes": WRITE_BYTES, "fallocate_seconds": written - started}
        # Other writers share the filesystem (the machine is shared): most of the write is
        # enough to tell ours.
        grown = 0.9 * WRITE_BYTES
        while "pool_seconds" not in out or "volume_seconds" not in out:
            body = await fetch(url, gzip=False)
            now = time.monotonic() - written
            pool_now = _value(body, "libvirt_storage_pool_allocation_bytes", pool_labels)
            volume_now = _value(body, "libvirt_storage_volume_allocation_bytes", volume_labels)
            if (
                "pool_seconds" not in out
                and pool_now is not None
                and pool_now - pool_before >= grown
            ):
                out["pool_seconds"] = now
            if (
                "volume_seconds" not in out
                and volume_now is not None
                and volume_now - volume_before >= grown
            ):
                out["volume_seconds"] = now
            if now > within:
                out["timed_out_after"] = within
                break
            await asyncio.sleep(POLL)
    finally:
        os.ftruncate(fd, 0)  # sparse again, as the workload made it
        os.ftruncate(fd, size)
        os.close(fd)
    return out


async def new_file_latency(
    url: str, directory: Path, pool: str, count: int, within: float = 30.0
) -> dict[str, Any]:
    """`count` times: a volume file created by hand in `directory` (the dir pool `pool`), seconds
    until /metrics lists it; then removed, seconds until it is gone."""
    appeared: list[float] = []
    gone: list[float] = []
    for i in range(count):
        name = f"a-new-{i:02d}.img"  # sorts first: within max_volumes_per_pool at any shape
        series = f'storage_pool="{pool}",volume="{name}"'.encode()
        path = directory / name
        for step, times in (("create", appeared), ("remove", gone)):
            started = time.monotonic()
            if step == "create":
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.ftruncate(fd, 1 << 20)
                os.close(fd)
            else:
                path.unlink()
            while True:
                present = series in await fetch(url, gzip=False)
                elapsed = time.monotonic() - started
                if present == (step == "create"):
                    times.append(elapsed)
                    break
                if elapsed > within:
                    raise RuntimeError(f"{name}: not seen to {step} within {within:g} s")
                await asyncio.sleep(POLL / 2)
    return {
        "n": count,
        "appear_seconds": appeared,
        "gone_seconds": gone,
        "appear_max_seconds": max(appeared),
        "gone_max_seconds": max(gone),
    }
