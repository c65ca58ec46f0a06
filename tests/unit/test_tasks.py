"""Background tasks held while they run and ended together."""

from __future__ import annotations

import asyncio

from poolwatch.tasks import TaskSet


async def test_close_cancels_what_still_runs_and_waits_for_its_cleanup() -> None:
    tasks = TaskSet()
    cleaned: list[str] = []
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits
            cleaned.append("slow")

    async def quick() -> None:
        cleaned.append("quick")

    tasks.spawn(slow())
    tasks.spawn(quick())
    await started.wait()
    await asyncio.sleep(0)

    assert (len(tasks), cleaned) == (1, ["quick"])  # a finished task is not held
    await tasks.close()
    assert (len(tasks), cleaned) == (0, ["quick", "slow"])
