"""Whose turn it is on a connection's one worker (adapter/connection.py ``_Turn``), and the
pool listing that gives way to an event's re-read between two pools."""

from __future__ import annotations

import asyncio
import threading

from poolwatch.adapter.connection import LibvirtSource, _Turn
from tests.unit.test_reader import FakePool


async def test_a_waiting_urgent_call_asks_the_running_job_to_give_way() -> None:
    turn = _Turn()
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


class FakeConnection:
    """libvirt's side of a host of ``count`` running dir pools; every RPC lands in ``calls``.
    The first pool's info() blocks until an urgent call waits for the connection."""

    def __init__(self, count: int, give_way: threading.Event) -> None:
        self.calls: list[str] = []
        self.in_listing = threading.Event()
        self._give_way = give_way
        self._pools = {f"p{i:03d}": FakePool(f"p{i:03d}", self.calls) for i in range(count)}
        first = self._pools["p000"]
        info = first.info

        def blocking_info() -> list[int]:
            self.in_listing.set()
            assert self._give_way.wait(5)
            return info()

        first.info = blocking_info  # type: ignore[method-assign]

    def listAllStoragePools(self, flags: int) -> list[FakePool]:
        self.calls.append("listAllStoragePools")
        return list(self._pools.values())

    def storagePoolLookupByName(self, name: str) -> FakePool:
        self.calls.append(f"lookup {name}")
        return self._pools[name]


async def test_an_event_reread_does_not_wait_for_the_whole_pool_listing() -> None:
    source = LibvirtSource(uri="qemu:///system", read_only=True, call_timeout=10)
    conn = FakeConnection(250, source._turn.give_way)
    source._loop = asyncio.get_running_loop()
    source._conn, source._generation = conn, 1
    try:
        listing = asyncio.create_task(source.list_pools())
        assert await asyncio.to_thread(conn.in_listing.wait, 5)
        reading = await source.read_pool("p200")  # an event's re-read, while p000 is read
        assert reading.name == "p200"
        # It ran right after the pool in hand, before any other pool of the listing.
        before = conn.calls[: conn.calls.index("lookup p200")]
        assert {c.split(".")[0] for c in before if "." in c} == {"p000"}
        readings = await listing
        assert [r.name for r in readings] == [f"p{i:03d}" for i in range(250)]
    finally:
        source._conn = None  # nothing to tear down
        await source.close()
