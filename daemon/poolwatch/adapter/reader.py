"""Blocking reads of pools and volumes on an open connection; run in executor workers only.

Each function makes as few RPCs as it can: the pool flags of every pool come from three
filtered listAllStoragePools() calls instead of three calls per pool, and the XML description
of a pool (its labels) is read once per definition, not once per poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import libvirt

from poolwatch.model import PoolState, VolumeScan, VolumeSnapshot
from poolwatch.poolxml import PoolDescription, parse_pool_xml
from poolwatch.source import PoolReading


def _names(conn: Any, flags: int) -> set[str]:
    return {pool.name() for pool in conn.listAllStoragePools(flags)}


def _state(value: int) -> PoolState:
    try:
        return PoolState(value)
    except ValueError:  # a state newer than this code: report it as inaccessible
        return PoolState.INACCESSIBLE


def _reading(
    pool: Any, description: PoolDescription, *, active: bool, persistent: bool, autostart: bool
) -> PoolReading:
    state, capacity, allocation, available = pool.info()
    count = None
    if active:
        try:
            count = int(pool.numOfVolumes())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                raise
            active = False  # stopped between the listing and this call
    return PoolReading(
        name=pool.name(),
        uuid=description.uuid or pool.UUIDString(),
        type=description.type,
        target_path=description.target_path,
        source=description.source,
        state=_state(state),
        active=active,
        persistent=persistent,
        autostart=autostart,
        capacity=int(capacity),
        allocation=int(allocation),
        available=int(available),
        volume_count=count,
    )


def read_pools(
    conn: Any, descriptions: dict[str, PoolDescription]
) -> tuple[list[PoolReading], dict[str, PoolDescription]]:
    """Every pool of the host; ``descriptions`` caches parsed XML by UUID across calls."""
    pools = conn.listAllStoragePools(0)
    active = _names(conn, libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
    persistent = _names(conn, libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_PERSISTENT)
    autostart = _names(conn, libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_AUTOSTART)
    readings = []
    kept = {}
    for pool in pools:
        uuid = pool.UUIDString()
        name = pool.name()
        try:
            description = descriptions.get(uuid) or parse_pool_xml(pool.XMLDesc(0))
            reading = _reading(
                pool,
                description,
                active=name in active,
                persistent=name in persistent,
                autostart=name in autostart,
            )
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                continue  # undefined while we were reading: the event follows
            raise
        kept[uuid] = description
        readings.append(reading)
    return readings, kept


def read_pool(conn: Any, name: str) -> PoolReading:
    pool = conn.storagePoolLookupByName(name)
    return _reading(
        pool,
        parse_pool_xml(pool.XMLDesc(0)),
        active=bool(pool.isActive()),
        persistent=bool(pool.isPersistent()),
        autostart=bool(pool.autostart()),
    )


def refresh_pool(conn: Any, name: str) -> None:
    conn.storagePoolLookupByName(name).refresh(0)


def start_pool(conn: Any, name: str) -> None:
    # Never VIR_STORAGE_POOL_CREATE_WITH_BUILD: building someone else's pool runs mkdir/mkfs.
    try:
        conn.storagePoolLookupByName(name).create(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
            raise  # 55 is "already active": someone started it first, which is what we wanted


def set_autostart(conn: Any, name: str, enabled: bool) -> None:
    conn.storagePoolLookupByName(name).setAutostart(1 if enabled else 0)


def list_volumes(conn: Any, name: str) -> list[Any]:
    return list(conn.storagePoolLookupByName(name).listAllVolumes(0))


@dataclass(frozen=True, slots=True)
class VolumeChunk:
    volumes: list[VolumeSnapshot]
    physical_unsupported: bool


class _PhysicalUnsupported(Exception):
    pass


def read_volumes(_conn: Any, volumes: list[Any], physical: bool) -> VolumeChunk:
    """info() of each volume, and its physical size where the driver can tell."""
    if physical:
        try:
            return VolumeChunk(_read_volumes(volumes, physical=True), physical_unsupported=False)
        except _PhysicalUnsupported:
            pass
    return VolumeChunk(_read_volumes(volumes, physical=False), physical_unsupported=physical)


def _read_volumes(volumes: list[Any], *, physical: bool) -> list[VolumeSnapshot]:
    out = []
    for vol in volumes:
        try:
            vtype, capacity, allocation = vol.info()
            size = None
            if physical:
                size = int(vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2])
        except libvirt.libvirtError as exc:
            code = exc.get_error_code()
            if code == libvirt.VIR_ERR_NO_STORAGE_VOL:
                continue  # deleted since the listing, or removed behind libvirt's back
            if physical and code in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
                raise _PhysicalUnsupported from exc
            raise
        out.append(VolumeSnapshot(vol.name(), int(vtype), int(capacity), int(allocation), size))
    return out


def summarize(volumes: list[VolumeSnapshot], limit: int, scanned_at: float) -> VolumeScan:
    volumes.sort(key=lambda v: v.name)
    return VolumeScan(
        count=len(volumes),
        capacity_bytes=sum(v.capacity for v in volumes),
        allocation_bytes=sum(v.allocation for v in volumes),
        volumes=tuple(volumes[:limit]),
        scanned_at=scanned_at,
    )
