from __future__ import annotations

import gzip

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from poolwatch.exporter.collector import InventoryCollector
from poolwatch.exporter.exposition import MAX_CACHED_VARIANTS, Exposition
from poolwatch.inventory import Inventory
from tests.unit.factories import HOST_A, HOSTILE, pool, sample_inventory

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1"
)


class CountingCollector(InventoryCollector):
    """Counts full renders: every render collects exactly once."""

    collects = 0

    def collect(self) -> list[Metric]:
        self.collects += 1
        return super().collect()


@pytest.fixture
def inventory() -> Inventory:
    return sample_inventory()


@pytest.fixture
def collector(inventory: Inventory) -> CountingCollector:
    return CountingCollector(inventory, version="1", libvirt_version="2", python_version="3")


@pytest.fixture
def exposition(inventory: Inventory, collector: CountingCollector) -> Exposition:
    registry = CollectorRegistry()
    registry.register(collector)
    return Exposition(registry, lambda: inventory.generation)


def test_plain_text_by_default(exposition: Exposition) -> None:
    body, headers = exposition.render(None, None)
    assert headers == {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    assert b"libvirt_storage_pool_state{" in body


def test_unchanged_inventory_is_served_from_cache(
    exposition: Exposition, collector: CountingCollector
) -> None:
    first = exposition.render(None, None)
    second = exposition.render(None, None)
    assert second[0] is first[0]
    assert second[1] is first[1]
    assert collector.collects == 1


def test_new_generation_renders_again(
    inventory: Inventory, exposition: Exposition, collector: CountingCollector
) -> None:
    before, _ = exposition.render(None, None)
    inventory.put_pool(HOST_A, pool("fresh"))
    after, _ = exposition.render(None, None)
    assert collector.collects == 2
    assert b'storage_pool="fresh"' in after
    assert b'storage_pool="fresh"' not in before


def test_openmetrics_when_asked(exposition: Exposition) -> None:
    body, headers = exposition.render(OPENMETRICS, None)
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    samples = [
        s
        # untyped upstream
        for family in openmetrics_families(body.decode())  # type: ignore[no-untyped-call]
        for s in family.samples
        if s.name == "libvirt_storage_pool_state"
    ]
    assert {"host": HOST_A, "storage_pool": HOSTILE} in [s.labels for s in samples]


def test_prometheus_scrape_accept_header_gets_openmetrics(exposition: Exposition) -> None:
    body, headers = exposition.render(PROMETHEUS_ACCEPT, "gzip")
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert gzip.decompress(body).endswith(b"# EOF\n")


def test_formats_are_cached_separately(
    exposition: Exposition, collector: CountingCollector
) -> None:
    plain, _ = exposition.render(None, None)
    openmetrics, _ = exposition.render(OPENMETRICS, None)
    assert plain != openmetrics
    assert exposition.render(OPENMETRICS, None)[0] is openmetrics
    assert exposition.render("text/plain", None)[0] is plain
    assert collector.collects == 2


def test_gzip_when_accepted(exposition: Exposition, collector: CountingCollector) -> None:
    plain, _ = exposition.render(None, None)
    body, headers = exposition.render(None, "deflate, gzip;q=0.8")
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert gzip.decompress(body) == plain
    # Compressed from the cached plain page, not rendered again.
    assert collector.collects == 1
    assert exposition.render(None, "gzip")[0] is body


def test_no_gzip_unless_accepted(exposition: Exposition) -> None:
    _, headers = exposition.render(None, "identity, br")
    assert "Content-Encoding" not in headers


def test_gzip_first_then_plain_renders_once(
    exposition: Exposition, collector: CountingCollector
) -> None:
    compressed, _ = exposition.render(None, "gzip")
    plain, _ = exposition.render(None, None)
    assert gzip.decompress(compressed) == plain
    assert collector.collects == 1


def test_cache_is_bounded_within_a_generation(
    exposition: Exposition, collector: CountingCollector
) -> None:
    # Each made-up OpenMetrics version is a content type of its own.
    for minor in range(MAX_CACHED_VARIANTS):
        exposition.render(f"application/openmetrics-text; version=1.{minor}.0", None)
    assert collector.collects == MAX_CACHED_VARIANTS
    one_too_many = "application/openmetrics-text; version=9.9.9"
    exposition.render(one_too_many, None)
    exposition.render(one_too_many, None)
    assert collector.collects == MAX_CACHED_VARIANTS + 2
