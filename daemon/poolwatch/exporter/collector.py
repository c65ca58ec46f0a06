"""The metric families of §3 of the spec, built from the inventory and telemetry on every collect.

The collector reads memory only (the inventory's snapshots, the telemetry's counters), so it is
safe to run inside a scrape on the event loop: a hung libvirtd cannot reach it. Families are built
fresh each time, so an undefined pool's series disappear from the next scrape without bookkeeping;
the per-pool ones are made of parts (exporter/parts.py) that are rebuilt only for the pools whose
series changed, which is what lets the encoder re-encode only those pools' lines.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Mapping

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from poolwatch.exporter.guest_metrics import guest_families, guest_parts
from poolwatch.exporter.parts import FamilySpec, PartCache, PartedFamily, PartRows
from poolwatch.exporter.policy_metrics import policy_families, policy_parts
from poolwatch.exporter.pool_families import (
    POOL_FAMILIES,
    VOLUME_FAMILIES,
    pool_part,
    pool_token,
    volumes_part,
    volumes_token,
)
from poolwatch.inventory import Inventory
from poolwatch.model import HostSnapshot, PoolEventKind, PoolSnapshot, VolumeScan
from poolwatch.telemetry import ConnectionStats, Histogram, Telemetry

# floatToGoString is untyped upstream; binding it to a typed name keeps mypy --strict honest
# about what we pass in without an ignore comment.
_go_float: Callable[[float], str] = floatToGoString

EVENT_LABELS = ("host", "storage_pool", "event")


class InventoryCollector:
    """A prometheus_client custom collector over an :class:`Inventory` and a :class:`Telemetry`."""

    def __init__(
        self,
        inventory: Inventory,
        telemetry: Telemetry,
        *,
        version: str,
        libvirt_version: str,
        python_version: str,
        max_guests_per_pool: Callable[[], int] = lambda: 1000,
        log_lines_dropped: Callable[[], int] = lambda: 0,
    ) -> None:
        """``max_guests_per_pool``: the cap of poolwatch_pool_guest_info per pool, read on every
        collect (the daemon passes poll.max_volumes_per_pool, which a reload may change)."""
        self._max_guests = max_guests_per_pool
        self._inventory = inventory
        self._telemetry = telemetry
        self._log_lines_dropped = log_lines_dropped
        self._build_labels = [version, libvirt_version, python_version]
        # Per (host, pool) parts of the per-pool families, kept across collects.
        self._pools: PartCache[PoolSnapshot] = PartCache(POOL_FAMILIES, pool_part, pool_token)
        self._volumes: PartCache[VolumeScan | None] = PartCache(
            VOLUME_FAMILIES, volumes_part, volumes_token
        )
        # The telemetry replaces a pool's event counts at each event: known by identity.
        self._events: PartCache[Mapping[PoolEventKind, int]] = PartCache(
            EVENT_FAMILIES, _events_part, _events_token
        )
        self._policies = policy_parts()
        self._guests = guest_parts()

    def describe(self) -> list[Metric]:
        # Empty on purpose: the registry would otherwise run a full collect at registration to
        # learn the names, and which series exist changes with the pools anyway.
        return []

    def generation(self) -> int:
        """Moves whenever anything ``collect`` reads changes: what the /metrics cache keys on.

        Both counts only grow, so their sum changes exactly when either does.
        """
        return self._inventory.generation + self._telemetry.changes + self._log_lines_dropped()

    def collect(self) -> list[Metric]:
        inventory = self._inventory
        telemetry = self._telemetry
        hosts = inventory.hosts
        stats: list[tuple[HostSnapshot, ConnectionStats]] = []
        keys = []
        for key, host in hosts.items():
            try:
                stats.append((host, telemetry.stats(key)))
            except KeyError:  # a host without counters is a bug upstream, not a failed scrape
                continue
            keys.append(key)
        families = [
            *self._pool_families(hosts.values()),
            *self._event_families(stats),
            *_connection_families(stats),
            *policy_families(inventory, telemetry, keys, self._policies),
            *guest_families(stats, self._guests, max_guests_per_pool=self._max_guests()),
            *self._daemon_families(),
        ]
        # Families without samples would only add HELP/TYPE noise (the Go client drops them too).
        # A parted family's samples are joined from its parts when read: it counts them.
        return [
            family
            for family in families
            if (family.filled if isinstance(family, PartedFamily) else family.samples)
        ]

    def _pool_families(self, hosts: Iterable[HostSnapshot]) -> list[Metric]:
        parts = self._pools
        volumes = self._volumes
        parts.begin()
        volumes.begin()
        for host in hosts:
            host_name = host.name
            pools = host.pools
            for name in sorted(pools):
                pool = pools[name]
                parts.add(host_name, name, pool)
                # Every pool has a place among the volumes, an empty part while it is stopped
                # or not scanned: a stop or start changes that pool's part only.
                volumes.add(host_name, name, pool.volumes if pool.active else None)
        return [*parts.end(), *volumes.end()]

    def _event_families(
        self, stats: Iterable[tuple[HostSnapshot, ConnectionStats]]
    ) -> list[Metric]:
        events = self._events
        events.begin()
        for host, counters in stats:
            for pool_name, by_kind in counters.pool_events.items():
                events.add(host.name, pool_name, by_kind)
        return list(events.end())

    def _daemon_families(self) -> list[Metric]:
        telemetry = self._telemetry
        reload_ok = GaugeMetricFamily(
            "poolwatch_config_last_reload_successful",
            "Whether the last configuration reload (SIGHUP) succeeded: 1 yes, 0 no "
            "(the previous configuration stays in force).",
            value=1 if telemetry.last_reload_successful else 0,
        )
        reload_at = GaugeMetricFamily(
            "poolwatch_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load or reload.",
            value=telemetry.last_reload_success_at,
        )
        families: list[Metric] = [reload_ok, reload_at]
        if telemetry.web_config_last_reload_successful is not None:
            families.append(
                GaugeMetricFamily(
                    "poolwatch_web_config_last_reload_successful",
                    "Whether the last load of the web config file (TLS, basic auth), at a SIGHUP "
                    "or a change of it or its certificates, succeeded: 1 yes, 0 no (the "
                    "previous settings stay in force).",
                    value=1 if telemetry.web_config_last_reload_successful else 0,
                )
            )
            families.append(
                GaugeMetricFamily(
                    "poolwatch_web_config_last_reload_success_timestamp_seconds",
                    "Unix time of the last successful load of the web config file.",
                    value=telemetry.web_config_last_reload_success_at,
                )
            )
        families.append(
            CounterMetricFamily(
                "poolwatch_log_lines_dropped",
                "Log lines that could not be written (e.g. a full disk under stderr).",
                value=self._log_lines_dropped(),
            )
        )
        build = GaugeMetricFamily(
            "poolwatch_build_info",
            "Always 1; labels carry the poolwatch, libvirt and Python versions in use.",
            labels=("version", "libvirt_version", "python_version"),
        )
        build.add_metric(self._build_labels, 1)
        closed = CounterMetricFamily(
            "poolwatch_http_connections_closed",
            "HTTP connections the server closed itself, by reason: limit (the connection bound "
            "was reached; the one quiet longest made room), refused (the bound was reached and "
            "every connection was busy), timeout (no complete request head in time).",
            labels=("reason",),
        )
        for reason, count in telemetry.http_connections_closed.items():
            closed.add_metric([reason], count)
        return [*families, build, closed]


EVENT_FAMILIES = (
    FamilySpec(
        "libvirt_storage_pool_events",
        "Storage pool events received from libvirt since poolwatch started, by kind; includes "
        "pools that have since been undefined.",
        EVENT_LABELS,
        "counter",
    ),
)


def _events_token(by_kind: Mapping[PoolEventKind, int]) -> Hashable:
    return tuple(by_kind.items())


def _events_part(
    rows: PartRows, host_name: str, pool_name: str, by_kind: Mapping[PoolEventKind, int]
) -> None:
    for kind, count in by_kind.items():
        rows.add(0, (host_name, pool_name, kind.value), count)


def _connection_families(stats: Iterable[tuple[HostSnapshot, ConnectionStats]]) -> list[Metric]:
    up = GaugeMetricFamily(
        "poolwatch_libvirt_up",
        "Whether poolwatch is connected to libvirt: 1 yes, 0 no (pool series are then stale).",
        labels=("host", "uri"),
    )
    connects = CounterMetricFamily(
        "poolwatch_libvirt_connects",
        "Successful connections to libvirt, including reconnects.",
        labels=("host",),
    )
    disconnects = CounterMetricFamily(
        "poolwatch_libvirt_disconnects",
        "Connections to libvirt that were lost or closed.",
        labels=("host",),
    )
    durations = HistogramMetricFamily(
        "poolwatch_poll_duration_seconds",
        "Time taken by one poll of libvirt, by kind (info, volumes, refresh, sweep).",
        labels=("host", "kind"),
    )
    corrections = CounterMetricFamily(
        "poolwatch_fastpath_corrections",
        "Times the sweep through libvirt found a value of a fast-path pool (read from statvfs "
        "and stat()) differing from libvirt's own, by field; libvirt's value replaced it.",
        labels=("host", "storage_pool", "field"),
    )
    errors = CounterMetricFamily(
        "poolwatch_poll_errors",
        "Polls of libvirt that failed or timed out, by kind.",
        labels=("host", "kind"),
    )
    last_success = GaugeMetricFamily(
        "poolwatch_last_poll_success_timestamp_seconds",
        "Unix time of the last complete poll of the host's pools: the age of what is served.",
        labels=("host",),
    )
    for host, counters in stats:
        host_name = host.name
        host_labels = (host_name,)
        up.add_metric((host_name, host.uri), host.up)
        connects.add_metric(host_labels, counters.connects)
        disconnects.add_metric(host_labels, counters.disconnects)
        if host.last_poll_success is not None:
            last_success.add_metric(host_labels, host.last_poll_success)
        poll_errors = counters.poll_errors
        for kind, histogram in counters.poll_durations.items():
            durations.add_metric((host_name, kind), _cumulative(histogram), histogram.sum)
        # Every kind that has run reports its errors, 0 included, so rate() has a start point.
        for kind in sorted(counters.poll_durations.keys() | poll_errors.keys()):
            errors.add_metric((host_name, kind), poll_errors.get(kind, 0))
        for (pool_name, field_name), count in sorted(counters.fastpath_corrections.items()):
            corrections.add_metric((host_name, pool_name, field_name), count)
    return [up, connects, disconnects, durations, errors, last_success, corrections]


def _cumulative(histogram: Histogram) -> list[tuple[str, float]]:
    """Prometheus buckets from the telemetry's per-bucket counts (which are not cumulative)."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for le, count in zip(_le_labels(histogram.buckets), histogram.counts, strict=True):
        running += count
        buckets.append((le, running))
    # Observations above the last bound are only in count: that is what +Inf means.
    buckets.append(("+Inf", histogram.count))
    return buckets


@functools.cache
def _le_labels(bounds: tuple[float, ...]) -> tuple[str, ...]:
    # Formatted as prometheus_client formats its own histograms' bounds, so "le" values match
    # across exporters.
    return tuple(_go_float(bound) for bound in bounds)
