"""Pool and volume figures read from libvirt (adapter/reader.py): the XML description of
each volume, and the listing of the pools in jobs that give way to an urgent call."""

from __future__ import annotations

import threading
from typing import Any
from xml.sax.saxutils import escape

import libvirt
import pytest

from poolwatch.adapter.reader import (
    LOOK_UP_BY_LISTING,
    PoolListing,
    describe_volumes,
    look_up_volumes,
    read_pool,
    read_pools,
)
from poolwatch.model import PoolState, VolumeSnapshot
from poolwatch.poolxml import parse_pool_xml
from poolwatch.source import VolumeDescription


def description(name: str, *, kind: str = "file", physical: int | None = 3072) -> str:
    """A volume's XML as libvirt 9.0 formats it (virStorageVolDefFormat)."""
    quoted = escape(name, {"'": "&apos;"})
    physical_line = "" if physical is None else f"<physical unit='bytes'>{physical}</physical>"
    return f"""<volume type='{kind}'>
  <name>{quoted}</name>
  <key>/srv/pool/{quoted}</key>
  <capacity unit='bytes'>1073741824</capacity>
  <allocation unit='bytes'>2048</allocation>
  {physical_line}
  <target>
    <path>/srv/pool/{quoted}</path>
    <format type='qcow2'/>
  </target>
</volume>
"""


def libvirt_error(code: int) -> libvirt.libvirtError:
    error = libvirt.libvirtError("refused")
    error.err = (code, libvirt.VIR_FROM_STORAGE, "refused", 2, None, None, None, 0, 0)
    return error


class FakeVolume:
    def __init__(self, name: str, xml: str | Exception, info: tuple[int, int, int] = (0, 0, 0)):
        self._name, self._xml, self._info = name, xml, info

    def name(self) -> str:
        return self._name

    def XMLDesc(self, flags: int) -> str:
        assert flags == 0
        if isinstance(self._xml, Exception):
            raise self._xml
        return self._xml

    def info(self) -> list[int]:
        return list(self._info)


def read_volumes(conn: Any, volumes: list[Any]) -> list[VolumeSnapshot]:
    described, done = describe_volumes(conn, volumes)
    assert done == len(volumes)
    return [d.volume for d in described]


def test_capacity_allocation_and_physical_from_one_description() -> None:
    volume = FakeVolume("a.qcow2", description("a.qcow2"))
    assert read_volumes(None, [volume]) == [VolumeSnapshot("a.qcow2", 0, 1024**3, 2048, 3072)]


def test_no_physical_where_libvirt_leaves_it_out() -> None:
    volume = FakeVolume("lv0", description("lv0", kind="block", physical=None))
    assert read_volumes(None, [volume]) == [VolumeSnapshot("lv0", 1, 1024**3, 2048, None)]


def test_a_name_that_looks_like_the_figures_is_only_a_name() -> None:
    name = "<capacity unit='bytes'>9</capacity><allocation unit='bytes'>9</allocation>"
    [read] = read_volumes(None, [FakeVolume(name, description(name))])
    assert (read.name, read.capacity, read.allocation, read.physical) == (
        name,
        1024**3,
        2048,
        3072,
    )


def test_a_description_this_code_does_not_know_falls_back_to_info() -> None:
    volume = FakeVolume("x", "<volume type='hologram'><name>x</name></volume>", (0, 500, 400))
    assert read_volumes(None, [volume]) == [VolumeSnapshot("x", 0, 500, 400, None)]


def test_a_volume_deleted_since_the_listing_is_left_out() -> None:
    volumes = [
        FakeVolume("gone", libvirt_error(libvirt.VIR_ERR_NO_STORAGE_VOL)),
        FakeVolume("kept", description("kept")),
    ]
    assert [v.name for v in read_volumes(None, volumes)] == ["kept"]


def test_other_errors_fail_the_chunk() -> None:
    volume = FakeVolume("a", libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR))
    with pytest.raises(libvirt.libvirtError):
        read_volumes(None, [volume])


def test_path_and_format_come_with_the_figures() -> None:
    name = "a b&c.qcow2"
    [described], _ = describe_volumes(None, [FakeVolume(name, description(name))])
    assert described == VolumeDescription(
        VolumeSnapshot(name, 0, 1024**3, 2048, 3072), f"/srv/pool/{name}", "qcow2"
    )


def test_a_job_gives_way_to_an_urgent_call_after_the_volume_in_hand() -> None:
    give_way = threading.Event()
    give_way.set()
    volumes = [FakeVolume(n, description(n)) for n in ("a", "b", "c")]
    described, done = describe_volumes(None, volumes, give_way)
    assert (done, [d.volume.name for d in described]) == (1, ["a"])


