"""The pool-level and volume families of §3 of the spec, built pool by pool.

Each pool's part of these families is rebuilt only when what it shows changed (its token), so
an info poll that reads every pool again with the same figures, or an event on one pool,
leaves the other pools' samples, and thus their encoded text, as they were.
"""

from __future__ import annotations

from collections.abc import Hashable

from prometheus_client.samples import Sample

from poolwatch.exporter.parts import FamilySpec, PartRows
from poolwatch.model import PoolSnapshot, VolumeScan

POOL_LABELS = ("host", "storage_pool")
INFO_LABELS = ("host", "storage_pool", "uuid", "type", "target_path", "source", "filesystem")
VOLUME_LABELS = ("host", "storage_pool", "volume")

# In page order; the indices below name them in pool_part.
POOL_FAMILIES = (
    FamilySpec(
        "libvirt_storage_pool_state",
        "Storage pool state: 0 inactive, 1 building, 2 running, 3 degraded, 4 inaccessible.",
        POOL_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_pool_capacity_bytes",
        "Size of the storage pool in bytes as libvirt reports it; running pools only.",
        POOL_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_pool_allocation_bytes",
        "Bytes allocated in the storage pool as of its last refresh; running pools only.",
        POOL_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_pool_available_bytes",
        "Free bytes in the storage pool as libvirt reports it (includes root-reserved blocks "
        "on filesystems); running pools only.",
        POOL_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_pool_filesystem_avail_bytes",
        "Bytes a non-root writer such as QEMU can still write to the filesystem under the "
        "pool's target (statvfs f_bavail); local running pools only.",
        POOL_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_pool_filesystem_size_bytes",
        "Size in bytes of the filesystem under the pool's target (statvfs); local running "
        "pools only.",
        POOL_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_pool_info",
        "Always 1; labels describe the pool. Pools with the same filesystem label share one "
        "filesystem.",
        INFO_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_pool_active",
        "Whether the storage pool is running: 1 yes, 0 no.",
        POOL_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_pool_persistent",
        "Whether the storage pool is persistent (defined, not transient): 1 yes, 0 no.",
        POOL_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_pool_autostart",
        "Whether libvirt starts the storage pool at boot: 1 yes, 0 no.",
        POOL_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_pool_volumes",
        "Number of volumes in the storage pool as of the last volume scan.",
        POOL_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_pool_volumes_capacity_bytes",
        "Sum of the capacities of all volumes in the pool: the space promised to guests "
        "(thin overcommit = this / pool capacity).",
        POOL_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_pool_volumes_allocation_bytes",
        "Sum of the bytes allocated by all volumes in the pool.",
        POOL_LABELS,
    ),
    FamilySpec(
        "poolwatch_volumes_unexported",
        "Volumes of the pool left out of the libvirt_storage_volume_* series by the "
        "max_volumes_per_pool cap.",
        POOL_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_pool_last_refresh_timestamp_seconds",
        "Unix time of the last successful refresh of the pool, by poolwatch or anyone else.",
        POOL_LABELS,
    ),
)
(
    _STATE,
    _CAPACITY,
    _ALLOCATION,
    _AVAILABLE,
    _FS_AVAIL,
    _FS_SIZE,
    _INFO,
    _ACTIVE,
    _PERSISTENT,
    _AUTOSTART,
    _VOLUMES,
    _VOLUMES_CAPACITY,
    _VOLUMES_ALLOCATION,
    _UNEXPORTED,
    _LAST_REFRESH,
) = range(len(POOL_FAMILIES))


