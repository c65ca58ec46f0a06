"""Spec §2: libvirt events reach asyncio promptly even while a long libvirt call runs in the
executor. With libvirtaio they did not (a REFRESH event during a 3 GiB vol.wipe() arrived after
5.3 s); poolwatch's own implementation on the loop (adapter/eventloop.py) is woken by every
change libvirt makes from another thread.

The long call is a `vol.wipe()` of a fully allocated volume in a dir pool: libvirt writes zeros
over all of it (a sparse volume would be done at once). Another client refreshes a different
pool meanwhile, and the REFRESHED event must reach `LibvirtSource`'s listener while the wipe
still runs. And the event's re-read, an urgent call, is answered while a routine call holds the
connection's worker.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from poolwatch.adapter.connection import LibvirtSource
from poolwatch.model import PoolEventKind
from poolwatch.source import Connected, Disconnected, PoolChanged, SourceEvent
from tests.harness.libvirtd import Libvirtd
from tests.helpers import unavailable

GiB = 1024**3
# Tried in turn until the wipe outlasts the measurement: how fast zeros reach the disk varies
# with the page cache and whatever else writes to it (measured here: 1 GiB in 0.9-2.6 s).
SIZES = (1 * GiB, 2 * GiB, 4 * GiB)
MIN_WIPE_SECONDS = 1.0
LATENCY_LIMIT = 1.0


@dataclass(frozen=True)
class Pools:
    wiped: str  # holds the volume being wiped
    refreshed: str  # refreshed by another client meanwhile
    target: Path  # the wiped pool's directory


@pytest.fixture
def pools(libvirtd: Libvirtd, tmp_path: Path) -> Iterator[Pools]:
    suffix = uuid.uuid4().hex[:8]
    names = (f"it-wipe-{suffix}", f"it-other-{suffix}")
    try:
        for name in names:
            target = tmp_path / name
            target.mkdir()
            libvirtd.virsh_xml(
                "pool-define",
                f"<pool type='dir'><name>{name}</name>"
                f"<target><path>{target}</path></target></pool>",
            )
            libvirtd.virsh("pool-start", name)
        yield Pools(names[0], names[1], tmp_path / names[0])
    finally:
        for name in names:
            libvirtd.virsh("pool-destroy", name, check=False)
            libvirtd.virsh("pool-undefine", name, check=False)


@dataclass
class Measurement:
    size: int
    wipe_seconds: float
    latency: float  # from the refreshing client's return to the event's arrival
    since_virsh_start: float  # from the refreshing client's start to the event's arrival
    wipe_running_at_arrival: bool


class OtherClient(threading.Thread):
    """`virsh pool-refresh POOL` after `delay` seconds, in a plain thread that never touches
    the asyncio loop; records when virsh started and returned."""

    def __init__(self, libvirtd: Libvirtd, pool: str, *, delay: float) -> None:
        super().__init__(name="other-client", daemon=True)
        self.libvirtd = libvirtd
        self.pool = pool
        self.delay = delay
        self.started: float | None = None
        self.returned: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        time.sleep(self.delay)  # the wipe gets under way inside libvirtd
        try:
            self.started = time.monotonic()
            self.libvirtd.virsh("pool-refresh", self.pool)
            self.returned = time.monotonic()
        except BaseException as exc:  # reported by the test, not lost in this thread
            self.error = exc


class Listened(LibvirtSource):
    """A LibvirtSource whose events wait in a queue for the test to take them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.heard: asyncio.Queue[SourceEvent] = asyncio.Queue()
        self.listen(self.heard.put_nowait)


async def next_event(source: Listened, within: float) -> SourceEvent:
    return await asyncio.wait_for(source.heard.get(), within)


