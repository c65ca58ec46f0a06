"""Blocking reads of pools and volumes on an open connection; run in executor workers only.

Each function makes as few RPCs as it can: the pool flags of every pool come from two
filtered listAllStoragePools() calls instead of two calls per pool, and the XML description
of a pool (its labels) is read once per definition, not once per poll. The functions that go
through many pools or volumes take a ``give_way`` event and end early when it is set, so that
one executor job never holds an event's re-read up for more than one pool or volume.
"""

from __future__ import annotations

import html
import re
import threading
from dataclasses import dataclass
from typing import Any

import libvirt

from poolwatch.model import PoolState, VolumeSnapshot
from poolwatch.poolxml import PoolDescription, parse_pool_xml
from poolwatch.source import PoolReading, VolumeDescription


def _names(conn: Any, flags: int) -> set[str]:
    return {pool.name() for pool in conn.listAllStoragePools(flags)}


def _state(value: int) -> PoolState:
    try:
        return PoolState(value)
    except ValueError:  # a state newer than this code: report it as inaccessible
        return PoolState.INACCESSIBLE


# States in which a pool runs: libvirt lists its volumes. BUILDING is "not available".
_RUNNING_STATES = frozenset({PoolState.RUNNING, PoolState.DEGRADED, PoolState.INACCESSIBLE})


def _reading(
    pool: Any, description: PoolDescription, *, persistent: bool, autostart: bool
) -> PoolReading:
    # Whether the pool runs comes from info()'s state, not from a call of its own (isActive(),
    # the ACTIVE listing): libvirt derives both from the same flag, and two calls straddling a
    # start or a stop gave a reading "running" and inactive at once (measured while a pool was
    # stopped and started back to back), which hid the next stop until a full re-read.
    code, capacity, allocation, available = pool.info()
    state = _state(code)
    active = state in _RUNNING_STATES
    count = None
    if active:
        try:
            count = int(pool.numOfVolumes())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                raise
            active, state = False, PoolState.INACTIVE  # stopped since info()
    return PoolReading(
        name=pool.name(),
        uuid=description.uuid or pool.UUIDString(),
        type=description.type,
        target_path=description.target_path,
        source=description.source,
        state=state,
        active=active,
        persistent=persistent,
        autostart=autostart,
        capacity=int(capacity),
        allocation=int(allocation),
        available=int(available),
        volume_count=count,
    )


@dataclass(frozen=True, slots=True)
class PoolListing:
    """Every pool of the host, with its flags: the three listAllStoragePools() calls."""

    pools: list[Any]  # virStoragePool objects: name() and UUIDString() need no RPC
    persistent: frozenset[str]
    autostart: frozenset[str]


def list_pools(conn: Any) -> PoolListing:
    return PoolListing(
        pools=list(conn.listAllStoragePools(0)),
        persistent=frozenset(_names(conn, libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_PERSISTENT)),
        autostart=frozenset(_names(conn, libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_AUTOSTART)),
    )


def read_pools(
    _conn: Any,
    listing: PoolListing,
    pools: list[Any],
    descriptions: dict[str, PoolDescription],
    give_way: threading.Event | None = None,
) -> tuple[list[PoolReading], dict[str, PoolDescription], int]:
    """Readings of ``pools`` (a part of ``listing.pools``), two or three RPCs per pool.

    ``descriptions`` caches parsed XML by UUID across calls; the descriptions of the pools read
    come back with the readings. Stops early once ``give_way`` is set (an urgent call, an
    event's re-read, waits for the connection) and returns how many pools it went through, so
    the caller queues the rest.
    """
    readings = []
    kept = {}
    done = 0
    for pool in pools:
        if give_way is not None and give_way.is_set() and done:
            break
        done += 1
        uuid = pool.UUIDString()
        name = pool.name()
        try:
            description = descriptions.get(uuid) or parse_pool_xml(pool.XMLDesc(0))
            reading = _reading(
                pool,
                description,
                persistent=name in listing.persistent,
                autostart=name in listing.autostart,
            )
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                continue  # undefined while we were reading: the event follows
            raise
        kept[uuid] = description
        readings.append(reading)
    return readings, kept, done


def read_pool(
    conn: Any,
    name: str,
    flags: tuple[bool, bool] | None = None,
    description: PoolDescription | None = None,
) -> PoolReading:
    """One pool, two to six RPCs: ``flags`` (persistent, autostart) and ``description``,
    where given, are taken as they are (the caller knows nothing since can have changed them)
    instead of asked for again."""
    pool = conn.storagePoolLookupByName(name)
    if flags is None:
        flags = bool(pool.isPersistent()), bool(pool.autostart())
    return _reading(
        pool,
        description or parse_pool_xml(pool.XMLDesc(0)),
        persistent=flags[0],
        autostart=flags[1],
    )


def refresh_pool(conn: Any, name: str) -> None:
    conn.storagePoolLookupByName(name).refresh(0)


