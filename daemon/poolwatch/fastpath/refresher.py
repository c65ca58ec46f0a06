"""pool.refresh() when a pool's files changed on disk: debounced, one in flight per pool.

A burst of file creations (a guest image unpacked, a backup restored) costs one refresh; changes
seen while a refresh runs cost one more after it, never a second one beside it. After each
refresh ``refreshed(pool)`` lets the watcher scan the pool's volumes, so the new files show
without waiting for the volume timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger()

# Time to let a burst settle: a refresh right at the first event would miss the rest of it.
DEBOUNCE = 0.1


class PoolRefresher:
    def __init__(
        self,
        refresh: Callable[[str], Awaitable[None]],
        refreshed: Callable[[str], None],
        *,
        debounce: float = DEBOUNCE,
    ) -> None:
        self._refresh = refresh
        self._refreshed = refreshed
        self._debounce = debounce
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    def changed(self, pool: str) -> None:
        """Files of ``pool`` came or went: refresh it soon (once, however many call this)."""
        if pool in self._running:
            self._again.add(pool)
            return
        task = asyncio.create_task(self._run(pool), name=f"refresh {pool}")
        self._running[pool] = task
        task.add_done_callback(lambda _t: self._running.pop(pool, None))

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, pool: str) -> None:
        while True:
            await asyncio.sleep(self._debounce)
            self._again.discard(pool)  # what happened before the refresh starts, it sees
            try:
                await self._refresh(pool)
            except Exception as exc:
                log.warning("pool_refresh_failed", pool=pool, error=str(exc), trigger="files")
            else:
                self._refreshed(pool)
            if pool not in self._again:
                return
