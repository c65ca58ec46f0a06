"""The cost of a full poll: poolwatch's resync against the poll baselines, the libvirt calls of
each poll kind, and the page render that follows.

poolwatch's own `LibvirtSource` + `Watcher` run in this process with every timer far away, so
each poll is started (and timed) here. The libvirt calls are counted by wrapping the RPC
methods of libvirt-python's classes while a pass runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import libvirt
from prometheus_client import CollectorRegistry, generate_latest

from benchmarks.baselines import POLL_BASELINES
from benchmarks.event_latency import DEFAULT_INTERVALS
from benchmarks.report import log
from poolwatch.adapter.connection import LibvirtSource
from poolwatch.adapter.eventloop import ensure_event_loop
from poolwatch.config import PollConfig
from poolwatch.exporter.collector import InventoryCollector
from poolwatch.exporter.exposition import Exposition
from poolwatch.inventory import Inventory
from poolwatch.model import PoolState
from poolwatch.telemetry import Telemetry
from poolwatch.watcher import Watcher

# Every libvirt-python method the readers use that is a round trip to libvirtd. name(),
# UUIDString() and the listing's object construction are local.
RPC_METHODS: dict[type, tuple[str, ...]] = {
    libvirt.virConnect: (
        "listAllStoragePools",
        "storagePoolLookupByName",
        "listAllDomains",
        "lookupByUUIDString",
    ),
    libvirt.virDomain: ("state", "XMLDesc", "diskErrors", "resume", "destroy"),
    libvirt.virStoragePool: (
        "info",
        "numOfVolumes",
        "XMLDesc",
        "listAllVolumes",
        "refresh",
        "isActive",
        "isPersistent",
        "autostart",
        "create",
        "setAutostart",
    ),
    libvirt.virStorageVol: ("XMLDesc", "info", "infoFlags"),
}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class RpcCounter:
    """Counts calls of RPC_METHODS from any thread while installed."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    @contextlib.contextmanager
    def installed(self) -> Iterator[RpcCounter]:
        saved = []
        for cls, names in RPC_METHODS.items():
            for name in names:
                original = getattr(cls, name)
                saved.append((cls, name, original))
                setattr(cls, name, self._wrap(f"{cls.__name__}.{name}", original))
        try:
            yield self
        finally:
            for cls, name, original in saved:
                setattr(cls, name, original)

    def _wrap(self, key: str, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.counts[key] += 1
            return original(*args, **kwargs)

        return counted

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self.counts.items()))


async def poll_cost(uri: str, expected_volumes: int, repeats: int) -> dict[str, Any]:
    """poolwatch's resync (in this process) vs each of POLL_BASELINES, interleaved; times, CPU
    and RPCs."""
    ensure_event_loop()
    inventory = Inventory()
    telemetry = Telemetry()
    source = LibvirtSource(uri=uri, read_only=False, call_timeout=60)
    long = 24 * 3600.0  # no timer fires while we measure
    poll = PollConfig(interval=long, volumes_interval=long, refresh_interval=long, call_timeout=60)
    watcher = Watcher(
        key="bench",
        uri=uri,
        name="bench",
        source=source,
        inventory=inventory,
        telemetry=telemetry,
        poll=poll,
        stat_filesystems=True,
    )
    task = asyncio.create_task(watcher.run())
    reference = POLL_BASELINES[0]
    conns: dict[str, Any] = {}
    try:
        for baseline in POLL_BASELINES:
            conns[baseline.name] = await asyncio.to_thread(baseline.connect, uri, source.keepalive)
        deadline = time.monotonic() + 300
        while True:  # the resync after connecting has scanned every volume once
            stats = telemetry.stats("bench") if "bench" in inventory.hosts else None
            done = stats is not None and "volumes" in stats.poll_durations
            if done or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        if not done:
            raise RuntimeError("poolwatch's first resync did not finish within 300 s")
        xml_cache: dict[str, str] = {}
        rpcs: dict[str, dict[str, int]] = {}
        counter = RpcCounter()
        with counter.installed():  # warm-up, counted: the XML is read once, as poolwatch does
            seen = await asyncio.to_thread(reference.poll, conns[reference.name], xml_cache)
        rpcs[f"{reference.name}_first"] = counter.snapshot()
        if seen != expected_volumes:
            log(f"warning: the baseline saw {seen} dir+fs volumes, expected {expected_volumes}")

        names = ["poolwatch", *(b.name for b in POLL_BASELINES)]
        times: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(repeats):
            for baseline in POLL_BASELINES:
                c0, t0 = time.process_time(), time.perf_counter()
                await asyncio.to_thread(baseline.poll, conns[baseline.name], xml_cache)
                times[baseline.name].append(time.perf_counter() - t0)
                cpu[baseline.name].append(time.process_time() - c0)
            c0, t0 = time.process_time(), time.perf_counter()
            await watcher._resync()
            times["poolwatch"].append(time.perf_counter() - t0)
            cpu["poolwatch"].append(time.process_time() - c0)
        errors = dict(telemetry.stats("bench").poll_errors)
        if any(errors.values()):
            raise RuntimeError(f"poolwatch's polls failed: {errors}")
        exported = sum(
            p.volumes.count for p in inventory.hosts["bench"].pools.values() if p.volumes
        )

        render = await render_cost(inventory, telemetry)

        # RPCs: one more of each, counted (not timed). poolwatch's resync is its info poll
        # followed by its volumes poll, so it is counted as their sum.
        for name, run in (
            (
                reference.name,
                lambda: asyncio.to_thread(reference.poll, conns[reference.name], xml_cache),
            ),
            ("poolwatch_info_poll", watcher._poll_info),
            ("poolwatch_volumes_poll", watcher._poll_volumes),
        ):
            counter = RpcCounter()
            with counter.installed():
                await run()
            rpcs[name] = counter.snapshot()
        rpcs["poolwatch_refresh_poll"] = await refresh_poll_rpcs(watcher)
        resync = collections.Counter(rpcs["poolwatch_info_poll"])
        resync.update(rpcs["poolwatch_volumes_poll"])
        rpcs["poolwatch"] = dict(sorted(resync.items()))
        poolwatch_seconds = median(times["poolwatch"])
        ratios = {
            "ratio" if b is reference else f"ratio_{b.name}": (
                poolwatch_seconds / median(times[b.name])
            )
            for b in POLL_BASELINES
        }
        return {
            "seconds": {k: median(v) for k, v in times.items()},
            "all_seconds": times,
            "cpu_seconds": {k: median(v) for k, v in cpu.items()},
            **ratios,
            "rpcs": rpcs,
            "rpc_totals": {k: sum(v.values()) for k, v in rpcs.items()},
            "volumes_exported": exported,
            "render": render,
        }
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for conn in conns.values():
            await asyncio.to_thread(conn.close)


