"""Metric families of the policies: alarm levels, forecasts and autostart state (from the
inventory, pool by pool), and the actions taken (from the telemetry)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from poolwatch.exporter.parts import FamilySpec, PartCache, PartRows
from poolwatch.inventory import Inventory
from poolwatch.model import PoolPolicy
from poolwatch.telemetry import ConnectionStats, Telemetry

POOL_LABELS = ("host", "storage_pool")

POLICY_FAMILIES = (
    FamilySpec(
        "poolwatch_pool_threshold_level",
        "Space alarm level of the pool's threshold rule: 0 ok, 1 warning, 2 critical.",
        POOL_LABELS,
    ),
    FamilySpec(
        "poolwatch_pool_time_to_full_seconds",
        "Seconds until the pool is full at its recent growth rate (linear forecast); absent "
        "while it is not growing.",
        POOL_LABELS,
    ),
    FamilySpec(
        "poolwatch_autostart_gave_up",
        "1 when poolwatch stopped trying to start the pool after max_attempts failures, until "
        "it runs or its autostart rule changes.",
        POOL_LABELS,
    ),
    FamilySpec(
        "poolwatch_pool_not_mounted",
        "1 while a require_mount pool's target is not a mount point (it is not started).",
        POOL_LABELS,
    ),
)


def policy_token(policy: PoolPolicy) -> Hashable:
    """What policy_part shows: the fill history and episode change without touching it."""
    gave_up = None if policy.autostart_mode is None else policy.autostart_gave_up
    return (policy.level, policy.time_to_full, gave_up, policy.not_mounted)


def policy_part(rows: PartRows, host: str, pool: str, policy: PoolPolicy) -> None:
    labels = (host, pool)
    if policy.level is not None:
        rows.add(0, labels, policy.level)
    if policy.time_to_full is not None:
        rows.add(1, labels, policy.time_to_full)
    if policy.autostart_mode is not None:
        rows.add(2, labels, policy.autostart_gave_up)
    if policy.not_mounted is not None:
        rows.add(3, labels, policy.not_mounted)


def policy_parts() -> PartCache[PoolPolicy]:
    """The cache of the per-pool policy gauges, kept by the collector across collects."""
    return PartCache(POLICY_FAMILIES, policy_part, policy_token)


def policy_families(
    inventory: Inventory, telemetry: Telemetry, keys: Iterable[str], parts: PartCache[PoolPolicy]
) -> list[Metric]:
    attempts = CounterMetricFamily(
        "poolwatch_autostart_attempts",
        "Pool starts poolwatch attempted under an autostart rule, by result (ok, failed).",
        labels=(*POOL_LABELS, "result"),
    )
    actions = CounterMetricFamily(
        "poolwatch_actions",
        "Policy actions by kind (start_pool, set_autostart, hook:NAME) and result (ok, failed, "
        "timeout, dropped, dry_run).",
        labels=(*POOL_LABELS, "action", "result"),
    )
    hosts = inventory.hosts
    parts.begin()
    for key in keys:
        host = hosts[key].name
        for pool, policy in inventory.policies(key).items():
            parts.add(host, pool, policy)
        stats: ConnectionStats = telemetry.stats(key)
        for (pool, result), count in stats.autostart_attempts.items():
            attempts.add_metric((host, pool, result), count)
        for (pool, action, result), count in stats.actions.items():
            actions.add_metric((host, pool, action, result), count)
    return [*parts.end(), attempts, actions]
