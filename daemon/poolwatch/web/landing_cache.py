"""The landing page as served: rendered at most once a second, in a thread, shared by every request.

Rendering the page of a big host (50 pools with their sparklines) is ~6 ms of Python, on a
shared machine much more; rendered on the loop for each request, 8 clients hammering `/` kept
the loop busy with nothing else (tests/reliability/test_landing_load.py). Its texts depend on
the inventory and on the clock ("3 min ago", the footer's time), so a page is kept while the
inventory's generation and the clock's second stay the same; and a new one is rendered at most
once a second (`MIN_INTERVAL`), whatever the requests and however fast the inventory changes
(a poll moves the generation once per pool): the page is at most a second behind. The render
runs in a thread of its own from a copy of the inventory taken on the loop, so a page of
hundreds of pools does not stall the loop either.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import NamedTuple

from poolwatch.documents import InventorySnapshot, snapshot_of
from poolwatch.inventory import Inventory
from poolwatch.web.landing import render_snapshot

# The least time between two renders, in seconds (of time.monotonic, not the page's clock).
MIN_INTERVAL = 1.0


class _Page(NamedTuple):
    generation: int
    second: int  # the page's clock time, in whole seconds: its "ago" texts are that coarse
    body: bytes


class LandingPageCache:
    """The landing page of ``inventory`` at ``clock()``, rendered as seldom as it may be.

    ``page`` is called on the event loop thread only.
    """

    def __init__(
        self,
        inventory: Inventory,
        clock: Callable[[], float],
        *,
        min_interval: float = MIN_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
        renderer: concurrent.futures.Executor | None = None,
    ) -> None:
        self._inventory = inventory
        self._clock = clock
        self._min_interval = min_interval
        self._monotonic = monotonic
        self._page: _Page | None = None
        self._rendering: asyncio.Future[_Page] | None = None
        self._started_at = 0.0  # of the last render, by self._monotonic
        self.renders = 0
        self._renderer = renderer or concurrent.futures.ThreadPoolExecutor(1, "landing-page")

    async def page(self) -> bytes:
        """The page's HTML, UTF-8 encoded; shared with other requests."""
        now = self._clock()
        page = self._page
        if page is not None and (
            (page.generation == self._inventory.generation and page.second == int(now))
            or self._monotonic() - self._started_at < self._min_interval
        ):
            return page.body
        if self._rendering is None:
            snapshot = snapshot_of(self._inventory)  # on the loop: the mappings change there
            self._started_at = self._monotonic()
            self.renders += 1
            rendering = asyncio.get_running_loop().run_in_executor(
                self._renderer, _render, snapshot, now
            )
            rendering.add_done_callback(self._rendered)
            self._rendering = rendering
        return (await asyncio.shield(self._rendering)).body

    def _rendered(self, rendering: asyncio.Future[_Page]) -> None:
        if self._rendering is rendering:
            self._rendering = None
        if not rendering.cancelled() and rendering.exception() is None:
            self._page = rendering.result()

    def close(self) -> None:
        self._renderer.shutdown(wait=False, cancel_futures=True)


def _render(snapshot: InventorySnapshot, now: float) -> _Page:
    """In the render thread."""
    body = render_snapshot(snapshot, now=now).encode()
    return _Page(snapshot.generation, int(now), body)
