"""A scrape waits for the events libvirt sent that the loop has not handled and for the re-reads
in flight that it should show, within a budget; past it, scrapes stop waiting until the late
ones end (web/settle.py)."""

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


async def test_a_scrape_waits_for_an_event_libvirt_sent_until_the_loop_handled_it() -> None:
    """A pool stopped and libvirtd has said so, but the loop has not handled the
    event yet (it does a turn or two later): the scrape renders after it, not before."""
    loop = asyncio.get_running_loop()
    unhandled = True
    shown: list[str] = []

    def handle() -> None:
        nonlocal unhandled
        unhandled = False
        shown.append("stopped")

    loop.call_soon(loop.call_soon, handle)  # two turns of the loop away
    await ScrapeSettle(lambda: [], lambda: unhandled, budget=1.0)()  # in this task: no turn
    assert shown == ["stopped"]


async def test_events_the_loop_does_not_get_to_cost_one_scrape_the_budget() -> None:
    stuck = True
    asked = 0

    def unhandled() -> bool:
        nonlocal asked
        asked += 1
        return stuck

    settle = ScrapeSettle(lambda: [], unhandled, budget=0.01)
    await asyncio.wait_for(settle(), 1)  # gave up after the budget
    asked = 0
    for _ in range(3):
        await asyncio.wait_for(settle(), 1)
    assert asked == 3  # one look each, no wait while they stay unhandled
    stuck = False
    await asyncio.wait_for(settle(), 1)  # handled at last: waits again from now on
    stuck, asked = True, 0
    await asyncio.wait_for(settle(), 1)
    assert asked > 1
