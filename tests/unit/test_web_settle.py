"""A scrape waits for the re-reads in flight that it should show, within a budget; past it,
scrapes stop waiting until the late ones end (web/settle.py)."""

from __future__ import annotations

import asyncio

from poolwatch.web.settle import ScrapeSettle


async def test_a_scrape_waits_for_a_re_read_that_ends_within_the_budget() -> None:
    reread: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(ScrapeSettle(lambda: [reread], budget=5.0)())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    reread.set_result(None)
    await asyncio.wait_for(waiting, 1)


async def test_past_the_budget_scrapes_stop_waiting_until_the_late_re_read_ends() -> None:
    """A frozen libvirtd costs one scrape the budget, not every scrape."""
    late: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asked = 0

    def news_in_flight() -> list[asyncio.Future[None]]:
        nonlocal asked
        asked += 1
        return [late]

    settle = ScrapeSettle(news_in_flight, budget=0.01)
    await asyncio.wait_for(settle(), 1)  # gave up after the budget
    for _ in range(3):
        await asyncio.wait_for(settle(), 1)
    assert asked == 1  # not waited for while the late one runs
    late.set_result(None)
    await asyncio.wait_for(settle(), 1)
    assert asked == 2  # asked again once it ended


async def test_nothing_in_flight_nothing_to_wait_for() -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    await asyncio.wait_for(ScrapeSettle(lambda: [done], budget=5.0)(), 1)
    await asyncio.wait_for(ScrapeSettle(lambda: [], budget=5.0)(), 1)
