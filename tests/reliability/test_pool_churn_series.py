"""Pools churned through (defined, started, stopped, undefined): their event series used to stay
on /metrics forever; now they go an hour after the pool did, and never exceed a bound."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest

from poolwatch.exporter.collector import InventoryCollector
from poolwatch.inventory import Inventory
from poolwatch.model import PoolEvent, PoolEventKind
from poolwatch.telemetry import GONE_POOL_RETENTION, MAX_COUNTED_POOLS, Telemetry
from tests.reliability.conftest import sized

Figure = Callable[[str, str, str], None]

KEY = "test:///default"
CHURN = (
    PoolEventKind.DEFINED,
    PoolEventKind.STARTED,
    PoolEventKind.STOPPED,
    PoolEventKind.UNDEFINED,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _event_series(registry: CollectorRegistry) -> tuple[int, int]:
    text = generate_latest(registry)
    lines = [line for line in text.splitlines() if line.startswith(b"libvirt_storage_pool_events")]
    return len(lines), len(text)


def test_series_of_churned_pools_are_bounded_and_expire(figure: Figure) -> None:
    pools = int(sized(1000, 10_000))
    clock = Clock()
    inventory, telemetry = Inventory(clock=clock), Telemetry(clock=clock)
    inventory.add_host(KEY, name="test", uri=KEY)
    telemetry.add_connection(KEY, name="test")
    registry = CollectorRegistry()
    registry.register(
        InventoryCollector(
            inventory, telemetry, version="t", libvirt_version="t", python_version="t"
        )
    )
    most = 0
    for n in range(pools):
        for kind in CHURN:
            telemetry.record_pool_event(KEY, PoolEvent("test", f"churn-{n}", "", kind, clock.now))
        clock.now += 1  # one pool a second: an hour's worth stays
        if n % 500 == 0:
            most = max(most, _event_series(registry)[0])
    during, during_bytes = _event_series(registry)
    most = max(most, during)
    clock.now += GONE_POOL_RETENTION
    telemetry.record_poll(KEY, "info", 0.01, ok=True)  # expiry happens as polls come in
    after, after_bytes = _event_series(registry)
    assert most <= MAX_COUNTED_POOLS * len(CHURN)
    assert after == 0
    figure(
        f"{pools} pools defined, started, stopped and undefined, one a second (fake clock); "
        "then an hour without events",
        f"at most {MAX_COUNTED_POOLS} pools' event series per connection at any time; every "
        "undefined pool's series gone one hour after it went (was: kept forever)",
        f"{during} event series ({during_bytes / 1024:.0f} KiB of /metrics) right after the "
        f"churn, max {most}; {after} series ({after_bytes / 1024:.0f} KiB) an hour later",
    )
