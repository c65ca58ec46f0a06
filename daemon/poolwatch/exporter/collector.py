"""The metric families of §3 of the spec, built from the inventory and telemetry on every collect.

The collector reads memory only (the inventory's snapshots, the telemetry's counters), so it is
safe to run inside a scrape on the event loop: a hung libvirtd cannot reach it. Families are built
fresh each time, so an undefined pool's series disappear from the next scrape without bookkeeping.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from poolwatch.exporter.guest_metrics import guest_families
from poolwatch.exporter.policy_metrics import policy_families
from poolwatch.inventory import Inventory
from poolwatch.model import HostSnapshot, VolumeScan
from poolwatch.telemetry import ConnectionStats, Histogram, Telemetry

# floatToGoString is untyped upstream; binding it to a typed name keeps mypy --strict honest
# about what we pass in without an ignore comment.
_go_float: Callable[[float], str] = floatToGoString

POOL_LABELS = ("host", "storage_pool")
INFO_LABELS = ("host", "storage_pool", "uuid", "type", "target_path", "source", "filesystem")
EVENT_LABELS = ("host", "storage_pool", "event")
VOLUME_LABELS = ("host", "storage_pool", "volume")


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
        self._volume_cache: dict[tuple[str, str], _VolumeSamples] = {}

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
            *_pool_families(hosts.values()),
            *_volume_families(hosts.values(), self._volume_cache),
            _pool_event_family(stats),
            *_connection_families(stats),
            *policy_families(inventory, telemetry, keys),
            *guest_families(stats, max_guests_per_pool=self._max_guests()),
            *self._daemon_families(),
        ]
        # Families without samples would only add HELP/TYPE noise (the Go client drops them too).
        return [family for family in families if family.samples]

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


def _pool_families(hosts: Iterable[HostSnapshot]) -> list[Metric]:
    state = GaugeMetricFamily(
        "libvirt_storage_pool_state",
        "Storage pool state: 0 inactive, 1 building, 2 running, 3 degraded, 4 inaccessible.",
        labels=POOL_LABELS,
    )
    capacity = GaugeMetricFamily(
        "libvirt_storage_pool_capacity_bytes",
        "Size of the storage pool in bytes as libvirt reports it; running pools only.",
        labels=POOL_LABELS,
    )
    allocation = GaugeMetricFamily(
        "libvirt_storage_pool_allocation_bytes",
        "Bytes allocated in the storage pool as of its last refresh; running pools only.",
        labels=POOL_LABELS,
    )
    available = GaugeMetricFamily(
        "libvirt_storage_pool_available_bytes",
        "Free bytes in the storage pool as libvirt reports it (includes root-reserved blocks "
        "on filesystems); running pools only.",
        labels=POOL_LABELS,
    )
    fs_avail = GaugeMetricFamily(
        "libvirt_storage_pool_filesystem_avail_bytes",
        "Bytes a non-root writer such as QEMU can still write to the filesystem under the "
        "pool's target (statvfs f_bavail); local running pools only.",
        labels=POOL_LABELS,
    )
    fs_size = GaugeMetricFamily(
        "libvirt_storage_pool_filesystem_size_bytes",
        "Size in bytes of the filesystem under the pool's target (statvfs); local running "
        "pools only.",
        labels=POOL_LABELS,
    )
    info = GaugeMetricFamily(
        "libvirt_storage_pool_info",
        "Always 1; labels describe the pool. Pools with the same filesystem label share one "
        "filesystem.",
        labels=INFO_LABELS,
    )
    active = GaugeMetricFamily(
        "libvirt_storage_pool_active",
        "Whether the storage pool is running: 1 yes, 0 no.",
        labels=POOL_LABELS,
    )
    persistent = GaugeMetricFamily(
        "libvirt_storage_pool_persistent",
        "Whether the storage pool is persistent (defined, not transient): 1 yes, 0 no.",
        labels=POOL_LABELS,
    )
    autostart = GaugeMetricFamily(
        "libvirt_storage_pool_autostart",
        "Whether libvirt starts the storage pool at boot: 1 yes, 0 no.",
        labels=POOL_LABELS,
    )
    volumes = GaugeMetricFamily(
        "libvirt_storage_pool_volumes",
        "Number of volumes in the storage pool as of the last volume scan.",
        labels=POOL_LABELS,
    )
    volumes_capacity = GaugeMetricFamily(
        "libvirt_storage_pool_volumes_capacity_bytes",
        "Sum of the capacities of all volumes in the pool: the space promised to guests "
        "(thin overcommit = this / pool capacity).",
        labels=POOL_LABELS,
    )
    volumes_allocation = GaugeMetricFamily(
        "libvirt_storage_pool_volumes_allocation_bytes",
        "Sum of the bytes allocated by all volumes in the pool.",
        labels=POOL_LABELS,
    )
    unexported = GaugeMetricFamily(
        "poolwatch_volumes_unexported",
        "Volumes of the pool left out of the libvirt_storage_volume_* series by the "
        "max_volumes_per_pool cap.",
        labels=POOL_LABELS,
    )
    last_refresh = GaugeMetricFamily(
        "libvirt_storage_pool_last_refresh_timestamp_seconds",
        "Unix time of the last successful refresh of the pool, by poolwatch or anyone else.",
        labels=POOL_LABELS,
    )

    for host in hosts:
        host_name = host.name
        pools = host.pools
        for name in sorted(pools):
            pool = pools[name]
            labels = (host_name, name)
            state.add_metric(labels, pool.state)
            active.add_metric(labels, pool.active)
            persistent.add_metric(labels, pool.persistent)
            autostart.add_metric(labels, pool.autostart)
            fs = pool.filesystem
            info.add_metric(
                (
                    host_name,
                    name,
                    pool.uuid,
                    pool.type,
                    pool.target_path,
                    pool.source,
                    "" if fs is None else fs.device,
                ),
                1,
            )
            if pool.last_refresh is not None:
                last_refresh.add_metric(labels, pool.last_refresh)
            if not pool.active:
                continue  # libvirt's figures for a stopped pool are stale
            capacity.add_metric(labels, pool.capacity)
            allocation.add_metric(labels, pool.allocation)
            available.add_metric(labels, pool.available)
            if fs is not None:
                fs_avail.add_metric(labels, fs.avail_bytes)
                fs_size.add_metric(labels, fs.size_bytes)
            scan = pool.volumes
            if scan is not None:
                volumes.add_metric(labels, scan.count)
                volumes_capacity.add_metric(labels, scan.capacity_bytes)
                volumes_allocation.add_metric(labels, scan.allocation_bytes)
                unexported.add_metric(labels, scan.count - len(scan.volumes))

    return [
        state,
        capacity,
        allocation,
        available,
        fs_avail,
        fs_size,
        info,
        active,
        persistent,
        autostart,
        volumes,
        volumes_capacity,
        volumes_allocation,
        unexported,
        last_refresh,
    ]


class PartedFamily(GaugeMetricFamily):
    """A gauge family made of per-pool parts, in order; ``samples`` holds them all as well.

    A part's sample list is the same object for as long as its pool's volumes are unchanged,
    so an encoder may keep each part's text and re-encode only the parts that changed.
    """

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name, documentation, labels=labels)
        self.parts: list[tuple[tuple[str, str], list[Sample]]] = []

    def add_part(self, key: tuple[str, str], samples: list[Sample]) -> None:
        self.parts.append((key, samples))
        self.samples.extend(samples)


# Per (host, pool): the scan the samples were built from, and the pool's samples of the three
# volume families. A scan is immutable and replaced by a new object when it changes.
_VolumeSamples = tuple[VolumeScan, list[Sample], list[Sample], list[Sample]]
_VOLUME_NAMES = (
    "libvirt_storage_volume_capacity_bytes",
    "libvirt_storage_volume_allocation_bytes",
    "libvirt_storage_volume_physical_bytes",
)


def _volume_families(
    hosts: Iterable[HostSnapshot], cache: dict[tuple[str, str], _VolumeSamples]
) -> list[Metric]:
    capacity = PartedFamily(
        _VOLUME_NAMES[0],
        "Virtual size of the volume in bytes (what the guest sees).",
        VOLUME_LABELS,
    )
    allocation = PartedFamily(
        _VOLUME_NAMES[1],
        "Bytes the volume occupies in the pool.",
        VOLUME_LABELS,
    )
    physical = PartedFamily(
        _VOLUME_NAMES[2],
        "Physical size of the volume's file or device in bytes, where the driver reports it "
        "(libvirt leaves out a size of 0).",
        VOLUME_LABELS,
    )
    # This loop produces most of the page (thousands of volumes) and runs on the event loop:
    # a pool's samples are built once and reused by every collect until a scan finds its
    # volumes changed (measured: building them took ~70% of the loop's busy time under scrapes
    # at 10,000 volumes). The samples are the ones add_metric would make.
    seen = set()
    for host in hosts:
        host_name = host.name
        pools = host.pools
        for name in sorted(pools):
            pool = pools[name]
            scan = pool.volumes
            if scan is None or not pool.active:
                continue
            key = (host_name, name)
            seen.add(key)
            cached = cache.get(key)
            if cached is None or cached[0] is not scan:
                if cached is not None and cached[0].volumes is scan.volumes:
                    # A rescan that found nothing changed (the watcher keeps the tuple): the
                    # same lists tell the encoder so.
                    cached = (scan, *cached[1:])
                else:
                    cached = (scan, *_volume_samples(host_name, name, scan))
                cache[key] = cached
            capacity.add_part(key, cached[1])
            allocation.add_part(key, cached[2])
            physical.add_part(key, cached[3])
    for key in cache.keys() - seen:
        del cache[key]
    return [capacity, allocation, physical]


def _volume_samples(
    host_name: str, pool_name: str, scan: VolumeScan
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    capacity: list[Sample] = []
    allocation: list[Sample] = []
    physical: list[Sample] = []
    capacity_name, allocation_name, physical_name = _VOLUME_NAMES
    for volume in scan.volumes:
        # One labels dict serves the three samples of a volume; encoders only read it.
        labels = {"host": host_name, "storage_pool": pool_name, "volume": volume.name}
        capacity.append(Sample(capacity_name, labels, volume.capacity))
        allocation.append(Sample(allocation_name, labels, volume.allocation))
        if volume.physical is not None:
            physical.append(Sample(physical_name, labels, volume.physical))
    return capacity, allocation, physical


def _pool_event_family(stats: Iterable[tuple[HostSnapshot, ConnectionStats]]) -> Metric:
    events = CounterMetricFamily(
        "libvirt_storage_pool_events",
        "Storage pool events received from libvirt since poolwatch started, by kind; includes "
        "pools that have since been undefined.",
        labels=EVENT_LABELS,
    )
    for host, counters in stats:
        host_name = host.name
        for pool_name, by_kind in counters.pool_events.items():
            for kind, count in by_kind.items():
                events.add_metric((host_name, pool_name, kind.value), count)
    return events


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
