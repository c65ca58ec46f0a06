"""A connection (adapter/connection.py): the pool listing gives way to an event's re-read between
two pools; the volume names of many pools come in a few jobs; the events come on a connection
of their own, and a scrape knows when one is on its way to the loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import libvirt

from poolwatch.adapter.connection import LibvirtSource, _Opened
from poolwatch.model import PoolEventKind
from poolwatch.source import Connected, PoolChanged, PoolNotFound, SourceEvent
from tests.unit.test_reader import FakePool


def calls_only(conn: Any) -> _Opened:
    """A connect of ``conn`` alone, with no callbacks: what the calls run on."""
    return _Opened(conn, None, None, [], "kvm01")


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
    source._opened, source._generation = calls_only(conn), 1
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
        source._opened = None  # nothing to tear down
        await source.close()


async def test_a_refresh_re_read_uses_the_listings_description_a_stop_drops_it() -> None:
    """libvirt applies a definition made while a pool ran when the pool stops: after a stop
    (or a start, or a definition) the pool's XML is read again; after a refresh the listing's
    parse of it serves."""
    source = LibvirtSource(uri="qemu:///system", read_only=True, call_timeout=10)
    given = threading.Event()
    given.set()  # nothing holds the listing
    conn = FakeConnection(3, given)
    source._loop = asyncio.get_running_loop()
    source._opened, source._generation = calls_only(conn), 1
    try:
        await source.list_pools()
        for kind, read_again in ((PoolEventKind.REFRESHED, False), (PoolEventKind.STOPPED, True)):
            source._deliver(1, PoolChanged("p001", "uuid-p001", kind))
            conn.calls.clear()
            await source.read_pool("p001", flags=(True, False), uuid="uuid-p001")
            assert ("p001.XMLDesc" in conn.calls) is read_again, kind
    finally:
        source._opened = None  # nothing to tear down
        await source.close()


class VolumesConnection:
    """Running pools with one volume each; ``jobs`` counts the worker's jobs that listed."""

    def __init__(self, count: int) -> None:
        self.calls: list[str] = []
        self._pools = {f"p{i:03d}": FakePool(f"p{i:03d}", self.calls) for i in range(count)}

    def storagePoolLookupByName(self, name: str) -> Any:
        if name not in self._pools:
            error = libvirt.libvirtError("no pool")
            error.err = (libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_FROM_STORAGE, "no pool")
            raise error
        return self._pools[name]


async def test_the_volume_names_of_many_pools_come_in_a_few_jobs() -> None:
    source = LibvirtSource(uri="qemu:///system", read_only=True, call_timeout=10)
    source._loop = asyncio.get_running_loop()
    source._opened, source._generation = calls_only(VolumesConnection(250)), 1
    jobs = 0
    submit = source._calls.submit

    def counting(*args: Any) -> Any:
        nonlocal jobs
        jobs += 1
        return submit(*args)

    source._calls.submit = counting  # type: ignore[method-assign]
    try:
        names = [f"p{i:03d}" for i in range(250)] + ["gone"]
        found = await asyncio.gather(
            *(source.list_volume_names(n) for n in names), return_exceptions=True
        )
        assert found[:250] == [[f"p{i:03d}.img"] for i in range(250)]
        assert isinstance(found[250], PoolNotFound)  # that pool's scan only
        assert jobs == 3  # POOL_CHUNK pools a job, not a job per pool
    finally:
        source._opened = None  # nothing to tear down
        await source.close()