async def measure(libvirtd: Libvirtd, source: Listened, pools: Pools, size: int) -> Measurement:
    volume = f"big-{size // GiB}g.img"
    size_arg = f"{size // GiB}G"
    # Fully allocated (fallocate): a sparse volume is wiped without writing anything.
    await asyncio.to_thread(
        libvirtd.virsh, "vol-create-as", pools.wiped, volume, size_arg, "--allocation", size_arg
    )
    try:
        # When the call really ran, as seen from the worker thread; the task's completion
        # reaches this loop later.
        wipe_times: list[float] = []

        def wipe(conn: Any) -> None:
            vol = conn.storagePoolLookupByName(pools.wiped).storageVolLookupByName(volume)
            wipe_times.append(time.monotonic())
            vol.wipe(0)
            wipe_times.append(time.monotonic())

        task = asyncio.create_task(source.execute(wipe))
        other = OtherClient(libvirtd, pools.refreshed, delay=0.2)
        try:
            other.start()
            # Only the event may wake this loop: had the other client's return woken it (as
            # asyncio.to_thread would), an event queued without a wake-up (libvirtaio's flaw)
            # would be picked up on the way and the test could not tell the two apart.
            deadline = time.monotonic() + 15
            while True:
                event = await next_event(source, max(deadline - time.monotonic(), 0.01))
                assert not isinstance(event, Disconnected), event
                if isinstance(event, PoolChanged) and (
                    event.pool == pools.refreshed and event.kind is PoolEventKind.REFRESHED
                ):
                    arrived = time.monotonic()
                    break
            await asyncio.wait_for(task, 300)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await asyncio.to_thread(other.join, 30)
        assert other.error is None, other.error
        assert other.returned is not None
        assert other.started is not None
        wipe_started, wipe_ended = wipe_times
        return Measurement(
            size=size,
            wipe_seconds=wipe_ended - wipe_started,
            latency=arrived - other.returned,
            since_virsh_start=arrived - other.started,
            wipe_running_at_arrival=other.started > wipe_started and arrived < wipe_ended,
        )
    finally:
        await asyncio.to_thread(libvirtd.virsh, "vol-delete", volume, "--pool", pools.wiped)


async def test_refresh_event_arrives_while_a_long_call_runs(
    libvirtd: Libvirtd, pools: Pools
) -> None:
    source = Listened(uri=libvirtd.uri, read_only=False, call_timeout=30.0)
    await source.start()
    try:
        assert isinstance(await next_event(source, 10), Connected)
        results: list[Measurement] = []
        for size in SIZES:
            free = shutil.disk_usage(pools.target).free
            if free < 2 * size + 2 * GiB:
                if results:
                    break  # report what was measured below
                unavailable(f"{free / GiB:.1f} GiB free under {pools.target}: too little to wipe")
            result = await measure(libvirtd, source, pools, size)
            results.append(result)
            print(
                f"\nwipe of {size // GiB} GiB took {result.wipe_seconds:.2f} s; REFRESHED from "
                f"another client arrived {result.latency * 1000:.1f} ms after virsh returned "
                f"({result.since_virsh_start * 1000:.1f} ms after it started); wipe still "
                f"running then: {result.wipe_running_at_arrival}"
            )
            if result.wipe_running_at_arrival and result.wipe_seconds > MIN_WIPE_SECONDS:
                break
        last = results[-1]
        # Without a long call in flight the test would prove nothing.
        assert last.wipe_running_at_arrival, results
        assert last.wipe_seconds > MIN_WIPE_SECONDS, results
        assert last.latency < LATENCY_LIMIT, results
    finally:
        await source.close()


async def test_an_event_s_re_read_does_not_wait_behind_a_routine_call(
    libvirtd: Libvirtd, pools: Pools
) -> None:
    """Urgent calls have a connection and a worker of their own: a re-read is answered while a
    routine call (here held on purpose, as a listing of thousands of volumes holds it) runs."""
    source = Listened(uri=libvirtd.uri, read_only=False, call_timeout=30.0)
    await source.start()
    release = threading.Event()
    try:
        assert isinstance(await next_event(source, 10), Connected)

        def routine(conn: Any) -> None:
            conn.getHostname()
            release.wait(20)

        held = asyncio.create_task(source.execute(routine))
        await asyncio.sleep(0.2)  # the routine call is in its worker
        started = time.monotonic()
        reading = await asyncio.wait_for(source.read_pool(pools.refreshed), 10)
        waited = time.monotonic() - started
        assert not held.done()
        release.set()
        await asyncio.wait_for(held, 10)
        assert reading.active
        assert waited < LATENCY_LIMIT
    finally:
        release.set()
        await source.close()
