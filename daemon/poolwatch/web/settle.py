"""A scrape waits, briefly, for the news an event brought that only a re-read can show.

libvirt's event says that a pool stopped, and /metrics shows it at once; that a pool started or
was defined, it says too, but its figures (capacity, allocation, its volumes' place) come from
the re-read the event asks for, a few calls that take milliseconds, more on a loaded host (a
fast-path pool's start shows from a statvfs asked for at the event, before the calls return:
Watcher._show_started_soon). A scrape that comes meanwhile would show the pool as it was,
where a scrape-time exporter would show it running; so it waits for those re-reads
(``Watcher.news_in_flight``), at most `SETTLE_BUDGET`. While a wait has outlived it (a slow or
frozen libvirtd), scrapes do not wait at all until the late re-reads end: a hung libvirtd costs
one scrape the budget, not every scrape.
Nothing is asked of libvirt for a scrape, and with no re-read in flight a scrape does not wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# How long a scrape waits at most. Under the 50 ms /metrics answers in with a hung libvirtd
# (spec §10), and above a pool's re-read on a loaded host (~10 ms measured at 50 pools x 200
# volumes under 10 scrapers).
SETTLE_BUDGET = 0.025


class ScrapeSettle:
    """Awaited before a scrape renders: the re-reads in flight that it should show, within
    `SETTLE_BUDGET`."""

    def __init__(
        self,
        news_in_flight: Callable[[], list[asyncio.Future[None]]],
        *,
        budget: float = SETTLE_BUDGET,
    ) -> None:
        self._news_in_flight = news_in_flight
        self._budget = budget
        self._overdue: list[asyncio.Future[None]] = []  # waited for past the budget

    async def __call__(self) -> None:
        if any(not future.done() for future in self._overdue):
            return
        pending = [future for future in self._news_in_flight() if not future.done()]
        self._overdue = []
        if not pending:
            return
        _done, late = await asyncio.wait(pending, timeout=self._budget)
        self._overdue = list(late)
