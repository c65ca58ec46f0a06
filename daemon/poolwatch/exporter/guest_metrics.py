"""Metric families of the guests at risk: which guests live in each pool and which are paused.

Built from each host's ``pool_guests`` (worked out by the inventory when guests or pools change)
and the telemetry's I/O error counters: memory only, like every collector here.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from poolwatch.model import GuestState, HostSnapshot
from poolwatch.telemetry import ConnectionStats

POOL_LABELS = ("host", "storage_pool")
GUEST_LABELS = ("host", "storage_pool", "guest", "state", "io_error")


def guest_families(
    stats: Iterable[tuple[HostSnapshot, ConnectionStats]], *, max_guests_per_pool: int
) -> list[Metric]:
    counts = GaugeMetricFamily(
        "poolwatch_pool_guests",
        "Guests with a disk in the pool, by state (running, paused, paused_io_error, shut_off).",
        labels=(*POOL_LABELS, "state"),
    )
    info = GaugeMetricFamily(
        "poolwatch_pool_guest_info",
        "Always 1, per guest with a disk in the pool; io_error is the reason one of those disks "
        "paused it (enospc, eio, ...) or empty. At most max_volumes_per_pool guests per pool, "
        "paused ones first.",
        labels=GUEST_LABELS,
    )
    unexported = GaugeMetricFamily(
        "poolwatch_pool_guests_unexported",
        "Guests of the pool left out of poolwatch_pool_guest_info by the cap.",
        labels=POOL_LABELS,
    )
    io_errors = CounterMetricFamily(
        "poolwatch_guest_io_errors",
        "I/O errors QEMU reported on guest disks in the pool since poolwatch started, by "
        'reason (enospc: the pool is full); storage_pool="" for disks in no known pool.',
        labels=(*POOL_LABELS, "reason"),
    )
    for host, counters in stats:
        host_name = host.name
        for pool_name in sorted(host.pools):
            guests = host.pool_guests.get(pool_name, ())
            by_state = dict.fromkeys(GuestState, 0)
            for guest in guests:
                by_state[guest.state] += 1
            # Every state of every pool, zeros included: an alert on a count needs its series.
            for state, count in by_state.items():
                counts.add_metric((host_name, pool_name, state.value), count)
            # Paused guests first, so the cap never hides the ones an operator is looking for.
            ordered = sorted(guests, key=lambda g: (not g.state.value.startswith("paused"), g.name))
            for guest in ordered[:max_guests_per_pool]:
                labels = (host_name, pool_name, guest.name, guest.state.value, guest.io_error)
                info.add_metric(labels, 1)
            if guests:
                unexported.add_metric(
                    (host_name, pool_name), max(0, len(guests) - max_guests_per_pool)
                )
        for (pool_name, reason), count in sorted(counters.guest_io_errors.items()):
            io_errors.add_metric((host_name, pool_name, reason), count)
    return [counts, info, unexported, io_errors]
