"""The JSON documents poolwatch gives out about its pools: their shape and how they are built.

One place for every reader: /api/v1/pools and /api/v1/events (:mod:`poolwatch.web`), the pool
snapshot a hook's webhook body carries (:mod:`poolwatch.actuator`), and the fields
``poolwatch status`` reads back (:mod:`poolwatch.status`). Scripts read these too, so field names
and order are stable: fields are listed in the order they appear, names follow the model (sizes
in bytes, times in unix seconds). Everything here is a pure function of snapshots.

Only the standard library and :mod:`poolwatch.model` are imported at run time, so
``poolwatch status`` can use this module and still start fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple, NotRequired, TypedDict

from poolwatch.model import (
    FilesystemStat,
    HostSnapshot,
    PoolGuest,
    PoolPolicy,
    PoolSnapshot,
    VolumeScan,
)

if TYPE_CHECKING:
    from poolwatch.inventory import Inventory
    from poolwatch.telemetry import Activity

# Where the daemon serves the pools document; `poolwatch status` asks there.
POOLS_PATH = "/api/v1/pools"

# Threshold levels by PoolPolicy.level, as poolwatch_pool_threshold_level counts them.
LEVEL_NAMES = ("ok", "warning", "critical")


class FilesystemDoc(TypedDict):
    avail_bytes: int
    size_bytes: int
    device: str


class VolumeDoc(TypedDict):
    name: str
    type: int
    capacity: int
    allocation: int
    physical: int | None


class VolumeSummaryDoc(TypedDict):
    count: int  # every volume of the pool
    capacity_bytes: int
    allocation_bytes: int
    exported: int  # volumes with their own metric series (the rest exceed the cap)
    scanned_at: float
    list: NotRequired[list[VolumeDoc]]  # only with ?volumes=1


class AutostartDoc(TypedDict):
    mode: str  # off, boot, enforce
    failures: int  # failed starts in a row
    gave_up: bool  # max_attempts reached: no more starts until the pool runs or the rule changes
    next_attempt_at: float | None  # while retrying
    last_error: str | None  # libvirt's message of the last failed start


class PolicyDoc(TypedDict):
    level: str | None  # "ok", "warning", "critical"; null without a threshold rule
    level_code: int | None  # 0, 1, 2, as in poolwatch_pool_threshold_level
    episode: str | None  # the open alarm episode
    time_to_full_seconds: float | None  # null while the pool is not growing or data is short
    growth_bytes_per_second: float | None  # null until the forecast has enough samples
    autostart: AutostartDoc | None  # null without an autostart rule
    not_mounted: bool | None  # null without require_mount
    last_action: str | None  # e.g. "start_pool ok", "hook:page enter_critical ok"
    last_action_at: float | None


class GuestDoc(TypedDict):
    name: str
    uuid: str
    state: str  # running, paused, paused_io_error, shut_off
    disks: list[str]  # the guest's disk targets (vda, ...) in this pool
    io_error: str  # why one of those disks paused the guest: "enospc", "eio", ...; else ""
    changed_at: float  # when poolwatch saw its state change last


class PoolDoc(TypedDict):
    host: str
    name: str
    uuid: str
    type: str
    target_path: str
    source: str
    state: str  # "running", "inactive", ...
    state_code: int  # virStoragePoolState, as in libvirt_storage_pool_state
    active: bool
    persistent: bool
    autostart: bool
    # Null unless active, as /metrics leaves them out: libvirt keeps stale figures for a
    # stopped pool, and the watcher's last filesystem stat and volume scan are as old.
    capacity: int | None
    allocation: int | None
    available: int | None
    # What a guest can still write, what free-space limits ("< 20GiB") and the forecast use: the
    # smaller of available and the filesystem's f_bavail.
    free_bytes: int | None
    # allocation / capacity, what ratio limits ("85%") compare and fill bars show.
    fill_ratio: float | None
    filesystem: FilesystemDoc | None  # null also where the target cannot be measured
    volumes: VolumeSummaryDoc | None  # null also before the first scan
    last_refresh: float | None
    read_at: float
    policy: PolicyDoc | None  # what the policies say; null when they say nothing on the pool
    guests: list[GuestDoc]  # guests with a disk in the pool, by name


class HostDoc(TypedDict):
    key: str  # the connection's configured name, or its URI
    name: str
    uri: str
    up: bool
    synced: bool
    last_poll_success: float | None
    pools: list[PoolDoc]


class PoolsDoc(TypedDict):
    generation: int  # changes whenever anything in the inventory changes
    hosts: list[HostDoc]


class EventDoc(TypedDict):
    at: float
    host: str
    kind: str
    pool: str | None
    detail: str
    action: str | None  # kind "action" only, else null: start_pool, set_autostart, hook:NAME
    result: str | None  # kind "action" only, else null: ok, failed, timeout, dropped, dry_run
    guest: str | None  # guest events (guest_paused, guest_resumed) and guest actions


class EventsDoc(TypedDict):
    events: list[EventDoc]  # newest first


def pools_document(inventory: Inventory, *, with_volumes: bool = False) -> PoolsDoc:
    return pools_document_of(snapshot_of(inventory), with_volumes=with_volumes)


class InventorySnapshot(NamedTuple):
    """What the pools document is built from, copied out of the inventory at one generation.

    The host and policy snapshots are immutable; only the mappings holding them change in the
    inventory, so a copy of those is enough to build the document in another thread.
    """

    generation: int
    hosts: Mapping[str, HostSnapshot]
    policies: Mapping[str, Mapping[str, PoolPolicy]]


def snapshot_of(inventory: Inventory) -> InventorySnapshot:
    """A copy of the inventory's mappings: cheap (one entry per host), on the loop thread."""
    hosts = dict(inventory.hosts)
    return InventorySnapshot(
        inventory.generation, hosts, {key: dict(inventory.policies(key)) for key in hosts}
    )


