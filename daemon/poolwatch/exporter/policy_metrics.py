"""Metric families of the policies: alarm levels, forecasts and autostart state (from the
inventory), and the actions taken (from the telemetry)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from poolwatch.inventory import Inventory
from poolwatch.telemetry import ConnectionStats, Telemetry

POOL_LABELS = ("host", "storage_pool")


def policy_families(
    inventory: Inventory, telemetry: Telemetry, keys: Iterable[str]
) -> list[Metric]:
    level = GaugeMetricFamily(
        "poolwatch_pool_threshold_level",
        "Space alarm level of the pool's threshold rule: 0 ok, 1 warning, 2 critical.",
        labels=POOL_LABELS,
    )
    time_to_full = GaugeMetricFamily(
        "poolwatch_pool_time_to_full_seconds",
        "Seconds until the pool is full at its recent growth rate (linear forecast); absent "
        "while it is not growing.",
        labels=POOL_LABELS,
    )
    gave_up = GaugeMetricFamily(
        "poolwatch_autostart_gave_up",
        "1 when poolwatch stopped trying to start the pool after max_attempts failures, until "
        "it runs or its autostart rule changes.",
        labels=POOL_LABELS,
    )
    not_mounted = GaugeMetricFamily(
        "poolwatch_pool_not_mounted",
        "1 while a require_mount pool's target is not a mount point (it is not started).",
        labels=POOL_LABELS,
    )
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
    for key in keys:
        host = hosts[key].name
        for pool, policy in inventory.policies(key).items():
            labels = (host, pool)
            if policy.level is not None:
                level.add_metric(labels, policy.level)
            if policy.time_to_full is not None:
                time_to_full.add_metric(labels, policy.time_to_full)
            if policy.autostart_mode is not None:
                gave_up.add_metric(labels, policy.autostart_gave_up)
            if policy.not_mounted is not None:
                not_mounted.add_metric(labels, policy.not_mounted)
        stats: ConnectionStats = telemetry.stats(key)
        for (pool, result), count in stats.autostart_attempts.items():
            attempts.add_metric((host, pool, result), count)
        for (pool, action, result), count in stats.actions.items():
            actions.add_metric((host, pool, action, result), count)
    return [level, time_to_full, gave_up, not_mounted, attempts, actions]
