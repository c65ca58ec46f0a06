"""Background tasks an owner starts and must end: held while they run (asyncio keeps only weak
references to tasks, so an unheld one can vanish mid-flight), and cancelled and awaited together
when the owner stops."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class TaskSet:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        """Cancel every task still running; ``close`` also waits for them to end."""
        for task in self._tasks:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks)
        self.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._tasks)