def pools_document_of(snapshot: InventorySnapshot, *, with_volumes: bool = False) -> PoolsDoc:
    return {
        "generation": snapshot.generation,
        "hosts": [
            _host_doc(key, host, snapshot.policies[key], with_volumes=with_volumes)
            for key, host in snapshot.hosts.items()
        ],
    }


def events_document(activity: Iterable[Activity], *, limit: int) -> EventsDoc:
    """``activity`` oldest first, as :meth:`Telemetry.activity` returns it."""
    newest_first = list(activity)[::-1][:limit]
    return {
        "events": [
            {
                "at": a.at,
                "host": a.host,
                "kind": a.kind,
                "pool": a.pool,
                "detail": a.detail,
                "action": a.action,
                "result": a.result,
                "guest": a.guest,
            }
            for a in newest_first
        ]
    }


def _host_doc(
    key: str, host: HostSnapshot, policies: Mapping[str, PoolPolicy], *, with_volumes: bool
) -> HostDoc:
    pools = host.pools
    return host_document(
        key,
        host,
        pools=[
            pool_document(
                pools[name],
                with_volumes=with_volumes,
                policy=policies.get(name),
                guests=host.pool_guests.get(name, ()),
            )
            for name in sorted(pools)
        ],
    )


def host_document(key: str, host: HostSnapshot, *, pools: list[PoolDoc]) -> HostDoc:
    """A host's entry with the given pool entries (by name), its last field."""
    return {
        "key": key,
        "name": host.name,
        "uri": host.uri,
        "up": host.up,
        "synced": host.synced,
        "last_poll_success": host.last_poll_success,
        "pools": pools,
    }


