"""Families made of per-pool parts, and the cache that rebuilds a pool's part only when it changed.

Most of the page is per pool: its pool-level gauges, its volumes, its policy gauges and event
counters. Each of those families is a :class:`PartedFamily`: one part per (host, pool), in page
order. A part's sample list stays the same object for as long as what it shows of its pool is
unchanged, so the encoder (exposition.py) keeps each part's text and, after an event on one
pool, encodes that pool's lines again and reuses the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

PartKey = tuple[str, str]  # (host label, pool name)
T = TypeVar("T")


class PartedFamily(Metric):
    """A family made of per-pool parts, in order; ``samples`` holds them all as well.

    A part's sample list is the same object for as long as its pool's series are unchanged,
    so an encoder may keep each part's text and re-encode only the parts that changed.
    """

    def __init__(self, name: str, documentation: str, typ: str = "gauge") -> None:
        super().__init__(name, documentation, typ)
        self.parts: list[tuple[PartKey, list[Sample]]] = []

    def add_part(self, key: PartKey, samples: list[Sample]) -> None:
        if samples:  # an empty part would only cost the encoder a call
            self.parts.append((key, samples))
            self.samples.extend(samples)


@dataclass(frozen=True, slots=True)
class FamilySpec:
    """One parted family: its name (without ``_total`` for counters), help, labels and type."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    type: str = "gauge"

    @property
    def sample_name(self) -> str:
        # What CounterMetricFamily.add_metric names a counter's samples, so the page is the one
        # prometheus_client would encode from its own families.
        return f"{self.name}_total" if self.type == "counter" else self.name

    def family(self) -> PartedFamily:
        return PartedFamily(self.name, self.documentation, self.type)


class PartRows:
    """The sample lists of one pool's part of each family of a group, as add_metric makes them."""

    def __init__(self, specs: Sequence[FamilySpec]) -> None:
        self._specs = specs
        self.lists: list[list[Sample]] = [[] for _ in specs]

    def add(self, index: int, labels: Sequence[str], value: float) -> None:
        spec = self._specs[index]
        self.lists[index].append(
            Sample(spec.sample_name, dict(zip(spec.labels, labels, strict=True)), value)
        )


# (the object a part was built from, its token, the part's sample list of each family)
_Cached = tuple[object, Hashable, list[list[Sample]]]


class PartCache(Generic[T]):
    """The parts of a group of families, per (host, pool), across collects.

    ``token`` says what a pool's part shows: the part is rebuilt only when the token changes,
    so a pool read again with the same figures (a new snapshot every info poll) keeps its
    sample lists and thus its encoded text. ``frozen``: the objects are immutable, so the
    same object needs no token at all. Used on the event loop thread only.
    """

    def __init__(
        self,
        specs: Sequence[FamilySpec],
        build: Callable[[PartRows, str, str, T], None],
        token: Callable[[T], Hashable],
        *,
        frozen: bool = True,
    ) -> None:
        self._specs = specs
        self._build = build
        self._token = token
        self._frozen = frozen
        self._cache: dict[PartKey, _Cached] = {}
        self._families: list[PartedFamily] = []
        self._seen: set[PartKey] = set()

    def begin(self) -> None:
        """A new collect: fresh (empty) families."""
        self._families = [spec.family() for spec in self._specs]
        self._seen = set()

    def add(self, host: str, pool: str, source: T) -> None:
        """The part of (host, pool) from ``source``, appended to each family."""
        key = (host, pool)
        cached = self._cache.get(key)
        if cached is None or not (self._frozen and cached[0] is source):
            token = self._token(source)
            if cached is None or cached[1] != token:
                rows = PartRows(self._specs)
                self._build(rows, host, pool, source)
                cached = (source, token, rows.lists)
            else:
                cached = (source, token, cached[2])
            self._cache[key] = cached
        self._seen.add(key)
        for family, samples in zip(self._families, cached[2], strict=True):
            family.add_part(key, samples)

    def end(self) -> list[PartedFamily]:
        """The families of this collect; parts of pools not added since ``begin`` are dropped."""
        for gone in self._cache.keys() - self._seen:
            del self._cache[gone]
        families, self._families = self._families, []
        return families
