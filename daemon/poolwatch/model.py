"""Plain, immutable records of what poolwatch knows about libvirt storage.

Everything above the libvirt adapter (inventory, exporter, web, policies) works on these
dataclasses only, so it can be tested without libvirt.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class PoolState(enum.IntEnum):
    """virStoragePoolState, exported as libvirt_storage_pool_state."""

    INACTIVE = 0
    BUILDING = 1
    RUNNING = 2
    DEGRADED = 3
    INACCESSIBLE = 4


class PoolEventKind(enum.StrEnum):
    """Storage pool events, named as in libvirt_storage_pool_events_total{event=...}."""

    DEFINED = "defined"
    UNDEFINED = "undefined"
    STARTED = "started"
    STOPPED = "stopped"
    CREATED = "created"
    DELETED = "deleted"
    REFRESHED = "refreshed"


@dataclass(frozen=True, slots=True)
class VolumeSnapshot:
    name: str
    type: int  # virStorageVolType: 0 file, 1 block, 2 dir, 3 network, 4 netdir, 5 ploop
    capacity: int
    allocation: int
    physical: int | None  # None where the driver cannot tell


@dataclass(frozen=True, slots=True)
class FilesystemStat:
    """statvfs of a pool's local target: what a non-root writer such as QEMU can still use."""

    avail_bytes: int  # f_bavail * f_frsize
    size_bytes: int  # f_blocks * f_frsize
    device: str  # "major:minor" of the filesystem, so alerts can tell shared filesystems apart
    free_bytes: int = 0  # f_bfree * f_frsize, root-reserved blocks included (libvirt's "available")


@dataclass(frozen=True, slots=True)
class VolumeScan:
    """The volumes of one active pool as of one scan."""

    count: int  # every volume, also those beyond the export cap
    capacity_bytes: int  # sums over every volume
    allocation_bytes: int
    volumes: tuple[VolumeSnapshot, ...]  # sorted by name, at most max_volumes_per_pool
    scanned_at: float  # unix time


def volume_scan(volumes: list[VolumeSnapshot], limit: int, scanned_at: float) -> VolumeScan:
    """A scan of every volume of a pool: sums over all, at most ``limit`` listed by name."""
    volumes.sort(key=lambda v: v.name)
    return VolumeScan(
        count=len(volumes),
        capacity_bytes=sum(v.capacity for v in volumes),
        allocation_bytes=sum(v.allocation for v in volumes),
        volumes=tuple(volumes[:limit]),
        scanned_at=scanned_at,
    )


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """One pool of one host as last read.

    capacity/allocation/available are only current while the pool runs: libvirt keeps stale
    figures for inactive pools, so consumers must check ``active``.
    """

    host: str
    name: str
    uuid: str
    type: str  # pool XML @type: dir, fs, netfs, logical, iscsi, rbd, ...
    target_path: str
    source: str  # "host:dir", a device path, or a source name; "" when the pool has none
    state: PoolState
    active: bool
    persistent: bool
    autostart: bool
    capacity: int
    allocation: int
    available: int
    filesystem: FilesystemStat | None = None
    volumes: VolumeScan | None = None  # None until scanned, and for inactive pools
    last_refresh: float | None = None  # unix time of the last successful pool.refresh()
    # Whether the target path is a mount point, for dir pools on this host; None: not known.
    target_mounted: bool | None = None
    read_at: float = 0.0  # unix time this snapshot was read
    # capacity/allocation/available (and the volume figures) come from statvfs and stat() of
    # the target on this host rather than from libvirt's last refresh: see poolwatch.fastpath.
    fast_path: bool = False

    @property
    def free_bytes(self) -> int:
        """Space a guest can still write: the smaller of libvirt's and the filesystem's view."""
        if self.filesystem is None:
            return self.available
        return min(self.available, self.filesystem.avail_bytes)


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """A storage pool event as libvirt reported it."""

    host: str
    pool: str
    uuid: str
    kind: PoolEventKind
    at: float  # unix time it reached poolwatch


class GuestState(enum.StrEnum):
    """A guest's state as poolwatch_pool_guests{state=...} counts it."""

    RUNNING = "running"  # also blocked and shutting down: the guest still runs
    PAUSED = "paused"  # paused by an operator, a migration, a snapshot, power management
    PAUSED_IO_ERROR = "paused_io_error"  # paused by QEMU on a disk error: ENOSPC, EIO
    SHUT_OFF = "shut_off"  # defined but not running (also crashed)


class GuestEventKind(enum.StrEnum):
    """Domain events poolwatch follows, as /api/v1/events names them."""

    DEFINED = "guest_defined"
    UNDEFINED = "guest_undefined"
    STARTED = "guest_started"
    STOPPED = "guest_stopped"
    PAUSED = "guest_paused"
    RESUMED = "guest_resumed"
    DEVICE_CHANGED = "guest_device_changed"


