"""Event to metric: how long after a pool stops (or starts) /metrics shows it (spec §10: a pool
stop is visible on /metrics within 100 ms, p99).

    python -m benchmarks.event_latency [--cycles 100] [--warmup 3]

Starts a private libvirtd (the integration tier's harness: a mount namespace of its own, the
host's libvirt state is never touched), defines one `dir` pool under a temporary directory and
runs poolwatch as a real process against it, at the default poll intervals: only the storage
pool events can make a stop or start visible quickly, the 15 s info poll cannot. Then, from a
libvirt connection of its own, it stops and starts the pool `--cycles` times and measures, for
each transition, the time from `destroy()`/`create()` returning to the first /metrics response
that shows the new `libvirt_storage_pool_state`. /metrics is polled as fast as one keep-alive
HTTP connection allows; the duration of one poll (request and parse) is the resolution of every
figure and is reported with them. Needs root (as the integration tier does).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import libvirt
from tests.harness.libvirtd import Libvirtd, LibvirtdError, prerequisites_problem
from tests.helpers import PoolwatchProcess, percentile

from poolwatch import __version__
from poolwatch.config import PollConfig

POOL = "bench-pool"
RUNNING, INACTIVE = 2, 0
TRANSITION_TIMEOUT = 10.0  # seconds; a transition not seen by then counts as a failure

# Default intervals (poolwatch.config.PollConfig), spelled out: this is what operators run.
CONFIG = """\
[poll]
interval = "15s"
volumes_interval = "1m"
refresh_interval = "5m"
call_timeout = "10s"
"""
DEFAULT_INTERVALS = PollConfig()  # the same values, for the figures computed from them


@dataclass
class Poller:
    """GET /metrics over one keep-alive connection; every request's duration is kept."""

    url: str
    pool: str
    durations: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        assert parts.hostname is not None
        self._conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        self._state = re.compile(
            rb"^libvirt_storage_pool_state\{[^}]*storage_pool=\""
            + re.escape(self.pool.encode())
            + rb"\"[^}]*\} (\S+)$",
            re.MULTILINE,
        )

    def state(self) -> float | None:
        started = time.perf_counter()
        self._conn.request("GET", "/metrics")
        response = self._conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}")
        match = self._state.search(body)
        self.durations.append(time.perf_counter() - started)
        return None if match is None else float(match.group(1))

    def wait_for(self, expected: float, since: float) -> float:
        """Seconds from `since` (a perf_counter time) to the first response showing `expected`."""
        while True:
            value = self.state()
            now = time.perf_counter()
            if value == expected:
                return now - since
            if now - since > TRANSITION_TIMEOUT:
                raise TimeoutError(f"state {value}, expected {expected}")

    def close(self) -> None:
        self._conn.close()


class BareListener:
    """A bare libvirt client's view of the pool's lifecycle events: when its callback ran.
    Needs a libvirt event loop running in this process (poolwatch.adapter.eventloop)."""

    def __init__(self, conn: Any, pool: str) -> None:
        self.pool = pool
        self.seen: list[tuple[int, float]] = []
        self._cond = threading.Condition()
        self._id = conn.storagePoolEventRegisterAny(
            None, libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE, self._callback, None
        )
        self._conn = conn

    def _callback(self, _conn: Any, pool: Any, event: int, _detail: int, _opaque: Any) -> None:
        if pool.name() == self.pool:
            with self._cond:
                self.seen.append((event, time.perf_counter()))
                self._cond.notify_all()

    def wait(self, event: int, after: int, timeout: float = TRANSITION_TIMEOUT) -> float | None:
        with self._cond:
            self._cond.wait_for(
                lambda: any(e == event for e, _ in self.seen[after:]), timeout=timeout
            )
            for e, at in self.seen[after:]:
                if e == event:
                    return at
        return None

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.storagePoolEventDeregisterAny(self._id)


def start_poolwatch(uri: str, workdir: Path) -> PoolwatchProcess:
    """poolwatch as a real process on `uri` at the default intervals, on a free loopback port."""
    config = workdir / "poolwatch.toml"
    config.write_text(CONFIG)
    return PoolwatchProcess(
        "--libvirt.uri", uri, "--web.listen-address", "127.0.0.1:0", "--config.file", str(config)
    ).start()


