"""Families made of per-pool parts, and the cache that rebuilds a pool's part only when it changed.

Most of the page is per pool: its pool-level gauges, its volumes, its policy gauges and event
counters. Each of those families is a :class:`PartedFamily`: one part per (host, pool), in page
order. A part's sample list stays the same object for as long as what it shows of its pool is
unchanged, so the encoder (exposition.py) keeps each part's text and, after an event on one
pool, encodes that pool's lines again and reuses the rest, without a step per pool: the
family says which positions changed since the parts it was made from.
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
    """A family made of per-pool parts, one per pool of the collect in page order, empty ones
    included (a pool without a line in this family), so a pool keeps its position while the
    pools stay the same; ``samples`` holds them all as well, joined when first read (the
    encoder reads the parts only).

    A part's sample list is the same object for as long as its pool's series are unchanged,
    so an encoder may keep each part's text and re-encode only the parts that changed. When the
    family comes from the parts list ``base`` with only the parts at ``changed`` replaced (the
    same pools, in the same order), an encoder that kept ``base``'s text needs to look at those
    positions only: a step per changed pool, not per pool.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        typ: str,
        parts: list[tuple[PartKey, list[Sample]]],
        *,
        filled: int,
        base: list[tuple[PartKey, list[Sample]]] | None = None,
        changed: Sequence[int] = (),
    ) -> None:
        self.parts = parts
        self.filled = filled  # the parts that are not empty
        self.base = base
        self.changed = changed
        self._samples: list[Sample] | None = None
        super().__init__(name, documentation, typ)

    @property
    def samples(self) -> list[Sample]:
        if self._samples is None:
            self._samples = [sample for _key, samples in self.parts for sample in samples]
        return self._samples

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        # Metric.__init__ sets an empty list; the parts are the samples.
        if value:
            raise ValueError("a PartedFamily's samples are its parts")


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

    def family(
        self,
        parts: list[tuple[PartKey, list[Sample]]],
        *,
        filled: int,
        base: list[tuple[PartKey, list[Sample]]] | None = None,
        changed: Sequence[int] = (),
    ) -> PartedFamily:
        return PartedFamily(
            self.name,
            self.documentation,
            self.type,
            parts,
            filled=filled,
            base=base,
            changed=changed,
        )


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

    When a collect adds the same pools in the same order as the last one (every collect but
    those after a pool came or went), the last collect's parts are kept with the rebuilt ones
    swapped in: after an event on one pool, a collect costs a token check per pool and a copy
    of the families that pool's part is in, not a step per pool and family (~20 families);
    each such family names its ``base`` and the positions that ``changed``.
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
        # This collect's pools in order, and those whose part was rebuilt.
        self._order: list[PartKey] = []
        self._rebuilt: list[PartKey] = []
        # The last collect's pools, where each is, and per family every pool's part in that
        # order (empty ones too, so a pool's place is the same in every family) and how many
        # are not empty. The lists are handed to encoders: never changed in place.
        self._last_order: list[PartKey] = []
        self._where: dict[PartKey, int] = {}
        self._slots: list[list[tuple[PartKey, list[Sample]]]] = [[] for _ in specs]
        self._filled: list[int] = [0 for _ in specs]

    def begin(self) -> None:
        """A new collect."""
        self._order = []
        self._rebuilt = []

    def add(self, host: str, pool: str, source: T) -> None:
        """The part of (host, pool) from ``source``, next in each family."""
        key = (host, pool)
        cached = self._cache.get(key)
        if cached is None or not (self._frozen and cached[0] is source):
            token = self._token(source)
            if cached is None or cached[1] != token:
                rows = PartRows(self._specs)
                self._build(rows, host, pool, source)
                self._cache[key] = (source, token, rows.lists)
                self._rebuilt.append(key)
            else:
                self._cache[key] = (source, token, cached[2])
        self._order.append(key)

    def end(self) -> list[PartedFamily]:
        """The families of this collect; parts of pools not added since ``begin`` are dropped."""
        if self._order != self._last_order:
            self._lay_out()
            return [
                spec.family(slots, filled=filled)
                for spec, slots, filled in zip(self._specs, self._slots, self._filled, strict=True)
            ]
        bases = self._slots
        changed = self._swap_rebuilt()
        return [
            spec.family(slots, filled=filled, base=base, changed=changed.get(index, ()))
            for index, (spec, slots, base, filled) in enumerate(
                zip(self._specs, self._slots, bases, self._filled, strict=True)
            )
        ]

    def _swap_rebuilt(self) -> dict[int, list[int]]:
        """The last collect's parts with the rebuilt ones swapped in; per family that changed,
        the positions of its parts that did."""
        where = self._where
        changed: dict[int, list[int]] = {}
        slots = list(self._slots)
        for key in self._rebuilt:
            position = where[key]
            for index, samples in enumerate(self._cache[key][2]):
                old = slots[index][position][1]
                if not samples and not old:
                    continue
                positions = changed.get(index)
                if positions is None:
                    positions = changed[index] = []
                    slots[index] = list(slots[index])
                slots[index][position] = (key, samples)
                positions.append(position)
                self._filled[index] += bool(samples) - bool(old)
        self._slots = slots
        return changed

    def _lay_out(self) -> None:
        """Every family's parts from scratch, in this collect's order."""
        order = self._order
        if len(self._cache) > len(order):
            for gone in self._cache.keys() - set(order):
                del self._cache[gone]
        lists = [self._cache[key][2] for key in order]
        self._slots = [
            [(key, rows[index]) for key, rows in zip(order, lists, strict=True)]
            for index in range(len(self._specs))
        ]
        self._filled = [sum(1 for _key, samples in slots if samples) for slots in self._slots]
        self._last_order = order
        self._where = {key: position for position, key in enumerate(order)}
