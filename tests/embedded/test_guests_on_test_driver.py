"""Guests on libvirt's test driver: which pool each guest's disks live in (by pool/volume and by
path), kept current by domain events, and gone with the guest."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from poolwatch.adapter.eventloop import ensure_event_loop
from tests.helpers import base_url, config_for, eventually, fetch, running, sample, scrape

# The default test host's domain "test" has its disk at /guest/diskimage1.
BY_PATH_POOL = """<pool type='dir'>
  <name>t-guests</name>
  <target><path>/guest</path></target>
</pool>"""

VOLUME_GUEST = """<domain type='test'>
  <name>t-vm</name>
  <memory unit='KiB'>65536</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='volume' device='disk'>
      <source pool='default-pool' volume='t-vm.img'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
  </devices>
</domain>"""


@pytest.fixture
def other_client() -> Iterator[Any]:
    """Another client of test:///default, whose state the daemon's connection shares."""
    ensure_event_loop()
    conn = libvirt.open("test:///default")
    try:
        yield conn
    finally:
        for dom in conn.listAllDomains(0):
            if dom.name().startswith("t-"):
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
        for pool in conn.listAllStoragePools(0):
            if pool.name().startswith("t-"):
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
        conn.close()


async def _guests(url: str, pool: str) -> dict[str, dict[str, Any]]:
    status, text = await fetch(f"{url}/api/v1/pools")
    assert status == 200
    for host in json.loads(text)["hosts"]:
        for entry in host["pools"]:
            if entry["name"] == pool:
                return {g["name"]: g for g in entry["guests"]}
    return {}


async def _until_guest(url: str, pool: str, guest: str, state: str | None) -> None:
    async def check() -> bool:
        found = (await _guests(url, pool)).get(guest)
        return (found is None) if state is None else (found is not None and found["state"] == state)

    await eventually(check)


async def test_guest_by_path_is_on_the_pool_that_holds_its_disk(other_client: Any) -> None:
    pool = await asyncio.to_thread(other_client.storagePoolDefineXML, BY_PATH_POOL)
    await asyncio.to_thread(pool.create)
    async with running(config_for("test:///default", interval=3600.0)) as daemon:
        url = base_url(daemon)
        await _until_guest(url, "t-guests", "test", "running")
        guest = (await _guests(url, "t-guests"))["test"]
        assert guest["disks"] == ["vda"]
        assert guest["io_error"] == ""
        assert await _guests(url, "default-pool") == {}
        text = await scrape(url)
        labels = {"storage_pool": "t-guests"}
        assert sample(text, "poolwatch_pool_guests", state="running", **labels) == 1
        assert sample(text, "poolwatch_pool_guests", state="paused", **labels) == 0
        assert sample(text, "poolwatch_pool_guest_info", guest="test", **labels) == 1


async def test_lifecycle_events_keep_a_volume_guest_current(other_client: Any) -> None:
    async with running(config_for("test:///default", interval=3600.0)) as daemon:
        url = base_url(daemon)
        await eventually(lambda: _ready(daemon))
        dom = await asyncio.to_thread(other_client.defineXML, VOLUME_GUEST)
        await _until_guest(url, "default-pool", "t-vm", "shut_off")
        assert (await _guests(url, "default-pool"))["t-vm"]["disks"] == ["vdb"]

        await asyncio.to_thread(dom.create)
        await _until_guest(url, "default-pool", "t-vm", "running")
        await asyncio.to_thread(dom.suspend)
        await _until_guest(url, "default-pool", "t-vm", "paused")
        text = await scrape(url)
        assert (
            sample(text, "poolwatch_pool_guests", storage_pool="default-pool", state="paused") == 1
        )
        await asyncio.to_thread(dom.resume)
        await _until_guest(url, "default-pool", "t-vm", "running")

        _, body = await fetch(f"{url}/api/v1/events")
        kinds = [(e["kind"], e["guest"], e["pool"]) for e in json.loads(body)["events"]]
        assert ("guest_paused", "t-vm", "default-pool") in kinds
        assert ("guest_resumed", "t-vm", "default-pool") in kinds

        await asyncio.to_thread(dom.destroy)
        await _until_guest(url, "default-pool", "t-vm", "shut_off")
        await asyncio.to_thread(dom.undefine)
        await _until_guest(url, "default-pool", "t-vm", None)
        text = await scrape(url)
        assert sample(text, "poolwatch_pool_guest_info", guest="t-vm") is None


async def test_guests_defined_while_away_are_found_on_start(other_client: Any) -> None:
    """No event for them: the resync at connect lists every guest."""
    await asyncio.to_thread(other_client.defineXML, VOLUME_GUEST)
    async with running(config_for("test:///default", interval=3600.0)) as daemon:
        await _until_guest(base_url(daemon), "default-pool", "t-vm", "shut_off")


async def _ready(daemon: Any) -> bool:
    return bool(daemon.inventory.ready)