def start_flagged_pool(conn: Any, name: str) -> bool:
    """Start the pool if its autostart flag is still set; False, nothing done, if it is not.

    The flag sends no event, so poolwatch's copy may be older than an operator's
    ``virsh pool-autostart --disable``, the way to keep a pool down: asked right before the
    start, that wish is never overridden by a stale copy.
    """
    pool = conn.storagePoolLookupByName(name)
    if not pool.autostart():
        return False
    # Never VIR_STORAGE_POOL_CREATE_WITH_BUILD: building someone else's pool runs mkdir/mkfs.
    try:
        pool.create(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
            raise  # 55 is "already active": someone started it first, which is what we wanted
    return True


def set_autostart(conn: Any, name: str, enabled: bool) -> None:
    conn.storagePoolLookupByName(name).setAutostart(1 if enabled else 0)


def list_volumes(conn: Any, name: str) -> list[Any]:
    return list(conn.storagePoolLookupByName(name).listAllVolumes(0))


# A volume's figures as libvirt formats its XML description (virStorageVolDefFormat): the
# type attribute, then after name, key and source, capacity and allocation, and physical where
# the driver filled it in with a size other than 0. Text from outside (a volume's name, a path)
# is escaped in that document, so it cannot forge these tags.
_VOLUME_XML = re.compile(
    r"<volume type='(?P<type>\w+)'>.*?"
    r"<capacity unit='bytes'>(?P<capacity>\d+)</capacity>\s*"
    r"<allocation unit='bytes'>(?P<allocation>\d+)</allocation>\s*"
    r"(?:<physical unit='bytes'>(?P<physical>\d+)</physical>)?",
    re.DOTALL,
)
# virStorageVolType by its name in the XML
_VOLUME_TYPES = {"file": 0, "block": 1, "dir": 2, "network": 3, "netdir": 4, "ploop": 5}


# The volume's file or device and its format, from the <target> element after the figures.
_TARGET_XML = re.compile(
    r"<target>\s*<path>(?P<path>[^<]*)</path>\s*(?:<format type='(?P<format>[^']*)'/>)?"
)


def describe_volumes(
    _conn: Any, volumes: list[Any], give_way: threading.Event | None = None
) -> tuple[list[VolumeDescription], int]:
    """Capacity, allocation, physical size, path and format of each volume, one RPC per volume.

    One XMLDesc() instead of info() plus infoFlags(PHYSICAL): libvirt refreshes the volume
    from its file or device for either, and the description carries all three figures.
    Measured against a private libvirtd: half the client CPU and half the wall time per volume.
    Stops early once ``give_way`` is set (an urgent call is waiting for the connection) and
    returns how many volumes it went through, so the caller queues the rest.
    """
    out = []
    done = 0
    for vol in volumes:
        if give_way is not None and give_way.is_set() and done:
            break
        done += 1
        try:
            out.append(_describe_volume(vol))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                continue  # deleted since the listing, or removed behind libvirt's back
            raise
    return out, done


# Above this many names, one listing of the pool's volumes is cheaper than a lookup per name,
# and keeps the job short: measured at 5 pools x 6,000 volumes, the lookups of a restarted
# pool's 6,000 volumes were one job of 2-4 s that an event's re-read had to wait behind.
LOOK_UP_BY_LISTING = 50


def look_up_volumes(conn: Any, name: str, names: list[str]) -> list[Any]:
    """The volume objects of ``names`` in one pool; names no longer there are left out."""
    pool = conn.storagePoolLookupByName(name)
    if len(names) > LOOK_UP_BY_LISTING:
        wanted = set(names)
        return [volume for volume in pool.listAllVolumes(0) if volume.name() in wanted]
    found = []
    for volume in names:
        try:
            found.append(pool.storageVolLookupByName(volume))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise
    return found


def list_volume_names(
    conn: Any, names: list[str], give_way: threading.Event | None = None
) -> tuple[dict[str, list[str] | libvirt.libvirtError], int]:
    """The volume names of each pool of ``names``, or the error its listing failed with.

    Two RPCs per pool (name() is local to each volume object). Stops early once ``give_way``
    is set and returns how many pools it went through, like ``describe_volumes``.
    """
    found: dict[str, list[str] | libvirt.libvirtError] = {}
    done = 0
    for name in names:
        if give_way is not None and give_way.is_set() and done:
            break
        done += 1
        try:
            volumes = conn.storagePoolLookupByName(name).listAllVolumes(0)
        except libvirt.libvirtError as exc:
            found[name] = exc
            continue
        found[name] = [vol.name() for vol in volumes]
    return found, done


def _describe_volume(vol: Any) -> VolumeDescription:
    xml = vol.XMLDesc(0)
    target = _TARGET_XML.search(xml)
    path = "" if target is None else html.unescape(target["path"])
    fmt = "" if target is None or target["format"] is None else target["format"]
    found = _VOLUME_XML.search(xml)
    if found is None or found["type"] not in _VOLUME_TYPES:
        # A description this code does not know (a newer libvirt): what info() tells.
        vtype, capacity, allocation = vol.info()
        snapshot = VolumeSnapshot(vol.name(), int(vtype), int(capacity), int(allocation), None)
        return VolumeDescription(snapshot, path, fmt)
    physical = found["physical"]
    snapshot = VolumeSnapshot(
        name=vol.name(),
        type=_VOLUME_TYPES[found["type"]],
        capacity=int(found["capacity"]),
        allocation=int(found["allocation"]),
        physical=None if physical is None else int(physical),
    )
    return VolumeDescription(snapshot, path, fmt)
