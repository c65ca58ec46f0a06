"""A scrape waits, briefly, for the news it should show and does not have yet.

Two kinds. An event libvirtd has sent that the loop has not handled: the loop reads libvirt's
sockets itself (adapter/eventloop.py), and a message waiting there, or an event libvirt read
and has yet to dispatch or hand over, is handled within the next turns (under a millisecond at
p90 under load); a scrape that comes meanwhile, right after the pool stopped, would show it
running, so it waits for those turns (``Watcher.events_unhandled``). Then the re-reads an event
asked for: libvirt's event says that a pool stopped, and /metrics shows it at once; that a pool
started or was defined, it says too, but its figures (capacity, allocation, its volumes'
place) come from the re-read the event asks for, a few calls that take milliseconds, more on
a loaded host (a fast-path pool's start shows from a statvfs asked for at the event, before
the calls return, or at once from its last one when a dir pool restarts within an info poll:
Watcher._show_started_soon). A scrape that comes meanwhile would show the pool as it was, where
a scrape-time exporter would show it running; so it waits for those re-reads
(``Watcher.news_in_flight``).

Both within `SETTLE_BUDGET` in all. While a wait has outlived it (a slow or frozen libvirtd, a
loop that does not get to the events), scrapes do not wait for that kind of news at all until
it ends: a hung libvirtd costs one scrape the budget, not every scrape. Nothing is asked of
libvirt for a scrape, and with no news on its way a scrape does not wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# How long a scrape waits at most. Under the 50 ms /metrics answers in with a hung libvirtd
# (spec §10), and above a pool's re-read on a loaded host (~10 ms measured at 50 pools x 200
# volumes under 10 scrapers).
SETTLE_BUDGET = 0.025


class ScrapeSettle:
    """Awaited before a scrape renders: the events on their way to the watchers and the
    re-reads in flight that it should show, within `SETTLE_BUDGET`."""

    def __init__(
        self,
        news_in_flight: Callable[[], list[asyncio.Future[None]]],
        events_unhandled: Callable[[], bool] = lambda: False,
        *,
        budget: float = SETTLE_BUDGET,
    ) -> None:
        self._news_in_flight = news_in_flight
        self._events_unhandled = events_unhandled
        self._budget = budget
        self._events_overdue = False  # waited for past the budget, still unhandled
        self._overdue: list[asyncio.Future[None]] = []  # waited for past the budget

    async def __call__(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._budget
        await self._events(loop, deadline)
        if any(not future.done() for future in self._overdue):
            return
        pending = [future for future in self._news_in_flight() if not future.done()]
        self._overdue = []
        if not pending:
            return
        _done, late = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
        self._overdue = list(late)

    async def _events(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self._events_overdue:
            self._events_overdue = self._events_unhandled()
            return
        # The events are already queued on the loop: each turn of it handles some.
        while self._events_unhandled():
            if loop.time() >= deadline:
                self._events_overdue = True
                return
            await asyncio.sleep(0)
