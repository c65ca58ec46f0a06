"""Prometheus exposition of the inventory and telemetry: the collector and the cached /metrics
renderer."""

from poolwatch.exporter.collector import InventoryCollector
from poolwatch.exporter.exposition import Exposition

__all__ = ["Exposition", "InventoryCollector"]
