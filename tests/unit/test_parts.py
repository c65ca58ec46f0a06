"""The per-pool part cache: whatever sequence of collects, each family holds exactly the parts a
collect built from scratch would hold, in order, and a pool's unchanged part keeps its samples."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from poolwatch.exporter.parts import FamilySpec, PartCache, PartRows

SPECS = tuple(FamilySpec(f"f{index}", "help", ("host", "storage_pool")) for index in range(3))
POOLS = [f"p{index}" for index in range(6)]

# What a pool shows: per family, a value or nothing (no line in that family).
Shown = tuple[int | None, ...]


def build(rows: PartRows, host: str, pool: str, shown: Shown) -> None:
    for index, value in enumerate(shown):
        if value is not None:
            rows.add(index, (host, pool), value)


def expected(collect: list[tuple[str, Shown]]) -> list[list[tuple[str, float]]]:
    return [
        [(pool, float(shown[index])) for pool, shown in collect if shown[index] is not None]
        for index in range(len(SPECS))
    ]


def parts_of(cache: PartCache[Shown], collect: list[tuple[str, Shown]]) -> list[list[object]]:
    """Each family's non-empty parts after ``collect``; checks what every family holds."""
    before = list(cache._slots)
    cache.begin()
    for pool, shown in collect:
        cache.add("h", pool, shown)
    families = cache.end()
    assert [family.name for family in families] == [spec.name for spec in SPECS]
    for family, base in zip(families, before, strict=True):
        assert family.samples == [s for _key, samples in family.parts for s in samples]
        # Every pool has its place in every family, empty or not.
        assert [key for key, _samples in family.parts] == [("h", pool) for pool, _ in collect]
        assert family.filled == sum(1 for _key, samples in family.parts if samples)
        if family.base is not None:
            # Made from the last collect's list: only the positions it names differ.
            assert family.base is base
            unchanged = set(range(len(base))) - set(family.changed)
            assert all(family.parts[index] is base[index] for index in unchanged)
    return [[samples for _key, samples in family.parts if samples] for family in families]


shown = st.tuples(*[st.none() | st.integers(0, 2) for _ in SPECS])
# Mostly the same pools in the same order (the swap path), sometimes others (the full layout).
collects = st.lists(
    st.lists(st.sampled_from(POOLS), unique=True).flatmap(
        lambda pools: st.tuples(*[st.tuples(st.just(pool), shown) for pool in pools]).map(list)
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(collects, st.data())
def test_every_collect_holds_what_a_fresh_collect_would(
    sequence: list[list[tuple[str, Shown]]], data: st.DataObject
) -> None:
    cache: PartCache[Shown] = PartCache(SPECS, build, lambda value: value, frozen=False)
    last: dict[str, list[object]] = {}
    previous: dict[str, Shown] = {}
    for collect in sequence:
        # Half the time, the same pools in the same order with some of them changed.
        if previous and data.draw(st.booleans()):
            collect = [
                (pool, data.draw(shown) if data.draw(st.booleans()) else old)
                for pool, old in previous.items()
            ]
        got = parts_of(cache, collect)
        want = expected(collect)
        assert [
            [(samples[0].labels["storage_pool"], samples[0].value) for samples in family]
            for family in got
        ] == want
        # A pool whose part did not change keeps its very sample lists (its encoded text).
        now = {
            pool: [s for family in got for s in family if s[0].labels["storage_pool"] == pool]
            for pool, _shown in collect
        }
        for pool, value in collect:
            if previous.get(pool) == value and pool in last:
                assert all(a is b for a, b in zip(now[pool], last[pool], strict=True))
        last, previous = now, dict(collect)


def test_a_stopped_pool_gives_up_its_lines_and_takes_them_back() -> None:
    cache: PartCache[Shown] = PartCache(SPECS, build, lambda value: value, frozen=False)
    running, stopped = (1, 1, 1), (1, None, None)
    collect = [("a", running), ("b", running), ("c", running)]
    first = parts_of(cache, collect)
    collect[1] = ("b", stopped)
    second = parts_of(cache, collect)
    assert [len(family) for family in second] == [3, 2, 2]
    assert second[1][0] is first[1][0]
    assert second[1][1] is first[1][2]
    collect[1] = ("b", running)
    third = parts_of(cache, collect)
    assert [[s[0].labels["storage_pool"] for s in family] for family in third] == [
        ["a", "b", "c"]
    ] * 3
