"""All of spec §10 in one run: poolwatch against a bare-libvirt baseline, side by side.

    python -m benchmarks.run [--scales 1000,10000,30000] [--cycles 200] [--idle 40]
                             [--scrape-seconds 2] [--repeats 3] [--json benchmarks/results.json]
                             [--quick]

Starts a private libvirtd (the integration tier's harness: a mount namespace of its own; the
host's libvirt state is never touched), defines 50 `dir` pools and one `fs` pool on a loop
device, and fills the dir pools with sparse files made directly on disk (then one
`refresh()` per pool: 50 calls, not one per volume). For every scale (total volumes) it:

- runs poolwatch as a real process at the default intervals; measures its idle CPU and RSS over
  one volumes-timer cycle (from its first full scan to the end of its first timed volume poll,
  at least `--idle` seconds), then /metrics latency under 1, 10 and 50 concurrent scrapers,
  plain and gzip, against a trivial HTTP server serving the same bytes (the baseline);
- stops it and times one full poll (a resync: the pool listing, then a volume scan of every
  running pool) by poolwatch's own `LibvirtSource` + `Watcher` in this process, against a bare
  libvirt-python loop making the same calls in one thread, repeats interleaved; the libvirt
  calls of each are counted by wrapping the RPC methods of libvirt-python's classes.

At the middle scale (10,000 volumes by default) it also measures event -> metric latency over
`--cycles` stop/start cycles (the logic of benchmarks/event_latency.py), against the time a bare
libvirt client in this process receives the same event. Prints a markdown table and writes
JSON. Needs root, like the integration tier. `--quick` is a smoke run of the whole chain in
about 3 minutes (100 and 1,000 volumes, short windows, no JSON unless --json is given): its
figures are not for BENCHMARKS.md.

This module is the entry point; the host's shape is benchmarks/shapes.py, what poolwatch is
compared with benchmarks/baselines.py, the full poll benchmarks/full_poll.py, the scrapes, idle
cost and event latency benchmarks/measure.py, the table and JSON benchmarks/report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import libvirt
from tests.harness.commands import which
from tests.harness.libvirtd import Libvirtd, LibvirtdError, prerequisites_problem

from benchmarks.baselines import static_server
from benchmarks.event_latency import start_poolwatch
from benchmarks.full_poll import calls_per_minute, poll_cost
from benchmarks.measure import (
    fetch,
    idle_cost,
    pool_event_latency,
    proc_rss_mb,
    scrape_matrix,
    wait_for_series,
)
from benchmarks.report import log, machine, table, write_json
from benchmarks.shapes import EVENT_POOL, POOLS, Shape, Workload
from poolwatch.adapter.eventloop import ensure_event_loop
from poolwatch.logsetup import configure_logging

RESULTS = Path(__file__).with_name("results.json")
# The run of BENCHMARKS.md, and the smoke run of --quick; an option given explicitly wins.
FULL: dict[str, Any] = {
    "scales": [1000, 10_000, 30_000],
    "cycles": 200,
    "idle": 40.0,
    "scrape_seconds": 2.0,
    "repeats": 3,
    "json": RESULTS,
}
QUICK: dict[str, Any] = {
    "scales": [100, 1000],
    "cycles": 20,
    "idle": 1.0,
    "scrape_seconds": 0.2,
    "repeats": 1,
    "json": None,
}


async def measure_shape(
    daemon: Libvirtd,
    workload: Workload,
    workdir: Path,
    args: argparse.Namespace,
    conn: Any,
    with_events: bool,
) -> dict[str, Any]:
    """Every figure of the workload's current shape: poolwatch as a process (idle, scrapes,
    events), then its resync in this process against the poll baselines."""
    volumes = workload.shape.volumes
    out: dict[str, Any] = {"volumes": volumes}
    process = start_poolwatch(daemon.uri, workdir)
    try:
        out["first_scan_seconds"] = await wait_for_series(process.url, volumes, 300)
        assert process.proc is not None
        pid = process.proc.pid
        log(f"{volumes} volumes: all served; idle until the first timed volume poll has ended ...")
        out["idle"] = await idle_cost(process.url, pid, args.idle)
        log(f"{volumes} volumes: scrapes ...")
        out["scrape"] = await scrape_matrix(process.url, args.scrape_seconds)
        plain, gz = await fetch(process.url, False), await fetch(process.url, True)
        with static_server(workdir, plain, gz) as static_url:
            out["scrape_baseline"] = await scrape_matrix(static_url, args.scrape_seconds)
        if with_events:
            log(f"{volumes} volumes: {args.cycles} stop/start cycles ...")
            out["events"] = await asyncio.to_thread(
                pool_event_latency, process.url, conn, EVENT_POOL, args.cycles
            )
            await wait_for_series(process.url, volumes, 60)  # the restarted pool is rescanned
        rss, peak = proc_rss_mb(pid)  # after the scrapes: 50 concurrent ones raise the peak
        out["loaded"] = {"rss_mb": rss, "peak_rss_mb": peak}
    finally:
        code = process.stop()
        if code != 0:
            log(f"poolwatch exited with {code}: {process.logs[-5:]}")
    log(f"{volumes} volumes: full poll, poolwatch vs bare loop ...")
    # Fewer repeats at the largest scales keep the whole run within 10 minutes.
    repeats = args.repeats if volumes < 30_000 else min(args.repeats, 2)
    out["poll"] = await poll_cost(daemon.uri, volumes + workload.fs_volumes(conn), repeats)
    out["poll"]["repeats"] = repeats
    out["calls_per_minute"] = calls_per_minute(out["poll"]["rpc_totals"])
    return out


async def run(args: argparse.Namespace, shapes: Sequence[Shape]) -> dict[str, Any]:
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="poolwatch-bench-"))
    daemon = Libvirtd()
    workload: Workload | None = None
    conn: Any = None
    ensure_event_loop()  # before any open(): the bare listener's events need it too
    # poolwatch's Watcher in this process: its warnings only, not a line per refresh event.
    configure_logging(level="warning", fmt="console")
    try:
        daemon.start()
        conn = libvirt.open(daemon.uri)
        workload = Workload(workdir / "pools")
        workload.define(conn)
        results: dict[str, Any] = {"machine": machine(conn), "scales": [], "args": vars(args)}
        totals = [shape.volumes for shape in shapes]
        event_scale = 10_000 if 10_000 in totals else totals[len(totals) // 2]
        for shape in shapes:
            seconds = workload.reshape(conn, shape)
            log(f"workload: {shape.volumes} volumes in {shape.pools} dir pools ({seconds:.1f} s)")
            scale = await measure_shape(
                daemon, workload, workdir, args, conn, with_events=shape.volumes == event_scale
            )
            scale["grow_seconds"] = seconds
            results["scales"].append(scale)
        results["seconds"] = time.monotonic() - began
        return results
    finally:
        try:
            if workload is not None and conn is not None:
                workload.remove(conn)
            if conn is not None:
                conn.close()
        finally:
            daemon.close()
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scales",
        type=lambda v: [int(x) for x in v.split(",")],
        help=f"total dir-pool volumes, growing (multiples of {POOLS}); default "
        + ",".join(str(s) for s in FULL["scales"]),
    )
    parser.add_argument("--cycles", type=int, help=f"stop/start cycles; default {FULL['cycles']}")
    parser.add_argument(
        "--idle",
        type=float,
        help=f"minimum idle window (s); ends after a volume poll; default {FULL['idle']:g}",
    )
    parser.add_argument(
        "--scrape-seconds", type=float, help=f"per scrape level; default {FULL['scrape_seconds']:g}"
    )
    parser.add_argument(
        "--repeats", type=int, help=f"timed full polls of each; default {FULL['repeats']}"
    )
    parser.add_argument("--json", type=Path, help=f"where to write every figure; default {RESULTS}")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run in about 3 minutes, not for BENCHMARKS.md: --scales "
        + ",".join(str(s) for s in QUICK["scales"])
        + f" --cycles {QUICK['cycles']} --idle {QUICK['idle']:g} --scrape-seconds "
        f"{QUICK['scrape_seconds']:g} --repeats {QUICK['repeats']}, and no JSON unless --json is "
        "given; options given explicitly win",
    )
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.scales != sorted(args.scales) or any(s % POOLS for s in args.scales):
        parser.error(f"--scales must grow and be multiples of {POOLS}")
    shapes = [Shape.of_total(total) for total in args.scales]
    problem = prerequisites_problem() or (None if which("losetup") else "losetup is missing")
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 2
    try:
        results = asyncio.run(run(args, shapes))
    except (LibvirtdError, libvirt.libvirtError, RuntimeError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        write_json(results, args.json)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
