"""The JSON documents built from snapshots: shapes that stay plain, stable JSON."""

from __future__ import annotations

import json

from poolwatch.documents import (
    EventDoc,
    events_document,
    hook_snapshot,
    level_name,
    pool_document,
    pools_document,
)
from poolwatch.model import PoolPolicy
from tests.unit.factories import HOST_A, policy_telemetry, pool, sample_inventory


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