async def test_an_event_is_on_its_way_from_libvirts_thread_until_the_listener_has_it() -> None:
    """What a scrape waits for (web/settle.py): an event handed over by libvirt's callback
    (here from a thread, as a close callback may come) that the listener does not have yet.
    One of a connection already given up is dropped, and is not waited for either."""
    source = LibvirtSource(uri="qemu:///system", read_only=True, call_timeout=10)
    heard: list[SourceEvent] = []
    source.listen(heard.append)
    source._loop = asyncio.get_running_loop()
    source._generation = 2
    try:
        for generation in (1, 2):  # the first from the connection before a reconnect
            thread = threading.Thread(
                target=source._on_lifecycle,
                args=(
                    None,
                    FakePool("p001", []),
                    libvirt.VIR_STORAGE_POOL_EVENT_STOPPED,
                    0,
                    generation,
                ),
            )
            thread.start()
            thread.join()
            assert source.events_on_the_way()  # the loop has not run since
            assert heard == []
            await asyncio.sleep(0)  # one turn: the hand-over runs
            assert not source.events_on_the_way()
        assert heard == [PoolChanged("p001", "uuid-p001", PoolEventKind.STOPPED)]
    finally:
        await source.close()


class EventsConnection:
    """What `LibvirtSource` opens: records the callbacks registered on it and what became of
    them."""

    def __init__(self) -> None:
        self.close_callbacks: list[tuple[Any, int]] = []
        self.pool_events: dict[int, Any] = {}
        self.domain_events: dict[int, Any] = {}
        self.closed = threading.Event()

    def setKeepAlive(self, interval: int, count: int) -> None:
        pass

    def registerCloseCallback(self, callback: Any, generation: int) -> None:
        self.close_callbacks.append((callback, generation))

    def unregisterCloseCallback(self) -> None:
        self.close_callbacks.clear()

    def storagePoolEventRegisterAny(self, _pool: Any, event_id: int, cb: Any, _gen: int) -> int:
        self.pool_events[event_id] = cb
        return event_id

    def storagePoolEventDeregisterAny(self, callback_id: int) -> None:
        del self.pool_events[callback_id]

    def domainEventRegisterAny(self, _dom: Any, event_id: int, cb: Any, _gen: int) -> int:
        self.domain_events[event_id] = cb
        return event_id

    def domainEventDeregisterAny(self, callback_id: int) -> None:
        del self.domain_events[callback_id]

    def getHostname(self) -> str:
        return "kvm01"

    def close(self) -> int:
        self.closed.set()
        return 0


async def test_events_come_on_a_connection_of_their_own_whose_loss_is_a_reconnect(
    monkeypatch: Any,
) -> None:
    """Not on a connection that carries calls, where an event that came while a call waited for
    libvirtd reached poolwatch only with that call's reply. Losing one connection loses all
    (the events must not stop silently), and each is released with its callbacks."""
    opened: list[EventsConnection] = []

    def open_(_uri: str) -> EventsConnection:
        opened.append(EventsConnection())
        return opened[-1]

    monkeypatch.setattr(libvirt, "open", open_)
    source = LibvirtSource(uri="qemu:///system", read_only=False, call_timeout=10)
    heard: asyncio.Queue[SourceEvent] = asyncio.Queue()
    source.listen(heard.put_nowait)
    await source.start()
    try:
        assert (await asyncio.wait_for(heard.get(), 5)).hostname == "kvm01"  # type: ignore[union-attr]
        routine, urgent, events = opened
        assert (source._conn, source._urgent_conn) == (routine, urgent)
        for calls in (routine, urgent):
            assert not calls.pool_events
            assert not calls.domain_events
        assert set(events.pool_events) == {
            libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE,
            libvirt.VIR_STORAGE_POOL_EVENT_ID_REFRESH,
        }
        assert events.domain_events
        assert all(conn.close_callbacks for conn in opened)
        # libvirt's event thread: the events' connection closed (keepalive, say).
        callback, generation = events.close_callbacks[0]
        thread = threading.Thread(
            target=callback, args=(events, libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE, generation)
        )
        thread.start()
        thread.join()
        lost = await asyncio.wait_for(heard.get(), 5)
        assert lost.reason == "keepalive"  # type: ignore[union-attr]
        assert isinstance(await asyncio.wait_for(heard.get(), 5), Connected)
        for released in (routine, urgent, events):  # in the background, from the connect thread
            assert await asyncio.to_thread(released.closed.wait, 5)
        assert not events.pool_events
        assert not events.domain_events
        assert len(opened) == 6  # the reconnect opened all three again
    finally:
        await source.close()
    assert all(c.closed.is_set() for c in opened)
