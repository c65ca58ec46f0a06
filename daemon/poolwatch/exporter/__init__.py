"""Prometheus exposition of the inventory: the collector and the cached /metrics renderer."""

from poolwatch.exporter.collector import InventoryCollector
from poolwatch.exporter.exposition import Exposition

__all__ = ["Exposition", "InventoryCollector"]
