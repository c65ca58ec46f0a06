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
