"""Requests made together answered by one call (adapter/coalesce.py)."""

from __future__ import annotations

import asyncio

import pytest

from poolwatch.adapter.coalesce import Coalesced


class Lister:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, keys: list[str]) -> dict[str, list[str] | Exception]:
        self.batches.append(keys)
        if self.gate is not None:
            await self.gate.wait()
        return {k: KeyError(k) if k == "gone" else [f"{k}-vol"] for k in keys}


async def test_requests_made_together_cost_one_call_and_each_gets_its_own_answer() -> None:
    lister = Lister()
    names = Coalesced(lister)
    found = await asyncio.gather(
        *(names.get(k) for k in ("a", "b", "gone", "a")), return_exceptions=True
    )
    assert lister.batches == [["a", "b", "gone"]]
    assert found[:2] == [["a-vol"], ["b-vol"]]
    assert isinstance(found[2], KeyError)  # its caller only
    assert found[3] == ["a-vol"]


async def test_requests_made_while_a_call_runs_join_the_next_one() -> None:
    lister = Lister()
    lister.gate = asyncio.Event()
    names = Coalesced(lister)
    first = asyncio.create_task(names.get("a"))
    await asyncio.sleep(0.01)
    later = [asyncio.create_task(names.get(k)) for k in ("b", "c")]
    cancelled = asyncio.create_task(names.get("d"))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    lister.gate.set()
    assert await first == ["a-vol"]
    assert [await t for t in later] == [["b-vol"], ["c-vol"]]
    assert lister.batches == [["a"], ["b", "c", "d"]]
    with pytest.raises(asyncio.CancelledError):
        await cancelled


async def test_a_failed_call_fails_its_callers_and_the_next_batch_runs() -> None:
    calls = 0

    async def flaky(keys: list[str]) -> dict[str, list[str] | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("lost")
        return {k: [k] for k in keys}

    names = Coalesced(flaky)
    with pytest.raises(ConnectionError):
        await names.get("a")
    assert await names.get("a") == ["a"]
