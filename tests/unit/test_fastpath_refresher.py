"""Refreshes set off by files on disk: debounced, one in flight per pool (fastpath/refresher.py)."""

from __future__ import annotations

import asyncio

from poolwatch.fastpath.refresher import PoolRefresher
from tests.helpers import eventually


async def test_a_burst_costs_one_refresh_and_changes_during_it_one_more() -> None:
    started: list[str] = []
    in_flight = 0
    most = 0
    release = asyncio.Event()
    rescanned: list[str] = []

    async def refresh(pool: str) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        started.append(pool)
        await release.wait()
        in_flight -= 1

    refresher = PoolRefresher(refresh, rescanned.append, debounce=0)
    for _ in range(50):
        refresher.changed("images")
    refresher.changed("isos")

    async def both_started() -> bool:
        return len(started) == 2

    await eventually(both_started, within=5, interval=0)
    for _ in range(20):  # files keep coming while the refresh runs
        refresher.changed("images")
    release.set()

    async def all_rescanned() -> bool:
        return len(rescanned) == 3

    await eventually(all_rescanned, within=5)
    await refresher.close()
    assert sorted(started) == ["images", "images", "isos"]
    assert most == 2  # one per pool, never two for one
    assert sorted(rescanned) == ["images", "images", "isos"]


async def test_a_failed_refresh_is_logged_and_does_not_rescan() -> None:
    rescanned: list[str] = []

    async def refresh(pool: str) -> None:
        raise RuntimeError("pool is gone")

    refresher = PoolRefresher(refresh, rescanned.append, debounce=0)
    refresher.changed("images")
    await asyncio.sleep(0.05)
    await refresher.close()
    assert rescanned == []
