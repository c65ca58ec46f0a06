"""What is measured on a running exporter from outside, by its URL and pid: /metrics latency
under concurrent scrapers, idle CPU and RSS, and event -> metric latency.

Each function takes a base URL (and, for CPU and memory, a pid), so a baseline that serves
`/metrics` is measured the same way as poolwatch. Only `idle_cost` asks poolwatch's JSON API
when its volume poll ended.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
from tests.helpers import cpu_seconds, percentile

from benchmarks.event_latency import DEFAULT_INTERVALS, BareListener, Poller, stop_start_cycles

LEVELS = (1, 10, 50)  # concurrent scrapers
SCRAPE_TIMEOUT = 30.0


# -- scrapes ----------------------------------------------------------------------------------


async def fetch(url: str, gzip: bool) -> bytes:
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(f"{url}/metrics", headers=headers) as response,
    ):
        return await response.read()


async def scrape(url: str, concurrency: int, gzip: bool, seconds: float) -> dict[str, Any]:
    """`concurrency` clients scraping back to back for `seconds`; latency of each scrape."""
    latencies: list[float] = []
    sizes: list[int] = []
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        auto_decompress=False, connector=connector, timeout=timeout
    ) as session:
        deadline = time.monotonic() + seconds

        async def client() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                async with session.get(f"{url}/metrics", headers=headers) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"/metrics answered {response.status}")
                latencies.append(time.perf_counter() - started)
                sizes.append(len(body))

        began = time.monotonic()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.monotonic() - began
    return {
        "n": len(latencies),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "bytes": int(statistics.median(sizes)),
        "per_second": len(latencies) / elapsed,
    }


async def scrape_matrix(url: str, seconds: float) -> dict[str, dict[str, Any]]:
    """Every level of LEVELS, plain and gzip, `seconds` each; keyed "10", "10-gzip", ..."""
    results = {}
    # One warm scrape of each variant: the page cache then holds both.
    for gz in (False, True):
        await scrape(url, 1, gz, 0.01)
    for level in LEVELS:
        for gz in (False, True):
            results[f"{level}{'-gzip' if gz else ''}"] = await scrape(url, level, gz, seconds)
    return results


def count_volume_series(body: bytes) -> int:
    return body.count(b"\nlibvirt_storage_volume_capacity_bytes{")


async def wait_for_series(url: str, expected: int, within: float) -> float:
    """Seconds until /metrics shows `expected` volumes."""
    started = time.monotonic()
    while True:
        body = await fetch(url, gzip=False)
        if count_volume_series(body) >= expected:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise RuntimeError(
                f"poolwatch showed {count_volume_series(body)} of {expected} volumes"
            )
        await asyncio.sleep(0.25)


# -- idle CPU and memory ----------------------------------------------------------------------


def proc_rss_mb(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) in MiB."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )

    def mib(key: str) -> float:
        return int(status[key].split()[0]) / 1024

    return mib("VmRSS"), mib("VmHWM")


async def last_full_scan(url: str) -> float:
    """Unix time by which every running pool had its volumes scanned (poolwatch's JSON API,
    which costs no page render)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/api/v1/pools") as response,
    ):
        doc = await response.json()
    times = [
        pool["volumes"]["scanned_at"]
        for host in doc["hosts"]
        for pool in host["pools"]
        if pool.get("volumes")
    ]
    return min(times) if times else 0.0


async def idle_cost(url: str, pid: int, seconds: float) -> dict[str, float]:
    """CPU over one volume-poll cycle: from now (right after poolwatch's first full scan), at
    least `seconds`, to the end of the first full volume scan that started after now. The
    volumes timer sleeps its interval after each poll ends, so a fixed 60 s window can miss the
    poll (measured: 0.65% vs 2.45% of a core at 10,000 volumes). Caveat: right after a connect
    poolwatch scans every volume twice (its info poll finds every scan missing, then its volume
    poll scans again), and the second of those falls into this window: it overstates the
    steady state by up to one scan. See BENCHMARKS.md."""
    start_wall = time.time()
    c0, t0 = cpu_seconds(pid), time.monotonic()
    deadline = t0 + seconds + 3 * DEFAULT_INTERVALS.volumes_interval
    await asyncio.sleep(seconds)
    # One JSON request per 2 s (no page render): well under 0.1% of a core.
    while await last_full_scan(url) < start_wall:
        if time.monotonic() > deadline:
            raise RuntimeError("no complete volume poll within the idle window")
        await asyncio.sleep(2)
    # The window ends up to 2 s after the scan ended: idle time, diluting by < 4%.
    c1, t1 = cpu_seconds(pid), time.monotonic()
    rss, peak = proc_rss_mb(pid)
    return {
        "seconds": t1 - t0,
        "cpu_seconds": c1 - c0,
        "cpu_percent_of_core": (c1 - c0) / (t1 - t0) * 100,
        "rss_mb": rss,
        "peak_rss_mb": peak,
    }


# -- event -> metric --------------------------------------------------------------------------


def pool_event_latency(
    url: str, conn: Any, pool_name: str, cycles: int, warmup: int = 3
) -> dict[str, Any]:
    """`cycles` stop/start cycles of `pool_name` through `conn`: the time to the first /metrics
    response at `url` showing each new state, beside a bare libvirt client's event."""
    poller = Poller(url, pool_name)
    listener = BareListener(conn, pool_name)
    before = cpu_times()
    try:
        pool = conn.storagePoolLookupByName(pool_name)
        results, failures = stop_start_cycles(pool, poller, cycles, warmup, listener)
    finally:
        listener.close()
        poller.close()
    spent = [after - earlier for after, earlier in zip(cpu_times(), before, strict=True)]
    out: dict[str, Any] = {"cycles": cycles, "failures": failures}
    # The time the hypervisor gave this machine's CPUs to others while they had work: on a
    # shared host, what separates a slow window from a slow exporter.
    out["steal_percent"] = 100 * spent[STEAL] / max(1, sum(spent))
    out["raw_ms"] = {k: [round(v * 1000, 2) for v in values] for k, values in results.items()}
    for key, values in results.items():
        if values:
            out[key] = summary(values)
    polls = poller.durations
    out["metrics_poll_ms"] = {
        "p50": percentile(polls, 50) * 1000 if polls else None,
        "p99": percentile(polls, 99) * 1000 if polls else None,
    }
    return out


# /proc/stat's first line: the machine's CPU time by kind (user, nice, system, idle, iowait, irq,
# softirq, steal, ...), in clock ticks; guest times are already counted in user and nice.
STEAL = 7


def cpu_times() -> list[int]:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    return [int(value) for value in fields]


def quiet_reads(url: str, pool_name: str, polls: int) -> dict[str, float]:
    """The timing client's /metrics read with no event going on: `polls` reads through the
    `Poller` of the stop/start cycles, whose duration bounds what those cycles can show."""
    poller = Poller(url, pool_name)
    try:
        for _ in range(polls):
            poller.state()
    finally:
        poller.close()
    return summary(poller.durations)


def summary(seconds: list[float]) -> dict[str, float]:
    """n, p50, p99 and max (ms) of a non-empty list of durations in seconds."""
    return {
        "n": len(seconds),
        "p50_ms": percentile(seconds, 50) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "max_ms": max(seconds) * 1000,
    }
