"""Inventories, telemetry and snapshots for tests of their readers (exporter, web, status).

``sample_inventory()`` builds one fixed world that covers every case the readers distinguish, and
``sample_telemetry()`` what poolwatch counted while watching it; the module constants name their
parts so tests do not repeat magic strings.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from poolwatch.inventory import Inventory
from poolwatch.model import (
    FilesystemStat,
    PoolEvent,
    PoolEventKind,
    PoolPolicy,
    PoolSnapshot,
    PoolState,
    VolumeScan,
    VolumeSnapshot,
)
from poolwatch.telemetry import Telemetry

NOW = 1_700_000_000.0
GIB = 1024**3

HOST_A = "alpha"  # connected, synced, with every kind of pool
URI_A = "qemu:///system"
HOST_B = "beta"  # was connected, then lost; its last pools are still served
URI_B = "qemu+ssh://beta.example/system"

HOSTILE = 'evil "pool" \\ with\nnewline <script>alert(1)</script> ünïcødé'
# An error text from libvirt quotes whatever it was given: markup, quotes, newlines.
HOSTILE_ERROR = "cannot mount '<img src=x onerror=alert(1)>' on \"/srv\": no such file\nretry"


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def volume(name: str, *, capacity: int = 10 * GIB, allocation: int = 2 * GIB) -> VolumeSnapshot:
    return VolumeSnapshot(
        name=name, type=0, capacity=capacity, allocation=allocation, physical=allocation
    )


def pool(name: str, *, host: str = HOST_A, **changes: Any) -> PoolSnapshot:
    """A running dir pool, 100 GiB with 40 GiB allocated, unless ``changes`` say otherwise."""
    base = PoolSnapshot(
        host=host,
        name=name,
        uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{host}/{name}")),
        type="dir",
        target_path=f"/var/lib/libvirt/{name}",
        source="",
        state=PoolState.RUNNING,
        active=True,
        persistent=True,
        autostart=True,
        capacity=100 * GIB,
        allocation=40 * GIB,
        available=60 * GIB,
        read_at=NOW,
    )
    return replace(base, **changes)


def capped_scan() -> VolumeScan:
    """Five volumes, of which the export cap kept three (sorted by name, as the scan does)."""
    kept = (
        volume("a.qcow2"),
        # physical unknown: the driver could not tell
        VolumeSnapshot(name="b.raw", type=0, capacity=GIB, allocation=GIB, physical=None),
        volume("c.qcow2", capacity=20 * GIB, allocation=5 * GIB),
    )
    return VolumeScan(
        count=5,
        capacity_bytes=60 * GIB,
        allocation_bytes=15 * GIB,
        volumes=kept,
        scanned_at=NOW - 30,
    )


def sample_pools() -> dict[str, PoolSnapshot]:
    pools = [
        # Local dir pool with statvfs figures and a volume scan capped by max_volumes_per_pool.
        pool(
            "default",
            filesystem=FilesystemStat(avail_bytes=50 * GIB, size_bytes=200 * GIB, device="253:1"),
            volumes=capped_scan(),
            last_refresh=NOW - 60,
        ),
        # Remote netfs pool: no statvfs, a complete (uncapped) and empty scan, 92 % full.
        pool(
            "nfs",
            type="netfs",
            source="nas.example:/export/vm",
            allocation=92 * GIB,
            available=8 * GIB,
            volumes=VolumeScan(
                count=0, capacity_bytes=0, allocation_bytes=0, volumes=(), scanned_at=NOW
            ),
        ),
        # Stopped pool whose stale figures libvirt still reports.
        pool(
            "backup",
            state=PoolState.INACTIVE,
            active=False,
            autostart=True,
            capacity=500 * GIB,
            allocation=499 * GIB,
            available=GIB,
            last_refresh=NOW - 3600,
        ),
        # Name chosen by whoever defined the pool: quotes, backslash, newline, markup, unicode.
        pool(HOSTILE, type="logical", source="/dev/sdb", persistent=False, autostart=False),
    ]
    return {p.name: p for p in pools}


def sample_inventory(clock: FakeClock | None = None) -> Inventory:
    clock = clock or FakeClock()
    inventory = Inventory(clock=clock)

    inventory.add_host(HOST_A, name=HOST_A, uri=URI_A)
    inventory.set_connected(HOST_A, name=HOST_A)
    inventory.replace_pools(HOST_A, sample_pools())

    inventory.add_host(HOST_B, name=HOST_B, uri=URI_B)
    inventory.set_connected(HOST_B, name=HOST_B)
    inventory.replace_pools(
        HOST_B, {"images": pool("images", host=HOST_B, allocation=85 * GIB, available=15 * GIB)}
    )
    inventory.set_disconnected(HOST_B)
    return inventory


def sample_telemetry(clock: FakeClock | None = None) -> Telemetry:
    """What poolwatch counted while ``sample_inventory()`` came about, in the same order."""
    telemetry = Telemetry(clock=clock or FakeClock())

    telemetry.add_connection(HOST_A, name=HOST_A)
    telemetry.record_connect(HOST_A, name=HOST_A)
    for kind in (PoolEventKind.STARTED, PoolEventKind.REFRESHED, PoolEventKind.REFRESHED):
        telemetry.record_pool_event(HOST_A, event("default", kind))
    # A pool that is gone by now: its counters stay.
    telemetry.record_pool_event(HOST_A, event("transient", PoolEventKind.UNDEFINED))
    telemetry.record_poll(HOST_A, "info", 0.003, ok=True)
    telemetry.record_poll(HOST_A, "info", 0.2, ok=False)
    telemetry.record_poll(HOST_A, "volumes", 1.5, ok=True)
    telemetry.record_poll(HOST_A, "volumes", 45.0, ok=True)  # beyond the largest bucket

    telemetry.add_connection(HOST_B, name=HOST_B)
    telemetry.record_connect(HOST_B, name=HOST_B)
    telemetry.record_disconnect(HOST_B, reason="connection reset by peer")
    return telemetry


def event(pool_name: str, kind: PoolEventKind, *, host: str = HOST_A) -> PoolEvent:
    return PoolEvent(host=host, pool=pool_name, uuid="", kind=kind, at=NOW)


def sample_policies() -> dict[tuple[str, str], PoolPolicy]:
    """What the policies say about the sample pools, by (connection key, pool name).

    Chosen so that the threshold level and the display-only 80/90 % colouring disagree (default
    is critical at 40 %, nfs ok at 92 %), and every autostart state appears once.
    """
    return {
        # Critical by its forecast, although only 40 % full.
        (HOST_A, "default"): PoolPolicy(
            level=2,
            episode="ep-7",
            time_to_full=3 * 3600 + 20 * 60,
            growth_rate=4096.0,
            autostart_mode="boot",
            last_action="hook:page enter_critical ok",
            last_action_at=NOW - 90,
        ),
        # 92 % full, but its free-space rule says ok; it shrinks.
        (HOST_A, "nfs"): PoolPolicy(level=0, growth_rate=-12.5),
        # Stopped, and poolwatch gave up starting it.
        (HOST_A, "backup"): PoolPolicy(
            autostart_mode="enforce",
            autostart_failures=5,
            autostart_gave_up=True,
            last_error=HOSTILE_ERROR,
            last_action="start_pool failed",
            last_action_at=NOW - 300,
        ),
        # Waiting for its mount, with failed starts before.
        (HOST_A, HOSTILE): PoolPolicy(
            autostart_mode="enforce",
            autostart_failures=2,
            next_attempt_at=NOW + 52,
            last_error="Cannot access storage",
            not_mounted=True,
        ),
        # Warning; the forecast has too few samples yet.
        (HOST_B, "images"): PoolPolicy(level=1, episode="ep-3"),
    }


def policy_inventory(clock: FakeClock | None = None) -> Inventory:
    """``sample_inventory()`` with ``sample_policies()``."""
    inventory = sample_inventory(clock)
    for (key, pool_name), policy in sample_policies().items():
        inventory.set_policy(key, pool_name, policy)
    return inventory


def policy_telemetry(clock: FakeClock | None = None) -> Telemetry:
    """``sample_telemetry()`` with the two policy actions taken on ``policy_inventory()``."""
    telemetry = sample_telemetry(clock)
    telemetry.record_action(HOST_A, "backup", "start_pool", "failed", detail=HOSTILE_ERROR)
    telemetry.record_action(HOST_A, "default", "hook:page", "ok", detail="enter_critical")
    return telemetry
