"""The guest tracker behind a watcher, on the in-memory source: domain events re-read one guest,
an I/O error is counted against the pool of the disk that failed, a reconnect lists them all."""

from __future__ import annotations

import asyncio
import dataclasses

from poolwatch.guests import GuestTracker
from poolwatch.inventory import Inventory
from poolwatch.model import GuestDisk, GuestEventKind, GuestSnapshot, GuestState
from poolwatch.source import GuestChanged, GuestIOError
from poolwatch.telemetry import Telemetry
from tests.unit import test_watcher
from tests.unit.test_watcher import FakeSource, until

# The fixtures of the watcher's tests: a watched FakeSource with pools "images" and "isos".
watched = test_watcher.watched
telemetry = test_watcher.telemetry

VM = GuestSnapshot(
    name="vm",
    uuid="uuid-vm",
    state=GuestState.RUNNING,
    disks=(GuestDisk("vda", alias="virtio-disk0", path="/pools/images/vm.img"),),
)


def _on_images(inventory: Inventory) -> dict[str, GuestState]:
    return {g.name: g.state for g in inventory.hosts["kvm01"].pool_guests.get("images", ())}


async def test_events_keep_the_guest_current(watched: tuple[FakeSource, Inventory]) -> None:
    source, inventory = watched
    source.guests[VM.uuid] = VM
    source.push(GuestChanged("vm", VM.uuid, GuestEventKind.DEFINED, ""))
    await until(lambda: _on_images(inventory) == {"vm": GuestState.RUNNING}, inventory)

    source.guests[VM.uuid] = dataclasses.replace(
        VM, state=GuestState.PAUSED_IO_ERROR, io_errors={"vda": "enospc"}
    )
    source.push(GuestChanged("vm", VM.uuid, GuestEventKind.PAUSED, "ioerror"))
    await until(lambda: _on_images(inventory) == {"vm": GuestState.PAUSED_IO_ERROR}, inventory)
    assert inventory.hosts["kvm01"].pool_guests["images"][0].io_error == "enospc"

    del source.guests[VM.uuid]
    source.push(GuestChanged("vm", VM.uuid, GuestEventKind.UNDEFINED, ""))
    await until(lambda: _on_images(inventory) == {}, inventory)


async def test_an_io_error_counts_against_the_pool_of_its_disk(
    watched: tuple[FakeSource, Inventory],
    telemetry: Telemetry,
) -> None:
    source, inventory = watched
    source.guests[VM.uuid] = VM
    source.push(GuestChanged("vm", VM.uuid, GuestEventKind.STARTED, ""))
    await until(lambda: bool(_on_images(inventory)), inventory)
    error = GuestIOError("vm", VM.uuid, "", "virtio-disk0", "pause", "enospc")
    source.push(error)
    await until(lambda: bool(telemetry.stats("kvm01").guest_io_errors), inventory)
    assert telemetry.stats("kvm01").guest_io_errors == {("images", "enospc"): 1}


async def test_a_reconnect_lists_every_guest(watched: tuple[FakeSource, Inventory]) -> None:
    source, inventory = watched
    source.guests[VM.uuid] = VM  # defined while poolwatch was away: no event
    source.disconnect()
    source.connect()
    await until(lambda: _on_images(inventory) == {"vm": GuestState.RUNNING}, inventory)


class _HeldListing(FakeSource):
    """Holds list_guests() until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def list_guests(self) -> list[GuestSnapshot]:
        await self.gate.wait()
        return await super().list_guests()


async def test_a_listing_that_ends_after_detach_is_dropped() -> None:
    # A reload removes the connection while its guest listing is in flight, and a new watcher
    # takes the same key: the old listing must not land in the new host's inventory.
    source = _HeldListing()
    source.connect()
    source.guests[VM.uuid] = VM
    inventory = Inventory()
    inventory.add_host("kvm01", name="kvm01", uri="qemu:///system")
    tracker = GuestTracker(
        key="kvm01",
        source=source,
        inventory=inventory,
        telemetry=Telemetry(),
        host_name=lambda: "kvm01",
        clock=lambda: 0.0,
        spawn=lambda coro: coro.close(),
        pool_errored=lambda _pool: None,
    )
    listing = asyncio.create_task(tracker.resync())
    await asyncio.sleep(0)
    tracker.detach()
    inventory.remove_host("kvm01")
    inventory.add_host("kvm01", name="kvm01", uri="qemu:///system")
    source.gate.set()
    await listing
    assert inventory.hosts["kvm01"].guests == {}