def pool_document(
    pool: PoolSnapshot,
    *,
    with_volumes: bool,
    policy: PoolPolicy | None = None,
    guests: tuple[PoolGuest, ...] = (),
) -> PoolDoc:
    active = pool.active
    # What /metrics leaves out for a stopped pool, this leaves out too (see PoolDoc).
    fs = pool.filesystem if active else None
    scan = pool.volumes if active else None
    return {
        "host": pool.host,
        "name": pool.name,
        "uuid": pool.uuid,
        "type": pool.type,
        "target_path": pool.target_path,
        "source": pool.source,
        "state": pool.state.name.lower(),
        "state_code": int(pool.state),
        "active": active,
        "persistent": pool.persistent,
        "autostart": pool.autostart,
        "capacity": pool.capacity if active else None,
        "allocation": pool.allocation if active else None,
        "available": pool.available if active else None,
        "free_bytes": pool.free_bytes if active else None,
        "fill_ratio": pool.allocation / pool.capacity if active and pool.capacity > 0 else None,
        "filesystem": None if fs is None else _filesystem_doc(fs),
        "volumes": None if scan is None else _volumes_doc(scan, with_volumes),
        "last_refresh": pool.last_refresh,
        "read_at": pool.read_at,
        "policy": None if policy is None else policy_document(policy),
        "guests": [guest_document(guest) for guest in guests],
    }


def guest_document(guest: PoolGuest) -> GuestDoc:
    return {
        "name": guest.name,
        "uuid": guest.uuid,
        "state": guest.state.value,
        "disks": list(guest.disks),
        "io_error": guest.io_error,
        "changed_at": guest.changed_at,
    }


def hook_snapshot(pool: PoolSnapshot, guests: tuple[PoolGuest, ...] = ()) -> PoolDoc:
    """The pool as a hook event describes it (the webhook body's ``snapshot``): its entry in
    the pools document with its guests, without the volume list and the policies' view."""
    return pool_document(pool, with_volumes=False, guests=guests)


def policy_document(policy: PoolPolicy) -> PolicyDoc:
    level, mode = policy.level, policy.autostart_mode
    return {
        "level": None if level is None else level_name(level),
        "level_code": level,
        "episode": policy.episode,
        "time_to_full_seconds": _finite(policy.time_to_full),
        "growth_bytes_per_second": _finite(policy.growth_rate),
        "autostart": None if mode is None else _autostart_doc(mode, policy),
        "not_mounted": policy.not_mounted,
        "last_action": policy.last_action,
        "last_action_at": policy.last_action_at,
    }


def level_name(level: int) -> str:
    """The name of a threshold level (0 ok, 1 warning, 2 critical); beyond 2 is critical."""
    return LEVEL_NAMES[min(max(level, 0), len(LEVEL_NAMES) - 1)]


def _autostart_doc(mode: str, policy: PoolPolicy) -> AutostartDoc:
    return {
        "mode": mode,
        "failures": policy.autostart_failures,
        "gave_up": policy.autostart_gave_up,
        "next_attempt_at": policy.next_attempt_at,
        "last_error": policy.last_error,
    }


def _finite(value: float | None) -> float | None:
    # JSON has no Infinity or NaN; a forecast that produced one has no answer to give.
    return value if value is not None and math.isfinite(value) else None


def _filesystem_doc(fs: FilesystemStat) -> FilesystemDoc:
    return {"avail_bytes": fs.avail_bytes, "size_bytes": fs.size_bytes, "device": fs.device}


def _volumes_doc(scan: VolumeScan, with_list: bool) -> VolumeSummaryDoc:
    doc: VolumeSummaryDoc = {
        "count": scan.count,
        "capacity_bytes": scan.capacity_bytes,
        "allocation_bytes": scan.allocation_bytes,
        "exported": len(scan.volumes),
        "scanned_at": scan.scanned_at,
    }
    if with_list:
        doc["list"] = [
            {
                "name": v.name,
                "type": v.type,
                "capacity": v.capacity,
                "allocation": v.allocation,
                "physical": v.physical,
            }
            for v in scan.volumes
        ]
    return doc
