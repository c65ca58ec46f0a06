"""The guests-at-risk metric families, from an inventory with guests and counted I/O errors."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from poolwatch.exporter.collector import InventoryCollector
from poolwatch.model import GuestDisk, GuestSnapshot, GuestState
from tests.unit.factories import HOST_A, policy_inventory, policy_telemetry

BUILD = {"version": "0", "libvirt_version": "9.0.0", "python_version": "3.11"}


def _guest(name: str, state: GuestState, **io_errors: str) -> GuestSnapshot:
    disk = GuestDisk("vda", path=f"/var/lib/libvirt/default/{name}.img")
    return GuestSnapshot(name, f"uuid-{name}", state, (disk,), io_errors=io_errors)


def _registry(cap: int = 10) -> CollectorRegistry:
    inventory = policy_inventory()
    telemetry = policy_telemetry()
    key = next(iter(inventory.hosts))
    guests = [
        _guest("a", GuestState.RUNNING),
        _guest("b", GuestState.PAUSED_IO_ERROR, vda="enospc"),
        _guest("c", GuestState.SHUT_OFF),
    ]
    inventory.replace_guests(key, {g.uuid: g for g in guests})
    telemetry.record_guest_io_error(key, pool="default", reason="enospc")
    telemetry.record_guest_io_error(key, pool="default", reason="enospc")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        InventoryCollector(inventory, telemetry, max_guests_per_pool=lambda: cap, **BUILD)
    )
    return registry


def test_guests_per_pool_by_state() -> None:
    registry = _registry()
    labels = {"host": HOST_A, "storage_pool": "default"}
    counts = {
        state: registry.get_sample_value("poolwatch_pool_guests", {**labels, "state": state.value})
        for state in GuestState
    }
    assert counts == {
        GuestState.RUNNING: 1,
        GuestState.PAUSED: 0,
        GuestState.PAUSED_IO_ERROR: 1,
        GuestState.SHUT_OFF: 1,
    }
    paused = {**labels, "guest": "b", "state": "paused_io_error", "io_error": "enospc"}
    assert registry.get_sample_value("poolwatch_pool_guest_info", paused) == 1
    errors = {**labels, "reason": "enospc"}
    assert registry.get_sample_value("poolwatch_guest_io_errors_total", errors) == 2


def test_the_cap_keeps_paused_guests() -> None:
    registry = _registry(cap=1)
    labels = {"host": HOST_A, "storage_pool": "default"}
    paused = {**labels, "guest": "b", "state": "paused_io_error", "io_error": "enospc"}
    assert registry.get_sample_value("poolwatch_pool_guest_info", paused) == 1
    running = {**labels, "guest": "a", "state": "running", "io_error": ""}
    assert registry.get_sample_value("poolwatch_pool_guest_info", running) is None
    assert registry.get_sample_value("poolwatch_pool_guests_unexported", labels) == 2
