"""Whose turn it is on a connection's one worker (adapter/turns.py)."""

from __future__ import annotations

import asyncio

from poolwatch.adapter.turns import Turn


async def test_a_waiting_urgent_call_asks_the_running_job_to_give_way() -> None:
    turn = Turn()
    await turn.acquire(urgent=False)  # a volume-scan job runs
    routine = asyncio.create_task(turn.acquire(urgent=False))
    await asyncio.sleep(0)
    assert not turn.give_way.is_set()  # routine calls wait their turn
    urgent = asyncio.create_task(turn.acquire(urgent=True))
    await asyncio.sleep(0)
    assert turn.give_way.is_set()
    turn.release()
    await urgent  # before the routine call queued ahead of it
    assert not routine.done()
    assert not turn.give_way.is_set()
    turn.release()
    await routine
    turn.release()
