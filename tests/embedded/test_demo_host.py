"""The shipped demo host loads in libvirt's test driver, and DemoFiller makes it move."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest
from defusedxml import ElementTree

import poolwatch.demo
from poolwatch.adapter.demo_filler import DEFAULT_FILL_PLANS, DEMO_PREFIX, DemoFiller, FillPlan
from poolwatch.adapter.eventloop import ensure_event_loop

GiB = 1024**3
MiB = 1024**2
HOST_XML = Path(poolwatch.demo.__file__).resolve().parent / "host.xml"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Expected:
    type: str
    target: str | None
    source: dict[str, str]
    volumes: int
    allocation: int
    volume_type: int


# What host.xml promises (its header comment documents the same table).
EXPECTED: dict[str, Expected] = {
    "images": Expected(
        "dir", "/var/lib/libvirt/images", {}, 8, 62 * GiB, libvirt.VIR_STORAGE_VOL_FILE
    ),
    "backups": Expected(
        "fs",
        "/srv/backups",
        {"device": "/dev/sdb1", "format": "ext4"},
        6,
        85 * GiB,
        libvirt.VIR_STORAGE_VOL_FILE,
    ),
    "isos": Expected(
        "netfs",
        "/var/lib/libvirt/isos",
        {"host": "nfs01.example.com", "dir": "/export/isos", "format": "nfs"},
        8,
        39492 * MiB,
        libvirt.VIR_STORAGE_VOL_FILE,
    ),
    "vg_guests": Expected(
        "logical",
        "/dev/vg_guests",
        {"device": "/dev/sdc", "name": "vg_guests", "format": "lvm2"},
        4,
        93 * GiB,
        libvirt.VIR_STORAGE_VOL_BLOCK,
    ),
    "san-lun": Expected(
        "iscsi",
        "/dev/disk/by-path",
        {"host": "san01.example.com", "device": "iqn.2024-03.com.example:san01.guests"},
        3,
        50 * GiB,
        libvirt.VIR_STORAGE_VOL_BLOCK,
    ),
    "ceph-rbd": Expected(
        "rbd",
        None,  # libvirt drops <target> of rbd pools
        {"host": "ceph-mon1.example.com", "name": "libvirt-pool"},
        5,
        28 * GiB,
        libvirt.VIR_STORAGE_VOL_NETWORK,
    ),
}


def _source(xml: str) -> tuple[str, str, str | None, dict[str, str]]:
    root = ElementTree.fromstring(xml)
    source: dict[str, str] = {}
    for key, path, attr in (
        ("host", "source/host", "name"),
        ("dir", "source/dir", "path"),
        ("device", "source/device", "path"),
        ("format", "source/format", "type"),
    ):
        node = root.find(path)
        if node is not None:
            source[key] = node.get(attr, "")
    name = root.findtext("source/name")
    if name:
        source["name"] = name
    return root.get("type", ""), root.findtext("uuid", ""), root.findtext("target/path"), source


@pytest.fixture(scope="module", autouse=True)
def _event_loop() -> None:
    ensure_event_loop()  # before any open(); also silences libvirt's stderr


@pytest.fixture
def conn() -> Iterator[Any]:
    connection = libvirt.open(f"test://{HOST_XML}")
    yield connection
    connection.close()


@dataclass
class Events:
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: list[tuple[str, str]] = field(default_factory=list)

    def add(self, pool: str, what: str) -> None:
        with self.lock:
            self.seen.append((pool, what))

    def snapshot(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.seen)

    def wait_for(self, check: Callable[[list[tuple[str, str]]], bool]) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if check(self.snapshot()):
                return True
            time.sleep(0.02)
        return check(self.snapshot())


LIFECYCLE = {
    libvirt.VIR_STORAGE_POOL_EVENT_DEFINED: "defined",
    libvirt.VIR_STORAGE_POOL_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_STORAGE_POOL_EVENT_STARTED: "started",
    libvirt.VIR_STORAGE_POOL_EVENT_STOPPED: "stopped",
}


@pytest.fixture
def events(conn: Any) -> Iterator[Events]:
    recorded = Events()

    def lifecycle(_conn: Any, pool: Any, event: int, _detail: int, _opaque: Any) -> None:
        recorded.add(pool.name(), LIFECYCLE.get(event, str(event)))

    def refresh(_conn: Any, pool: Any, _opaque: Any) -> None:
        recorded.add(pool.name(), "refreshed")

    ids = [
        conn.storagePoolEventRegisterAny(
            None, libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE, lifecycle, None
        ),
        conn.storagePoolEventRegisterAny(
            None, libvirt.VIR_STORAGE_POOL_EVENT_ID_REFRESH, refresh, None
        ),
    ]
    yield recorded
    for callback_id in ids:
        conn.storagePoolEventDeregisterAny(callback_id)


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - a reproducible demo scenario, not cryptography


def _allocations(conn: Any) -> dict[str, int]:
    return {pool.name(): pool.info()[2] for pool in conn.listAllStoragePools()}


def _volumes(conn: Any) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        found.update((pool.name(), vol.name()) for vol in pool.listAllVolumes(0))
    return found


# -- the shipped host ----------------------------------------------------------------------


def test_config_symlink_points_at_the_packaged_host() -> None:
    link = REPO / "config" / "demo-host.xml"
    assert link.is_symlink()
    assert link.resolve() == HOST_XML


def test_host_loads_with_the_documented_pools(conn: Any) -> None:
    pools = {pool.name(): pool for pool in conn.listAllStoragePools()}
    assert set(pools) == set(EXPECTED)
    uuids = set()
    for name, expected in EXPECTED.items():
        pool = pools[name]
        pool_type, uuid, target, source = _source(pool.XMLDesc(0))
        assert (pool_type, target, source) == (expected.type, expected.target, expected.source)
        assert uuid == pool.UUIDString()
        uuids.add(uuid)
        # Pools from a file: active, persistent, autostart off.
        assert (pool.isActive(), pool.isPersistent(), pool.autostart()) == (1, 1, 0)
        state, capacity, allocation, available = pool.info()
        assert state == libvirt.VIR_STORAGE_POOL_RUNNING
        assert capacity == 100 * GiB  # always, whatever the file says
        assert allocation == expected.allocation
        assert available == capacity - allocation
        volumes = pool.listAllVolumes(0)
        assert len(volumes) == expected.volumes == pool.numOfVolumes()
        infos = [vol.info() for vol in volumes]
        assert sum(info[2] for info in infos) == allocation
        assert {info[0] for info in infos} == {expected.volume_type}
        assert all(info[1] >= info[2] > 0 for info in infos)
        assert not any(vol.name().startswith(DEMO_PREFIX) for vol in volumes)
        assert all(vol.path() and "(null)" not in vol.path() for vol in volumes)
    assert len(uuids) == len(EXPECTED)
    fill = {name: pools[name].info()[2] / pools[name].info()[1] for name in pools}
    assert fill["backups"] == pytest.approx(0.85)
    assert fill["vg_guests"] == pytest.approx(0.93)
    assert len({round(ratio, 2) for ratio in fill.values()}) == len(fill)


def test_each_open_gets_a_private_copy(conn: Any) -> None:
    conn.storagePoolLookupByName("images").destroy()
    other = libvirt.open(f"test://{HOST_XML}")
    try:
        assert other.storagePoolLookupByName("images").isActive() == 1
    finally:
        other.close()


def test_test_driver_capabilities_the_demo_relies_on(conn: Any, events: Events) -> None:
    images = conn.storagePoolLookupByName("images")
    vol = images.listAllVolumes(0)[0]
    with pytest.raises(libvirt.libvirtError) as info:
        vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)
    assert info.value.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT

    base = images.info()[2]
    created = images.createXML(
        "<volume><name>probe.qcow2</name><capacity unit='GiB'>20</capacity>"
        "<allocation unit='GiB'>5</allocation></volume>",
        0,
    )
    assert images.info()[2] == base + 5 * GiB
    created.delete(0)
    assert images.info()[2] == base

    images.refresh(0)
    images.destroy()
    assert images.info()[0] == libvirt.VIR_STORAGE_POOL_INACTIVE
    with pytest.raises(libvirt.libvirtError) as info:
        images.numOfVolumes()
    assert info.value.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID
    inactive = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_INACTIVE)
    assert [pool.name() for pool in inactive] == ["images"]
    images.create(0)
    assert images.info()[2] == base  # volumes survive destroy/create in the test driver

    images.setAutostart(1)
    autostart = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_AUTOSTART)
    assert [pool.name() for pool in autostart] == ["images"]

    scratch = conn.storagePoolCreateXML(
        "<pool type='dir'><name>scratch</name><target><path>/tmp/x</path></target></pool>", 0
    )
    transient = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_TRANSIENT)
    assert [pool.name() for pool in transient] == ["scratch"]
    with pytest.raises(libvirt.libvirtError):
        scratch.setAutostart(1)
    scratch.destroy()
    with pytest.raises(libvirt.libvirtError) as info:
        conn.storagePoolLookupByName("scratch")
    assert info.value.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL

    wanted = [
        ("images", "refreshed"),
        ("images", "stopped"),
        ("images", "started"),
        ("scratch", "started"),
        ("scratch", "stopped"),
    ]
    assert events.wait_for(lambda seen: seen == wanted), events.snapshot()


# -- the filler ----------------------------------------------------------------------------


def test_sixty_steps_move_every_pool_metric(conn: Any, events: Events) -> None:
    filler = DemoFiller(_rng(1))
    original = _volumes(conn)
    history: list[dict[str, int]] = [_allocations(conn)]
    lines: list[str] = []
    for _ in range(60):
        lines.extend(filler.step(conn))
        history.append(_allocations(conn))
        # A volume the filler did not create never disappears (inactive pools list nothing).
        running = {p.name() for p in conn.listAllStoragePools() if p.isActive()}
        assert {v for v in original if v[0] in running} <= _volumes(conn)
    assert filler.steps_done == 60
    assert original <= _volumes(conn)
    assert not [line for line in lines if line.startswith("could not")], lines

    filled = [plan.pool for plan in DEFAULT_FILL_PLANS]
    for name in filled:
        series = [step[name] for step in history]
        ups = sum(b > a for a, b in itertools.pairwise(series))
        downs = sum(b < a for a, b in itertools.pairwise(series))
        assert ups >= 3, (name, series)
        assert downs >= 2, (name, series)
        peak = max(series) / (100 * GiB)
        assert 0.9 <= peak <= 0.951, (name, peak)
        assert min(series) >= history[0][name]  # drains only its own volumes
    for name in set(EXPECTED) - set(filled):
        assert {step[name] for step in history} == {history[0][name]}

    assert any(line.startswith("autostart of ") for line in lines)
    assert any(line.startswith("deleted ") for line in lines)
    assert any(" recovered to " in line for line in lines)

    def complete(seen: list[tuple[str, str]]) -> bool:
        stopped = {pool for pool, what in seen if what == "stopped" and pool in EXPECTED}
        started = {pool for pool, what in seen if what == "started" and pool in EXPECTED}
        transient = {pool for pool, what in seen if pool.startswith("scratch-")}
        refreshed = [pool for pool, what in seen if what == "refreshed"]
        return (
            len(stopped & started) >= 2
            and len(stopped) >= 3
            and len(refreshed) >= 8  # about every 5 steps
            and bool(transient)
        )

    assert events.wait_for(complete), events.snapshot()
    seen = events.snapshot()
    for pool, _ in seen:
        if pool.startswith("scratch-") and (pool, "stopped") in seen:
            with pytest.raises(libvirt.libvirtError):
                conn.storagePoolLookupByName(pool)  # a stopped transient pool vanishes


def test_first_minute_shows_every_kind_of_activity(conn: Any, events: Events) -> None:
    filler = DemoFiller(_rng(1))
    lines = [line for _ in range(30) for line in filler.step(conn)]
    for prefix in ("created ", "deleted ", "stopped pool ", "started pool ", "refreshed pool "):
        assert any(line.startswith(prefix) for line in lines), prefix
    assert any(line.startswith("created transient pool ") for line in lines)
    assert any(line.startswith("autostart of ") for line in lines)


@pytest.mark.parametrize("seed", [1, 7, 2024])
def test_same_seed_same_scenario(seed: int) -> None:
    runs = []
    for _ in range(2):
        connection = libvirt.open(f"test://{HOST_XML}")
        try:
            filler = DemoFiller(_rng(seed))
            runs.append([filler.step(connection) for _ in range(40)])
        finally:
            connection.close()
    assert runs[0] == runs[1]


def test_libvirt_errors_become_descriptions(conn: Any) -> None:
    plans = (
        FillPlan("images", ".qcow2", "qcow2", 1.0, 2.0, activity=1.0),
        FillPlan("no-such-pool", ".img", "raw", 1.0, 2.0, activity=1.0),
    )
    filler = DemoFiller(_rng(3), fill_plans=plans)
    conn.storagePoolLookupByName("images").destroy()
    lines = filler.step(conn)
    assert "images is not running: no volume activity" in lines
    assert any(line.startswith("could not fill/drain no-such-pool: ") for line in lines)

    conn.storagePoolLookupByName("images").create(0)
    lines = filler.step(conn)
    assert any(line.startswith("created images/demo-") for line in lines), lines


def test_only_demo_volumes_are_deleted(conn: Any) -> None:
    backups = conn.storagePoolLookupByName("backups")
    # Something else creates a volume while the filler runs: it must survive draining.
    backups.createXML(
        "<volume><name>db01-daily.qcow2</name><capacity unit='GiB'>200</capacity>"
        "<allocation unit='GiB'>2</allocation></volume>",
        0,
    )
    filler = DemoFiller(_rng(5))
    names_before = {vol.name() for vol in backups.listAllVolumes(0)}
    deleted: list[str] = []
    for _ in range(40):
        deleted += [line for line in filler.step(conn) if line.startswith("deleted backups/")]
    assert deleted
    assert all(line.startswith(f"deleted backups/{DEMO_PREFIX}") for line in deleted)
    names_after = {vol.name() for vol in backups.listAllVolumes(0)}
    assert names_before <= names_after


@pytest.mark.parametrize("seed", [1, 7, 2024])
def test_a_flagged_pool_is_stopped_early_and_left_to_autostart(seed: int, conn: Any) -> None:
    filler = DemoFiller(_rng(seed))
    lines: list[tuple[int, str]] = []
    for step in range(1, 6):
        lines += [(step, line) for line in filler.step(conn)]
    # The first toggle sets a flag (none is set at load) and the first stop takes that pool.
    (flagged,) = [line.split()[2] for _, line in lines if line.startswith("autostart of ")]
    stops = [(step, line) for step, line in lines if line.startswith("stopped pool ")]
    assert stops == [(5, stops[0][1])], lines
    assert stops[0][1].startswith(f"stopped pool {flagged} (autostart on: left to poolwatch")
    assert not conn.storagePoolLookupByName(flagged).isActive()

    # The filler leaves it down for a while, for an autostart rule to start it ...
    for _ in range(3):
        assert not [line for line in filler.step(conn) if line.startswith("start")]
    assert not conn.storagePoolLookupByName(flagged).isActive()
    # ... which is what poolwatch does; the filler then finds it running.
    conn.storagePoolLookupByName(flagged).create(0)
    later = [line for _ in range(3) for line in filler.step(conn)]
    assert f"pool {flagged} is already running again" in later, later


def test_without_an_autostart_rule_the_filler_starts_a_flagged_pool_itself(conn: Any) -> None:
    filler = DemoFiller(_rng(1))
    lines = [line for _ in range(12) for line in filler.step(conn)]
    (flagged,) = [line.split()[2] for line in lines if line.startswith("autostart of ")]
    assert f"started pool {flagged}" in lines, lines
    assert conn.storagePoolLookupByName(flagged).isActive()


def test_backups_grow_slowly_and_steadily_for_a_forecast(conn: Any) -> None:
    filler = DemoFiller(_rng(1))
    series = [_allocations(conn)["backups"]]
    for _ in range(30):
        filler.step(conn)
        if conn.storagePoolLookupByName("backups").isActive():
            series.append(_allocations(conn)["backups"])
    steps = [b - a for a, b in itertools.pairwise(series)]
    assert all(0 <= step < GiB for step in steps), steps  # below the forecast's reset margin
    assert sum(1 for step in steps if step > 0) >= 10
    assert series[-1] / (100 * GiB) < 0.95  # still growing after a minute
