"""The JSON documents built from snapshots: shapes that stay plain, stable JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from poolwatch.documents import (
    EventDoc,
    events_document,
    hook_snapshot,
    level_name,
    pool_document,
    pools_document,
)
from poolwatch.exporter.collector import InventoryCollector
from poolwatch.inventory import Inventory
from poolwatch.model import FilesystemStat, PoolPolicy, PoolSnapshot, PoolState
from poolwatch.telemetry import Telemetry
from tests.unit.factories import (
    GIB,
    HOST_A,
    FakeClock,
    capped_scan,
    policy_telemetry,
    pool,
    sample_inventory,
)

# A pool's figures in the pools document, and the /metrics series that carry the same figure.
FIGURES = {
    "capacity": "libvirt_storage_pool_capacity_bytes",
    "allocation": "libvirt_storage_pool_allocation_bytes",
    "available": "libvirt_storage_pool_available_bytes",
    "free_bytes": "libvirt_storage_pool_available_bytes",
    "fill_ratio": "libvirt_storage_pool_allocation_bytes",
    "filesystem": "libvirt_storage_pool_filesystem_avail_bytes",
    "volumes": "libvirt_storage_pool_volumes",
}


def test_policy_levels_beyond_critical_and_non_finite_forecasts() -> None:
    inventory = sample_inventory()
    inventory.set_policy(
        HOST_A, "nfs", PoolPolicy(level=3, time_to_full=float("inf"), growth_rate=float("nan"))
    )
    document = pools_document(inventory)
    nfs = next(p for p in document["hosts"][0]["pools"] if p["name"] == "nfs")
    assert nfs["policy"] is not None
    assert (nfs["policy"]["level"], nfs["policy"]["level_code"]) == ("critical", 3)
    # JSON has no Infinity or NaN: a forecast without a finite answer is null.
    assert nfs["policy"]["time_to_full_seconds"] is None
    assert nfs["policy"]["growth_bytes_per_second"] is None
    json.dumps(document, allow_nan=False)


def test_events_document_keeps_one_shape() -> None:
    document = events_document(policy_telemetry().activity(), limit=500)
    assert {tuple(event) for event in document["events"]} == {tuple(EventDoc.__annotations__)}


def test_pools_document_is_plain_json() -> None:
    # json.dumps accepts IntEnum and tuples silently; a round trip shows only plain JSON went in.
    document = pools_document(sample_inventory(), with_volumes=True)
    assert json.loads(json.dumps(document)) == document


def test_a_hook_snapshot_is_the_pool_without_volume_list_and_policy() -> None:
    inventory = sample_inventory()
    for host in inventory.hosts.values():
        for snapshot in host.pools.values():
            document = hook_snapshot(snapshot)
            assert document == pool_document(snapshot, with_volumes=False)
            assert document["policy"] is None
            assert document["volumes"] is None or "list" not in document["volumes"]
    assert json.loads(json.dumps(hook_snapshot(pool("tank")))) == hook_snapshot(pool("tank"))


def test_level_names() -> None:
    assert [level_name(level) for level in (-1, 0, 1, 2, 3)] == [
        "ok",
        "ok",
        "warning",
        "critical",
        "critical",
    ]


def _with_stale_figures(state: PoolState, *, active: bool) -> PoolSnapshot:
    # What libvirt and the last scan leave behind on a pool: figures, a stat, volumes.
    return pool(
        "tank",
        state=state,
        active=active,
        allocation=99 * GIB,
        available=GIB,
        filesystem=FilesystemStat(avail_bytes=GIB, size_bytes=200 * GIB, device="253:1"),
        volumes=capped_scan(),
    )


def _metrics_of(snapshot: PoolSnapshot) -> set[str]:
    inventory = Inventory(clock=FakeClock())
    inventory.add_host(HOST_A, name=HOST_A, uri="test:///default")
    inventory.set_connected(HOST_A, name=HOST_A)
    inventory.replace_pools(HOST_A, {snapshot.name: snapshot})
    telemetry = Telemetry(clock=FakeClock())
    telemetry.add_connection(HOST_A, name=HOST_A)
    registry = CollectorRegistry()
    registry.register(
        InventoryCollector(inventory, telemetry, version="", libvirt_version="", python_version="")
    )
    return {
        sample.name
        for family in registry.collect()
        for sample in family.samples
        if sample.labels.get("storage_pool") == snapshot.name
    }


@pytest.mark.parametrize(
    ("state", "active"), [(PoolState.INACTIVE, False), (PoolState.RUNNING, True)]
)
def test_a_pool_has_figures_in_the_document_where_it_has_them_in_metrics(
    state: PoolState, active: bool
) -> None:
    snapshot = _with_stale_figures(state, active=active)
    document: dict[str, Any] = dict(pool_document(snapshot, with_volumes=True))
    metrics = _metrics_of(snapshot)
    # A stopped pool's figures are libvirt's stale last ones: null, as /metrics leaves them out.
    assert {field: document[field] is not None for field in FIGURES} == {
        field: name in metrics for field, name in FIGURES.items()
    }
    assert all(document[field] is not None for field in FIGURES) is active
    # What /metrics keeps for every pool, the document keeps too.
    assert document["state"] == state.name.lower()
    assert document["last_refresh"] == snapshot.last_refresh
    assert hook_snapshot(snapshot) == pool_document(snapshot, with_volumes=False)