def pool_token(pool: PoolSnapshot) -> Hashable:
    """Everything of the snapshot that pool_part shows: a new snapshot with the same token
    (read_at and scanned_at moved, nothing else) keeps the pool's samples."""
    fs = pool.filesystem
    scan = pool.volumes
    return (
        pool.uuid,
        pool.type,
        pool.target_path,
        pool.source,
        pool.state,
        pool.active,
        pool.persistent,
        pool.autostart,
        pool.capacity,
        pool.allocation,
        pool.available,
        None if fs is None else (fs.device, fs.avail_bytes, fs.size_bytes),
        pool.last_refresh,
        None
        if scan is None
        else (scan.count, scan.capacity_bytes, scan.allocation_bytes, len(scan.volumes)),
    )


def pool_part(rows: PartRows, host_name: str, name: str, pool: PoolSnapshot) -> None:
    labels = (host_name, name)
    rows.add(_STATE, labels, pool.state)
    fs = pool.filesystem
    info = (host_name, name, pool.uuid, pool.type, pool.target_path, pool.source)
    rows.add(_INFO, (*info, "" if fs is None else fs.device), 1)
    rows.add(_ACTIVE, labels, pool.active)
    rows.add(_PERSISTENT, labels, pool.persistent)
    rows.add(_AUTOSTART, labels, pool.autostart)
    if pool.last_refresh is not None:
        rows.add(_LAST_REFRESH, labels, pool.last_refresh)
    if not pool.active:
        return  # libvirt's figures for a stopped pool are stale
    rows.add(_CAPACITY, labels, pool.capacity)
    rows.add(_ALLOCATION, labels, pool.allocation)
    rows.add(_AVAILABLE, labels, pool.available)
    if fs is not None:
        rows.add(_FS_AVAIL, labels, fs.avail_bytes)
        rows.add(_FS_SIZE, labels, fs.size_bytes)
    scan = pool.volumes
    if scan is not None:
        rows.add(_VOLUMES, labels, scan.count)
        rows.add(_VOLUMES_CAPACITY, labels, scan.capacity_bytes)
        rows.add(_VOLUMES_ALLOCATION, labels, scan.allocation_bytes)
        rows.add(_UNEXPORTED, labels, scan.count - len(scan.volumes))


VOLUME_FAMILIES = (
    FamilySpec(
        "libvirt_storage_volume_capacity_bytes",
        "Virtual size of the volume in bytes (what the guest sees).",
        VOLUME_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_volume_allocation_bytes",
        "Bytes the volume occupies in the pool.",
        VOLUME_LABELS,
    ),
    FamilySpec(
        "libvirt_storage_volume_physical_bytes",
        "Physical size of the volume's file or device in bytes, where the driver reports it "
        "(libvirt leaves out a size of 0).",
        VOLUME_LABELS,
    ),
)


def volumes_token(scan: VolumeScan | None) -> Hashable:
    # The watcher keeps the tuple of a rescan that found nothing changed, so its identity says
    # whether the volumes changed, without comparing thousands of them. The cache holds the
    # scan (and so the tuple) while its token is kept, so the id cannot be reused meanwhile.
    return None if scan is None else id(scan.volumes)


def volumes_part(rows: PartRows, host_name: str, pool_name: str, scan: VolumeScan | None) -> None:
    """A running pool's volumes; nothing for a stopped or not yet scanned pool."""
    if scan is None:
        return
    # This loop produces most of the page (thousands of volumes) and runs on the event loop:
    # a pool's samples are built once and reused by every collect until a scan finds its
    # volumes changed (measured: building them took ~70% of the loop's busy time under scrapes
    # at 10,000 volumes). The samples are the ones add_metric would make.
    capacity, allocation, physical = rows.lists
    capacity_name, allocation_name, physical_name = (spec.name for spec in VOLUME_FAMILIES)
    for volume in scan.volumes:
        # One labels dict serves the three samples of a volume; encoders only read it.
        labels = {"host": host_name, "storage_pool": pool_name, "volume": volume.name}
        capacity.append(Sample(capacity_name, labels, volume.capacity))
        allocation.append(Sample(allocation_name, labels, volume.allocation))
        if volume.physical is not None:
            physical.append(Sample(physical_name, labels, volume.physical))