async def refresh_poll_rpcs(watcher: Watcher) -> dict[str, int]:
    """The calls of a refresh poll: refresh() of every running pool, one at a time; each
    refresh's REFRESH event makes poolwatch re-read that pool and rescan its volumes. Counted
    until quiet."""
    counter = RpcCounter()
    with counter.installed():
        await watcher._poll_refresh()
        last, quiet_since = -1, time.monotonic()
        settle_deadline = time.monotonic() + 120
        while time.monotonic() < settle_deadline:
            await asyncio.sleep(0.2)
            total = counter.total
            if total != last:
                last, quiet_since = total, time.monotonic()
            elif time.monotonic() - quiet_since > 1.5:
                break
    return counter.snapshot()


async def render_cost(inventory: Inventory, telemetry: Telemetry) -> dict[str, float]:
    """ms to render /metrics as the daemon does (collect, then encode in its render thread),
    here without contention: the first page (every part encoded), and the page after one pool
    changed state (only the pool-level series encoded again); and prometheus_client encoding
    the whole page at once, for comparison."""
    registry = CollectorRegistry(auto_describe=False)
    collector = InventoryCollector(
        inventory, telemetry, version="bench", libvirt_version="", python_version=""
    )
    registry.register(collector)
    exposition = Exposition(registry, collector.generation)
    out = {}
    try:
        for name in ("first_ms", "unchanged_ms"):
            started = time.perf_counter()
            await exposition.render(None, None)
            out[name] = (time.perf_counter() - started) * 1000
        host = inventory.hosts["bench"]
        name = sorted(name for name, pool in host.pools.items() if pool.active)[0]
        pool = host.pools[name]
        stopped = dataclasses.replace(pool, state=PoolState.INACTIVE, active=False)
        inventory.put_pool("bench", stopped)
        started = time.perf_counter()
        await exposition.render(None, None)
        out["after_event_ms"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        await exposition.render(None, "gzip")
        out["gzip_ms"] = (time.perf_counter() - started) * 1000
        inventory.put_pool("bench", pool)
    finally:
        exposition.close()
    families = list(registry.collect())

    class Collected:
        def collect(self) -> list[Any]:
            return families

    started = time.perf_counter()
    generate_latest(Collected())
    out["whole_page_encode_ms"] = (time.perf_counter() - started) * 1000
    return out


def calls_per_minute(rpc_totals: dict[str, int]) -> dict[str, float]:
    """libvirt calls per minute at the default intervals, from the counted polls."""
    d = DEFAULT_INTERVALS
    parts = {
        "info": rpc_totals["poolwatch_info_poll"] * 60 / d.interval,
        "volumes": rpc_totals["poolwatch_volumes_poll"] * 60 / d.volumes_interval,
        "refresh": rpc_totals["poolwatch_refresh_poll"] * 60 / d.refresh_interval,
    }
    return {**parts, "total": sum(parts.values())}
