"""Metric families of the guests at risk: which guests live in each pool and which are paused.

Built from each host's ``pool_guests`` (worked out by the inventory when guests or pools change)
and the telemetry's I/O error counters: memory only, like every collector here. The per-pool
families are parts per pool (exporter/parts.py), rebuilt only when a pool's guests changed.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from poolwatch.exporter.parts import FamilySpec, PartCache, PartRows
from poolwatch.model import GuestState, HostSnapshot, PoolGuest
from poolwatch.telemetry import ConnectionStats

POOL_LABELS = ("host", "storage_pool")
GUEST_LABELS = ("host", "storage_pool", "guest", "state", "io_error")

GUEST_FAMILIES = (
    FamilySpec(
        "poolwatch_pool_guests",
        "Guests with a disk in the pool, by state (running, paused, paused_io_error, shut_off).",
        (*POOL_LABELS, "state"),
    ),
    FamilySpec(
        "poolwatch_pool_guest_info",
        "Always 1, per guest with a disk in the pool; io_error is the reason one of those disks "
        "paused it (enospc, eio, ...) or empty. At most max_volumes_per_pool guests per pool, "
        "paused ones first.",
        GUEST_LABELS,
    ),
    FamilySpec(
        "poolwatch_pool_guests_unexported",
        "Guests of the pool left out of poolwatch_pool_guest_info by the cap.",
        POOL_LABELS,
    ),
)

# A pool's guests, and the cap on its info series.
_PoolGuests = tuple[tuple[PoolGuest, ...], int]


def _guests_part(rows: PartRows, host: str, pool: str, source: _PoolGuests) -> None:
    guests, cap = source
    by_state = dict.fromkeys(GuestState, 0)
    for guest in guests:
        by_state[guest.state] += 1
    # Every state of every pool, zeros included: an alert on a count needs its series.
    for state, count in by_state.items():
        rows.add(0, (host, pool, state.value), count)
    # Paused guests first, so the cap never hides the ones an operator is looking for.
    ordered = sorted(guests, key=lambda g: (not g.state.value.startswith("paused"), g.name))
    for guest in ordered[:cap]:
        rows.add(1, (host, pool, guest.name, guest.state.value, guest.io_error), 1)
    if guests:
        rows.add(2, (host, pool), max(0, len(guests) - cap))


def guest_parts() -> PartCache[_PoolGuests]:
    """The cache of the per-pool guest families, kept by the collector across collects."""
    # The tuples are built anew each collect: compared by value (guests are immutable).
    return PartCache(GUEST_FAMILIES, _guests_part, lambda source: source, frozen=False)


def guest_families(
    stats: Iterable[tuple[HostSnapshot, ConnectionStats]],
    parts: PartCache[_PoolGuests],
    *,
    max_guests_per_pool: int,
) -> list[Metric]:
    io_errors = CounterMetricFamily(
        "poolwatch_guest_io_errors",
        "I/O errors QEMU reported on guest disks in the pool since poolwatch started, by "
        'reason (enospc: the pool is full); storage_pool="" for disks in no known pool.',
        labels=(*POOL_LABELS, "reason"),
    )
    parts.begin()
    for host, counters in stats:
        host_name = host.name
        for pool_name in sorted(host.pools):
            guests = host.pool_guests.get(pool_name, ())
            parts.add(host_name, pool_name, (guests, max_guests_per_pool))
        for (pool_name, reason), count in sorted(counters.guest_io_errors.items()):
            io_errors.add_metric((host_name, pool_name, reason), count)
    return [*parts.end(), io_errors]