class FakePool:
    """A running dir pool; ``calls`` records every RPC made on it, in order."""

    def __init__(self, name: str, calls: list[str], volumes: int = 0) -> None:
        self._name, self._calls = name, calls
        self.volumes = [f"{name}-{i}.img" for i in range(volumes)] or [f"{name}.img"]
        self.state = PoolState.RUNNING  # what info() answers
        self.active = 1  # what isActive() answers
        self.stops_after_info = False  # numOfVolumes() finds the pool stopped

    def name(self) -> str:
        return self._name

    def UUIDString(self) -> str:
        return f"uuid-{self._name}"

    def XMLDesc(self, flags: int) -> str:
        self._calls.append(f"{self._name}.XMLDesc")
        return f"<pool type='dir'><name>{self._name}</name><uuid>uuid-{self._name}</uuid></pool>"

    def info(self) -> list[int]:
        self._calls.append(f"{self._name}.info")
        return [int(self.state), 100, 10, 90]

    def numOfVolumes(self) -> int:
        self._calls.append(f"{self._name}.numOfVolumes")
        if self.stops_after_info:
            raise libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID)
        return 0

    def isActive(self) -> int:
        return self.active

    def isPersistent(self) -> int:
        self._calls.append(f"{self._name}.isPersistent")
        return 1

    def autostart(self) -> int:
        self._calls.append(f"{self._name}.autostart")
        return 0

    def listAllVolumes(self, flags: int) -> list[FakeVolume]:
        self._calls.append(f"{self._name}.listAllVolumes")
        return [FakeVolume(name, "") for name in self.volumes]

    def storageVolLookupByName(self, name: str) -> FakeVolume:
        self._calls.append(f"{self._name}.storageVolLookupByName")
        if name not in self.volumes:
            raise libvirt_error(libvirt.VIR_ERR_NO_STORAGE_VOL)
        return FakeVolume(name, "")


class FakeConnection:
    def __init__(self, pool: FakePool) -> None:
        self._pool = pool

    def storagePoolLookupByName(self, name: str) -> FakePool:
        return self._pool


@pytest.mark.parametrize("asked", [3, 600])
def test_volumes_looked_up_by_name_take_few_calls_and_skip_the_gone(asked: int) -> None:
    calls: list[str] = []
    pool = FakePool("p", calls, volumes=1000)
    names = [*pool.volumes[:asked], "gone.img"]
    found = look_up_volumes(FakeConnection(pool), "p", names)
    assert [v.name() for v in found] == names[:-1]
    # A few names are looked up one by one; hundreds (a restarted pool's volumes) in one
    # listing, so no job of hundreds of calls holds up an event's re-read.
    one_by_one = ["p.storageVolLookupByName"] * (asked + 1)
    assert calls == (["p.listAllVolumes"] if asked > LOOK_UP_BY_LISTING else one_by_one)


def test_a_pool_listing_job_gives_way_to_an_urgent_call_after_the_pool_in_hand() -> None:
    calls: list[str] = []
    pools = [FakePool(f"p{i}", calls) for i in range(3)]
    names = frozenset(p.name() for p in pools)
    listing = PoolListing(pools, persistent=names, autostart=frozenset())
    give_way = threading.Event()
    give_way.set()
    readings, described, done = read_pools(None, listing, pools, {}, give_way)
    assert done == 1
    assert [r.name for r in readings] == ["p0"]
    assert list(described) == ["uuid-p0"]
    assert calls == ["p0.XMLDesc", "p0.info", "p0.numOfVolumes"]
    # The rest, later: a pool's description is parsed once per definition, not once per poll.
    calls.clear()
    readings, _, done = read_pools(None, listing, pools[1:], described)
    assert (done, [r.name for r in readings]) == (2, ["p1", "p2"])
    readings, _, _ = read_pools(None, listing, pools[:1], described)
    assert (readings[0].active, readings[0].persistent, readings[0].autostart) == (
        True,
        True,
        False,
    )
    assert "p0.XMLDesc" not in calls


def test_a_reading_that_straddles_a_stop_or_start_is_either_running_or_stopped() -> None:
    """A pool stopped and started back to back: the reading's state and whether the pool runs
    come from one answer, never "running" and inactive at once (which hid the next stop)."""
    pool = FakePool("p", [])
    # Started just after a check of its own (isActive) would have said inactive.
    pool.active, pool.state = 0, PoolState.RUNNING
    reading = read_pool(FakeConnection(pool), "p")
    assert (reading.state, reading.active, reading.volume_count) == (PoolState.RUNNING, True, 0)
    # Stopped between info() and the volume count.
    pool.stops_after_info = True
    reading = read_pool(FakeConnection(pool), "p")
    assert (reading.state, reading.active, reading.volume_count) == (
        PoolState.INACTIVE,
        False,
        None,
    )


def test_a_re_read_asks_only_for_what_may_have_changed() -> None:
    """An event's re-read of a known pool: the flags a start, stop or refresh cannot change,
    and a description not changed since, are taken as they are; info and the volume count
    are always asked for."""
    calls: list[str] = []
    pool = FakePool("p", calls)
    whole = read_pool(FakeConnection(pool), "p")
    assert calls == ["p.isPersistent", "p.autostart", "p.XMLDesc", "p.info", "p.numOfVolumes"]
    described = parse_pool_xml(pool.XMLDesc(0))
    calls.clear()
    again = read_pool(FakeConnection(pool), "p", (False, True), described)
    assert calls == ["p.info", "p.numOfVolumes"]
    assert (again.persistent, again.autostart) == (False, True)
    assert again.target_path == whole.target_path