@dataclass(frozen=True, slots=True)
class GuestDisk:
    """One disk of a guest, where its data lives: a pool volume or a path."""

    target: str  # the guest's device name: vda, sdb
    alias: str = ""  # libvirt's device alias (virtio-disk0) while the guest runs
    pool: str = ""  # <source pool= volume=> disks
    volume: str = ""
    path: str = ""  # <source file=> or <source dev=> disks


@dataclass(frozen=True, slots=True)
class GuestSnapshot:
    """One guest (libvirt domain, running or only defined) as last read."""

    name: str
    uuid: str
    state: GuestState
    disks: tuple[GuestDisk, ...]
    # Disks QEMU stopped the guest on, target -> reason ("enospc", "eio", "unspecified"),
    # while it is paused on an I/O error.
    io_errors: Mapping[str, str] = field(default_factory=dict)
    changed_at: float = 0.0  # unix time its state was last seen to change


@dataclass(frozen=True, slots=True)
class PoolGuest:
    """A guest as seen from one pool: which of its disks live there, and whether one of them
    stopped it."""

    name: str
    uuid: str
    state: GuestState
    disks: tuple[str, ...]  # the guest's targets (vda, ...) in this pool
    io_error: str  # the reason one of those disks paused the guest ("enospc"), else ""
    changed_at: float


def pool_of_disk(disk: GuestDisk, pools: Mapping[str, PoolSnapshot]) -> str | None:
    """The pool a disk lives in: named in its source, or the pool whose target holds its path
    (a dir, fs or netfs pool's files, a logical pool's /dev/VG/LV); None if in none."""
    if disk.pool:
        return disk.pool if disk.pool in pools else None
    if not disk.path:
        return None
    best: str | None = None
    best_len = -1
    for pool in pools.values():
        target = pool.target_path.rstrip("/")
        # The longest target wins: a pool nested in another pool's directory owns its files.
        if target and disk.path.startswith(target + "/") and len(target) > best_len:
            best, best_len = pool.name, len(target)
    return best


def guests_by_pool(
    pools: Mapping[str, PoolSnapshot], guests: Mapping[str, GuestSnapshot]
) -> dict[str, tuple[PoolGuest, ...]]:
    """Every pool's guests, sorted by name: the mapping the inventory keeps with each host."""
    found: dict[str, list[PoolGuest]] = {}
    for guest in guests.values():
        targets: dict[str, list[str]] = {}
        for disk in guest.disks:
            pool = pool_of_disk(disk, pools)
            if pool is not None:
                targets.setdefault(pool, []).append(disk.target)
        for pool, disks in targets.items():
            reason = next((guest.io_errors[d] for d in disks if d in guest.io_errors), "")
            if not reason and guest.state is GuestState.PAUSED_IO_ERROR and not guest.io_errors:
                reason = "unspecified"  # paused on an error libvirt did not attribute to a disk
            found.setdefault(pool, []).append(
                PoolGuest(
                    guest.name, guest.uuid, guest.state, tuple(disks), reason, guest.changed_at
                )
            )
    return {pool: tuple(sorted(entries, key=lambda g: g.name)) for pool, entries in found.items()}


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    """Everything known about one libvirt connection."""

    name: str  # the host label: connection name, or libvirt's hostname
    uri: str  # without credentials
    up: bool
    pools: Mapping[str, PoolSnapshot] = field(default_factory=dict)  # by pool name
    last_poll_success: float | None = None  # unix time of the last complete info poll
    synced: bool = False  # one full poll completed since start (readiness)
    connected_at: float | None = None  # unix time of the last (re)connect
    guests: Mapping[str, GuestSnapshot] = field(default_factory=dict)  # by uuid
    guests_synced: bool = False  # the guests were listed once since the last (re)connect
    # Derived from pools and guests by the inventory whenever either changes, never per read.
    pool_guests: Mapping[str, tuple[PoolGuest, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """What the policies currently say about one pool (for metrics, the API and the page)."""

    level: int | None = None  # threshold level 0 ok, 1 warning, 2 critical; None: no rule
    episode: str | None = None  # the open alarm episode
    time_to_full: float | None = None  # seconds, while the pool is growing
    growth_rate: float | None = None  # bytes per second, from the forecast
    autostart_mode: str | None = None  # off, boot, enforce; None: no rule
    autostart_failures: int = 0
    autostart_gave_up: bool = False
    next_attempt_at: float | None = None
    last_error: str | None = None
    not_mounted: bool | None = None  # None: no require_mount rule
    last_action: str | None = None  # e.g. "start_pool ok"
    last_action_at: float | None = None
    # The fill level over the last hour for the landing page's chart: (unix time, used /
    # capacity) points, oldest first, at most 60 (actuator/fill_history.py).
    fill_history: tuple[tuple[float, float], ...] = ()
