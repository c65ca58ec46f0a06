"""Where the fast path and libvirt disagree (fastpath/corrections.py), and how it is exported."""

from __future__ import annotations

from poolwatch.exporter.collector import InventoryCollector
from poolwatch.fastpath.corrections import Correction, pool_corrections, volume_corrections
from poolwatch.fastpath.space import PoolSpace
from poolwatch.inventory import Inventory
from poolwatch.model import VolumeSnapshot
from poolwatch.telemetry import Telemetry


def test_pool_fields_that_differ_are_corrections() -> None:
    assert pool_corrections("p", PoolSpace(100, 40, 60), PoolSpace(100, 40, 60)) == []
    assert pool_corrections("p", PoolSpace(100, 40, 60), PoolSpace(100, 45, 55)) == [
        Correction("p", "allocation", None, 40, 45),
        Correction("p", "available", None, 60, 55),
    ]


def test_volume_fields_that_differ_are_corrections() -> None:
    fast = VolumeSnapshot("v", 0, 100, 50, 100)
    assert volume_corrections("p", fast, VolumeSnapshot("v", 0, 100, 50, None)) == [
        Correction("p", "volume_physical", "v", 100, None)
    ]


def test_corrections_are_counted_per_pool_and_field_on_metrics() -> None:
    inventory, telemetry = Inventory(), Telemetry()
    inventory.add_host("k", name="kvm01", uri="qemu:///system")
    telemetry.add_connection("k", name="kvm01")
    for field in ("allocation", "allocation", "volume_capacity"):
        telemetry.record_fastpath_correction("k", "images", field)
    collector = InventoryCollector(
        inventory, telemetry, version="0", libvirt_version="9.0.0", python_version="3.11"
    )
    [family] = [f for f in collector.collect() if f.name == "poolwatch_fastpath_corrections"]
    assert {(s.labels["field"], s.value) for s in family.samples if s.name.endswith("_total")} == {
        ("allocation", 2),
        ("volume_capacity", 1),
    }
