"""The landing page cache: one render shared by every request, at most one a second, and a
page never more than a second behind the inventory or the clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest

from poolwatch.inventory import Inventory
from poolwatch.web import landing_cache
from poolwatch.web.landing import render_landing
from poolwatch.web.landing_cache import LandingPageCache
from tests.unit.factories import GIB, HOST_A, NOW, FakeClock, sample_inventory


@dataclass
class Setup:
    inventory: Inventory
    clock: FakeClock  # the page's clock (unix time)
    monotonic: FakeClock  # the cache's interval clock
    cache: LandingPageCache


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    clock, monotonic = FakeClock(), FakeClock(100.0)
    inventory = sample_inventory(clock)
    cache = LandingPageCache(inventory, clock, monotonic=monotonic)
    yield Setup(inventory, clock, monotonic, cache)
    cache.close()


def _grow(inventory: Inventory) -> None:
    pool = inventory.pool(HOST_A, "default")
    assert pool is not None
    inventory.put_pool(HOST_A, replace(pool, allocation=pool.allocation + 7 * GIB))


async def test_concurrent_requests_share_one_render(setup: Setup) -> None:
    pages = await asyncio.gather(*(setup.cache.page() for _ in range(20)))
    assert setup.cache.renders == 1
    assert all(page is pages[0] for page in pages)
    assert pages[0].decode() == render_landing(setup.inventory, now=NOW)


async def test_an_unchanged_page_is_not_rendered_again(setup: Setup) -> None:
    await setup.cache.page()
    setup.monotonic.now += 60
    setup.clock.now += 0.5  # the same second: nothing on the page could differ
    await setup.cache.page()
    assert setup.cache.renders == 1


async def test_a_change_shows_within_a_second_and_not_by_more_renders(setup: Setup) -> None:
    before = await setup.cache.page()
    _grow(setup.inventory)
    # Within the interval the page in hand is served: under constant change (a poll moves the
    # generation once per pool) renders stay at one a second.
    setup.monotonic.now += 0.5
    assert await setup.cache.page() is before
    assert setup.cache.renders == 1
    setup.monotonic.now += 0.5
    after = await setup.cache.page()
    assert setup.cache.renders == 2
    assert after.decode() == render_landing(setup.inventory, now=NOW)
    assert after != before


async def test_the_clock_moving_updates_its_ago_texts(setup: Setup) -> None:
    await setup.cache.page()
    setup.clock.now += 120
    setup.monotonic.now += 1
    page = await setup.cache.page()
    assert setup.cache.renders == 2
    assert page.decode() == render_landing(setup.inventory, now=NOW + 120)


async def test_a_failed_render_is_not_kept(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("bug")

    monkeypatch.setattr(landing_cache, "render_snapshot", broken)
    with pytest.raises(RuntimeError):
        await setup.cache.page()
    monkeypatch.undo()
    assert (await setup.cache.page()).decode() == render_landing(setup.inventory, now=NOW)
