from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from poolwatch.exporter.collector import InventoryCollector
from poolwatch.inventory import Inventory
from poolwatch.model import PoolEventKind, PoolState
from poolwatch.telemetry import Telemetry
from tests.unit.factories import (
    GIB,
    HOST_A,
    HOST_B,
    HOSTILE,
    NOW,
    URI_A,
    URI_B,
    FakeClock,
    event,
    pool,
    sample_inventory,
    sample_telemetry,
)

BUILD = {"version": "1.2.3", "libvirt_version": "10.0.0", "python_version": "3.11.7"}


def make_registry(inventory: Inventory, telemetry: Telemetry) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(InventoryCollector(inventory, telemetry, **BUILD))
    return registry


@pytest.fixture
def inventory() -> Inventory:
    return sample_inventory()


@pytest.fixture
def telemetry() -> Telemetry:
    return sample_telemetry()


@pytest.fixture
def registry(inventory: Inventory, telemetry: Telemetry) -> CollectorRegistry:
    return make_registry(inventory, telemetry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def on_a(storage_pool: str) -> dict[str, str]:
    return {"host": HOST_A, "storage_pool": storage_pool}


def samples_of(registry: CollectorRegistry, storage_pool: str) -> set[str]:
    return {
        s.name
        for family in registry.collect()
        for s in family.samples
        if s.labels.get("storage_pool") == storage_pool
    }


def test_every_pool_has_state_flags_and_info(registry: CollectorRegistry) -> None:
    assert value(registry, "libvirt_storage_pool_state", **on_a("default")) == PoolState.RUNNING
    assert value(registry, "libvirt_storage_pool_state", **on_a("backup")) == PoolState.INACTIVE
    assert value(registry, "libvirt_storage_pool_active", **on_a("backup")) == 0
    assert value(registry, "libvirt_storage_pool_autostart", **on_a("backup")) == 1
    assert value(registry, "libvirt_storage_pool_persistent", **on_a("backup")) == 1
    assert value(registry, "libvirt_storage_pool_active", **on_a(HOSTILE)) == 1
    assert value(registry, "libvirt_storage_pool_persistent", **on_a(HOSTILE)) == 0
    assert value(registry, "libvirt_storage_pool_autostart", **on_a(HOSTILE)) == 0


def test_info_labels_describe_the_pool(inventory: Inventory, registry: CollectorRegistry) -> None:
    default = inventory.hosts[HOST_A].pools["default"]
    labels = {
        **on_a("default"),
        "uuid": default.uuid,
        "type": "dir",
        "target_path": "/var/lib/libvirt/default",
        "source": "",
        "filesystem": "253:1",
    }
    assert value(registry, "libvirt_storage_pool_info", **labels) == 1
    nfs = inventory.hosts[HOST_A].pools["nfs"]
    labels = {
        **on_a("nfs"),
        "uuid": nfs.uuid,
        "type": "netfs",
        "target_path": "/var/lib/libvirt/nfs",
        "source": "nas.example:/export/vm",
        "filesystem": "",  # no local statvfs for a remote filesystem
    }
    assert value(registry, "libvirt_storage_pool_info", **labels) == 1


def test_sizes_only_for_running_pools(registry: CollectorRegistry) -> None:
    assert value(registry, "libvirt_storage_pool_capacity_bytes", **on_a("default")) == 100 * GIB
    assert value(registry, "libvirt_storage_pool_allocation_bytes", **on_a("default")) == 40 * GIB
    assert value(registry, "libvirt_storage_pool_available_bytes", **on_a("default")) == 60 * GIB
    stale = samples_of(registry, "backup")
    assert not stale & {
        "libvirt_storage_pool_capacity_bytes",
        "libvirt_storage_pool_allocation_bytes",
        "libvirt_storage_pool_available_bytes",
        "libvirt_storage_pool_volumes",
        "poolwatch_volumes_unexported",
    }
    assert "libvirt_storage_pool_last_refresh_timestamp_seconds" in stale


def test_filesystem_figures_only_where_measured(registry: CollectorRegistry) -> None:
    avail = "libvirt_storage_pool_filesystem_avail_bytes"
    assert value(registry, avail, **on_a("default")) == 50 * GIB
    assert value(registry, "libvirt_storage_pool_filesystem_size_bytes", **on_a("default")) == (
        200 * GIB
    )
    assert value(registry, avail, **on_a("nfs")) is None


def test_volume_summary_and_unexported_count(registry: CollectorRegistry) -> None:
    assert value(registry, "libvirt_storage_pool_volumes", **on_a("default")) == 5
    assert value(registry, "libvirt_storage_pool_volumes_capacity_bytes", **on_a("default")) == (
        60 * GIB
    )
    assert value(registry, "libvirt_storage_pool_volumes_allocation_bytes", **on_a("default")) == (
        15 * GIB
    )
    assert value(registry, "poolwatch_volumes_unexported", **on_a("default")) == 2
    # Present at 0 for a complete scan, so the series does not flap.
    assert value(registry, "libvirt_storage_pool_volumes", **on_a("nfs")) == 0
    assert value(registry, "poolwatch_volumes_unexported", **on_a("nfs")) == 0
    # Not scanned yet: no figures rather than a wrong 0.
    assert value(registry, "libvirt_storage_pool_volumes", **on_a(HOSTILE)) is None


def test_volume_series_for_the_kept_volumes_only(registry: CollectorRegistry) -> None:
    def vol(name: str) -> dict[str, str]:
        return {**on_a("default"), "volume": name}

    assert value(registry, "libvirt_storage_volume_capacity_bytes", **vol("c.qcow2")) == 20 * GIB
    assert value(registry, "libvirt_storage_volume_allocation_bytes", **vol("c.qcow2")) == 5 * GIB
    assert value(registry, "libvirt_storage_volume_physical_bytes", **vol("a.qcow2")) == 2 * GIB
    assert value(registry, "libvirt_storage_volume_capacity_bytes", **vol("b.raw")) == GIB
    assert value(registry, "libvirt_storage_volume_physical_bytes", **vol("b.raw")) is None
    volumes = {
        s.labels["volume"]
        for family in registry.collect()
        if family.name == "libvirt_storage_volume_capacity_bytes"
        for s in family.samples
    }
    assert volumes == {"a.qcow2", "b.raw", "c.qcow2"}


def test_last_refresh_where_known(registry: CollectorRegistry) -> None:
    name = "libvirt_storage_pool_last_refresh_timestamp_seconds"
    assert value(registry, name, **on_a("default")) == NOW - 60
    assert value(registry, name, **on_a("nfs")) is None


def test_pool_events_include_undefined_pools(registry: CollectorRegistry) -> None:
    name = "libvirt_storage_pool_events_total"
    assert value(registry, name, **on_a("default"), event="started") == 1
    assert value(registry, name, **on_a("default"), event="refreshed") == 2
    assert value(registry, name, **on_a("transient"), event="undefined") == 1
    assert value(registry, name, **on_a("default"), event="stopped") is None


def test_each_event_moves_its_count_on_the_next_collect(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    # The collector knows a pool's unchanged counts by identity (the part is not rebuilt).
    name = "libvirt_storage_pool_events_total"
    for expected in (2, 3):
        telemetry.record_pool_event(HOST_A, event("default", PoolEventKind.STARTED))
        assert value(registry, name, **on_a("default"), event="started") == expected
    assert value(registry, name, **on_a("default"), event="refreshed") == 2


def test_connection_health(registry: CollectorRegistry) -> None:
    assert value(registry, "poolwatch_libvirt_up", host=HOST_A, uri=URI_A) == 1
    assert value(registry, "poolwatch_libvirt_up", host=HOST_B, uri=URI_B) == 0
    assert value(registry, "poolwatch_libvirt_connects_total", host=HOST_B) == 1
    assert value(registry, "poolwatch_libvirt_disconnects_total", host=HOST_B) == 1
    assert value(registry, "poolwatch_libvirt_disconnects_total", host=HOST_A) == 0
    assert value(registry, "poolwatch_last_poll_success_timestamp_seconds", host=HOST_A) == NOW


def test_disconnected_host_keeps_serving_its_last_pools(registry: CollectorRegistry) -> None:
    labels = {"host": HOST_B, "storage_pool": "images"}
    assert value(registry, "libvirt_storage_pool_allocation_bytes", **labels) == 85 * GIB


def test_poll_duration_histogram_is_cumulative(registry: CollectorRegistry) -> None:
    def bucket(kind: str, le: str) -> float | None:
        return value(
            registry, "poolwatch_poll_duration_seconds_bucket", host=HOST_A, kind=kind, le=le
        )

    # info observed 0.003 and 0.2
    assert bucket("info", "0.0025") == 0
    assert bucket("info", "0.005") == 1
    assert bucket("info", "0.1") == 1
    assert bucket("info", "0.25") == 2
    assert bucket("info", "30.0") == 2
    assert bucket("info", "+Inf") == 2
    count = "poolwatch_poll_duration_seconds_count"
    assert value(registry, count, host=HOST_A, kind="info") == 2
    total = value(registry, "poolwatch_poll_duration_seconds_sum", host=HOST_A, kind="info")
    assert total == pytest.approx(0.203)
    # volumes observed 1.5 and 45 (above every bound: only +Inf counts it)
    assert bucket("volumes", "2.5") == 1
    assert bucket("volumes", "30.0") == 1
    assert bucket("volumes", "+Inf") == 2


def test_poll_errors_start_at_zero_for_every_kind(registry: CollectorRegistry) -> None:
    name = "poolwatch_poll_errors_total"
    assert value(registry, name, host=HOST_A, kind="info") == 1
    assert value(registry, name, host=HOST_A, kind="volumes") == 0
    assert value(registry, name, host=HOST_B, kind="info") is None  # never polled


def test_daemon_metrics(telemetry: Telemetry, registry: CollectorRegistry) -> None:
    assert value(registry, "poolwatch_build_info", **BUILD) == 1
    assert value(registry, "poolwatch_config_last_reload_successful") == 1
    assert value(registry, "poolwatch_config_last_reload_success_timestamp_seconds") == NOW
    telemetry.record_reload(ok=False)
    assert value(registry, "poolwatch_config_last_reload_successful") == 0
    assert value(registry, "poolwatch_config_last_reload_success_timestamp_seconds") == NOW


def test_web_config_reloads_are_exported_once_there_is_a_web_config(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    # Without a web config file there is nothing to report.
    assert value(registry, "poolwatch_web_config_last_reload_successful") is None
    telemetry.record_web_config_reload(True)
    assert value(registry, "poolwatch_web_config_last_reload_successful") == 1
    assert value(registry, "poolwatch_web_config_last_reload_success_timestamp_seconds") == NOW
    # A failed certificate renewal, visible to Prometheus (it used to be only in the log).
    telemetry.record_web_config_reload(False)
    assert value(registry, "poolwatch_web_config_last_reload_successful") == 0
    assert value(registry, "poolwatch_web_config_last_reload_success_timestamp_seconds") == NOW


def test_lost_log_lines_are_counted_and_move_the_generation(
    inventory: Inventory, telemetry: Telemetry
) -> None:
    dropped = [0]
    collector = InventoryCollector(
        inventory, telemetry, **BUILD, log_lines_dropped=lambda: dropped[0]
    )
    registry = CollectorRegistry()
    registry.register(collector)
    assert value(registry, "poolwatch_log_lines_dropped_total") == 0
    before = collector.generation()
    dropped[0] = 3
    assert collector.generation() != before  # the cached /metrics page is rendered again
    assert value(registry, "poolwatch_log_lines_dropped_total") == 3


def test_undefined_pool_vanishes_on_next_collect(
    inventory: Inventory, registry: CollectorRegistry
) -> None:
    assert "libvirt_storage_pool_state" in samples_of(registry, "default")
    inventory.drop_pool(HOST_A, "default")
    # Only the event history of the pool stays (it is a counter of what happened).
    assert samples_of(registry, "default") == {"libvirt_storage_pool_events_total"}


def test_replace_pools_drops_pools_not_listed(
    inventory: Inventory, registry: CollectorRegistry
) -> None:
    inventory.replace_pools(HOST_A, {"nfs": pool("nfs")})
    assert samples_of(registry, HOSTILE) == set()
    assert value(registry, "libvirt_storage_pool_state", **on_a("nfs")) == PoolState.RUNNING


def test_stopped_pool_loses_its_sizes(inventory: Inventory, registry: CollectorRegistry) -> None:
    stopped = pool("default", state=PoolState.INACTIVE, active=False)
    inventory.put_pool(HOST_A, stopped)
    assert value(registry, "libvirt_storage_pool_capacity_bytes", **on_a("default")) is None
    assert value(registry, "libvirt_storage_pool_state", **on_a("default")) == 0


def test_stopped_pool_with_a_stale_scan_exports_no_volumes(
    inventory: Inventory, registry: CollectorRegistry
) -> None:
    default = inventory.hosts[HOST_A].pools["default"]
    inventory.put_pool(HOST_A, pool("default", active=False, volumes=default.volumes))
    assert value(registry, "libvirt_storage_pool_volumes", **on_a("default")) is None
    assert not any(
        name.startswith("libvirt_storage_volume_") for name in samples_of(registry, "default")
    )


def test_hostile_names_round_trip_through_the_text_format(registry: CollectorRegistry) -> None:
    text = generate_latest(registry).decode()
    parsed = [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "libvirt_storage_pool_state"
    ]
    assert {"host": HOST_A, "storage_pool": HOSTILE} in [s.labels for s in parsed]


def test_output_is_well_formed(registry: CollectorRegistry) -> None:
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    series = [(s.name, tuple(sorted(s.labels.items()))) for f in families for s in f.samples]
    assert len(series) == len(set(series)), "duplicate series"
    for family in families:
        assert family.documentation, family.name
        assert family.samples, f"{family.name} exported without samples"
    by_name = {f.name: f.type for f in families}
    assert by_name["libvirt_storage_pool_events"] == "counter"
    assert by_name["poolwatch_poll_duration_seconds"] == "histogram"
    assert by_name["libvirt_storage_pool_state"] == "gauge"


def test_empty_inventory_exports_only_the_daemon_metrics() -> None:
    registry = make_registry(Inventory(clock=FakeClock()), Telemetry(clock=FakeClock()))
    names = {family.name for family in registry.collect()}
    assert names == {
        "poolwatch_build_info",
        "poolwatch_config_last_reload_successful",
        "poolwatch_config_last_reload_success_timestamp_seconds",
        "poolwatch_log_lines_dropped",
        "poolwatch_http_connections_closed",
    }


def test_registering_does_not_collect() -> None:
    class Exploding(InventoryCollector):
        def collect(self) -> list[Metric]:
            raise AssertionError("collect() called at registration")

    collector = Exploding(sample_inventory(), sample_telemetry(), **BUILD)
    assert collector.describe() == []
    # auto_describe would fall back to collect() for a collector without describe().
    CollectorRegistry(auto_describe=True).register(collector)


def test_a_host_without_counters_still_exports_its_pools(inventory: Inventory) -> None:
    # Counters are the telemetry's; a host it does not know loses only the series they feed.
    telemetry = Telemetry(clock=FakeClock())
    telemetry.add_connection(HOST_B, name=HOST_B)
    registry = make_registry(inventory, telemetry)
    assert value(registry, "libvirt_storage_pool_state", **on_a("default")) == PoolState.RUNNING
    assert value(registry, "poolwatch_libvirt_up", host=HOST_A, uri=URI_A) is None
    assert value(registry, "poolwatch_libvirt_up", host=HOST_B, uri=URI_B) == 0


def test_generation_moves_with_the_inventory_and_with_the_telemetry(
    inventory: Inventory, telemetry: Telemetry
) -> None:
    collector = InventoryCollector(inventory, telemetry, **BUILD)
    before = collector.generation()
    inventory.put_pool(HOST_A, pool("fresh"))
    after_pool = collector.generation()
    telemetry.record_poll(HOST_A, "info", 0.01, ok=True)
    after_poll = collector.generation()
    assert before < after_pool < after_poll
    telemetry.record_pool_event(HOST_A, event("fresh", PoolEventKind.STARTED))
    assert collector.generation() == after_poll  # the re-read that follows publishes it