def stop_start_cycles(
    pool: Any, poller: Poller, cycles: int, warmup: int, listener: BareListener | None = None
) -> tuple[dict[str, list[float]], int]:
    """Stop and start `pool` `warmup` + `cycles` times; for the measured cycles, seconds from
    each call's return until /metrics shows the new state ("stop", "start") and, with a
    listener, until a bare client got the event ("bare_stop", "bare_start"). Also returns the
    transitions not seen within TRANSITION_TIMEOUT. The poller's durations are those of the
    measured cycles only."""
    results: dict[str, list[float]] = {"stop": [], "start": [], "bare_stop": [], "bare_start": []}
    failures = 0
    poller.wait_for(RUNNING, time.perf_counter())  # poolwatch has read the pool once
    for cycle in range(warmup + cycles):
        measured = cycle >= warmup
        for call, expected, event, kind in (
            (pool.destroy, INACTIVE, libvirt.VIR_STORAGE_POOL_EVENT_STOPPED, "stop"),
            (pool.create, RUNNING, libvirt.VIR_STORAGE_POOL_EVENT_STARTED, "start"),
        ):
            before = 0 if listener is None else len(listener.seen)
            call()
            returned = time.perf_counter()
            try:
                latency = poller.wait_for(expected, returned)
            except TimeoutError as exc:
                failures += measured
                print(f"cycle {cycle}: {exc}", file=sys.stderr)
                continue
            if not measured:
                continue
            results[kind].append(latency)
            bare_at = None if listener is None else listener.wait(event, before)
            if bare_at is not None:
                # From the call's return, like poolwatch's figure; an event may beat it.
                results[f"bare_{kind}"].append(max(0.0, bare_at - returned))
        if cycle == warmup - 1:
            poller.durations.clear()
    return results, failures


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version_string(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(
    stops: list[float], starts: list[float], polls: list[float], failures: int, conn: Any
) -> str:
    lines = [
        "| transition | n | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, values in (("stop (destroy)", stops), ("start (create)", starts)):
        if values:
            lines.append(
                f"| {name} | {len(values)} | {ms(percentile(values, 50))} | "
                f"{ms(percentile(values, 90))} | {ms(percentile(values, 99))} | "
                f"{ms(max(values))} |"
            )
    lines += [
        "",
        f"Resolution: one /metrics poll took {ms(statistics.median(polls))} ms median, "
        f"{ms(percentile(polls, 99))} ms p99 ({len(polls)} polls over one keep-alive "
        "connection); each figure is the time to the end of the first response showing the "
        "new state, so it overstates the latency by up to one poll.",
        f"Transitions not seen within {TRANSITION_TIMEOUT:g} s: {failures}.",
    ]
    if stops:
        p99 = percentile(stops, 99)
        verdict = "met" if p99 <= 0.100 else "NOT met"
        lines.append(
            f"Target (spec §10): stop visible within 100 ms p99: {verdict} ({ms(p99)} ms)."
        )
    lines += [
        "",
        f"Machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}; libvirt daemon "
        f"{version_string(conn.getLibVersion())}, library {version_string(libvirt.getVersion())}"
        f"; poolwatch {__version__}; Python {platform.python_version()}.",
    ]
    return "\n".join(lines)


def run(cycles: int, warmup: int) -> int:
    problem = prerequisites_problem()
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 2
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    workdir = Path(tempfile.mkdtemp(prefix="poolwatch-bench-"))
    daemon = Libvirtd()
    process: PoolwatchProcess | None = None
    conn: Any = None
    poller: Poller | None = None
    try:
        daemon.start()
        target = workdir / "pool"
        target.mkdir()
        daemon.virsh_xml(
            "pool-define",
            f"<pool type='dir'><name>{POOL}</name><target><path>{target}</path></target></pool>",
        )
        daemon.virsh("pool-start", POOL)
        process = start_poolwatch(daemon.uri, workdir)
        conn = libvirt.open(daemon.uri)
        poller = Poller(process.url, POOL)
        print(f"{warmup} warm-up and {cycles} measured stop/start cycles ...", file=sys.stderr)
        results, failures = stop_start_cycles(
            conn.storagePoolLookupByName(POOL), poller, cycles, warmup
        )
        print(report(results["stop"], results["start"], poller.durations, failures, conn))
        return 0 if failures == 0 else 1
    finally:
        if poller is not None:
            poller.close()
        if process is not None:
            code = process.stop()
            if code != 0:
                print(f"poolwatch exited with {code}: {process.logs[-5:]}", file=sys.stderr)
        if conn is not None:
            conn.close()
        try:
            if daemon.running:
                daemon.virsh("pool-destroy", POOL, check=False)
                daemon.virsh("pool-undefine", POOL, check=False)
        finally:
            daemon.close()
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.event_latency", description=__doc__)
    parser.add_argument("--cycles", type=int, default=100, help="measured stop/start cycles")
    parser.add_argument("--warmup", type=int, default=3, help="cycles run first, not measured")
    args = parser.parse_args(argv)
    if args.cycles < 1 or args.warmup < 0:
        parser.error("--cycles must be at least 1 and --warmup at least 0")
    try:
        return run(args.cycles, args.warmup)
    except (LibvirtdError, libvirt.libvirtError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
