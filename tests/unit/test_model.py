"""Which pool a guest's disk lives in, and each pool's guests as the inventory keeps them."""

from __future__ import annotations

from poolwatch.inventory import Inventory
from poolwatch.model import GuestDisk, GuestSnapshot, GuestState, guests_by_pool, pool_of_disk
from tests.unit.factories import pool

POOLS = {
    "images": pool("images", target_path="/var/lib/libvirt/images"),
    "nested": pool("nested", target_path="/var/lib/libvirt/images/fast"),
    "vg0": pool("vg0", type="logical", target_path="/dev/vg0"),
}


def guest(name: str, *disks: GuestDisk, state: GuestState = GuestState.RUNNING) -> GuestSnapshot:
    return GuestSnapshot(name=name, uuid=f"uuid-{name}", state=state, disks=disks)


def test_a_disk_named_by_pool_and_volume_is_in_that_pool() -> None:
    assert pool_of_disk(GuestDisk("vda", pool="vg0", volume="lv1"), POOLS) == "vg0"
    assert pool_of_disk(GuestDisk("vda", pool="gone", volume="x"), POOLS) is None


def test_a_disk_by_path_is_in_the_pool_whose_target_holds_it() -> None:
    assert pool_of_disk(GuestDisk("vda", path="/var/lib/libvirt/images/a.qcow2"), POOLS) == "images"
    assert pool_of_disk(GuestDisk("vda", path="/dev/vg0/lv1"), POOLS) == "vg0"
    # The innermost pool owns its files; a sibling prefix is no parent.
    assert pool_of_disk(GuestDisk("vda", path="/var/lib/libvirt/images/fast/b"), POOLS) == "nested"
    assert pool_of_disk(GuestDisk("vda", path="/var/lib/libvirt/images2/c"), POOLS) is None
    assert pool_of_disk(GuestDisk("hdc"), POOLS) is None


def test_each_pool_lists_its_guests_with_the_disk_that_paused_them() -> None:
    paused = GuestSnapshot(
        name="db",
        uuid="uuid-db",
        state=GuestState.PAUSED_IO_ERROR,
        disks=(
            GuestDisk("vda", path="/var/lib/libvirt/images/db.img"),
            GuestDisk("vdb", pool="vg0", volume="data"),
        ),
        io_errors={"vdb": "enospc"},
    )
    web = guest("web", GuestDisk("vda", path="/var/lib/libvirt/images/web.img"))
    mapping = guests_by_pool(POOLS, {g.uuid: g for g in (paused, web)})
    assert [(g.name, g.disks, g.io_error) for g in mapping["images"]] == [
        ("db", ("vda",), ""),
        ("web", ("vda",), ""),
    ]
    assert [(g.name, g.state, g.io_error) for g in mapping["vg0"]] == [
        ("db", GuestState.PAUSED_IO_ERROR, "enospc")
    ]
    assert "nested" not in mapping


def test_the_inventory_maps_guests_again_when_pools_or_guests_change() -> None:
    inventory = Inventory(clock=lambda: 0.0)
    inventory.add_host("k", name="h", uri="test:///default")
    vm = guest("vm", GuestDisk("vda", path="/var/lib/libvirt/images/vm.img"))
    inventory.replace_guests("k", {vm.uuid: vm})
    assert inventory.hosts["k"].pool_guests == {}  # no pool holds it yet
    inventory.put_pool("k", POOLS["images"])
    assert [g.name for g in inventory.hosts["k"].pool_guests["images"]] == ["vm"]
    inventory.drop_guest("k", vm.uuid)
    assert inventory.hosts["k"].pool_guests == {}
