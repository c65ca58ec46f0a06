"""All of spec §10 and the issue "Event-driven for real" in one run: poolwatch beside a
scrape-time exporter, a bare libvirt-python loop and a static server, on one private libvirtd.

    python -m benchmarks.run [--shapes 50x200,500x2,5x6000] [--cycles 30] [--idle 60]
                             [--idle-alone 20] [--scrapers 10] [--new-files 3]
                             [--scrape-seconds 0.5] [--repeats 1] [--json benchmarks/results.json]
                             [--quick]

Starts a private libvirtd (the integration tier's harness: a mount namespace of its own; the
host's libvirt state is never touched), defines one `fs` pool on a loop device and, for every
shape (POOLS x VOLUMES per pool), `dir` pools filled with sparse files made directly on disk
(then one `refresh()` per pool). For every shape it measures, in this order:

- libvirtd's CPU with nothing attached (`--idle-alone` s), the reference for what follows;
- poolwatch as a real process at the default intervals: its CPU and libvirtd's over `--idle` s
  while /metrics is scraped every 15 s (libvirtd's CPU caused by poolwatch is the difference of
  the two libvirtd rates); /metrics latency under 1, 10 and 50 scrapers against a static server
  serving the same bytes (skipped with `--scrape-seconds 0`); a guest-like write (fallocate of
  1 GiB into a volume file) until pool and volume allocation move on /metrics; volume files
  created and removed by hand until /metrics shows it; `--cycles` stop/start cycles of one pool
  under `--scrapers` concurrent scrapers, from the call's return to /metrics showing the state,
  beside the time a bare libvirt client receives the event;
- the event-switched static server (benchmarks/baselines.py: poolwatch's page from memory, its
  state line switched by a bare client's events), same cycles under the same scrapers,
  poolwatch stopped: what the timing client, the scrapers and this machine allow any exporter;
- the scrape-time baseline (benchmarks/scrape_time.py: listAllStoragePools + info() of every
  pool on each scrape), same cycles under the same scrapers, poolwatch stopped;
- one full poll (a resync) by poolwatch's own `LibvirtSource` + `Watcher` in this process,
  against a bare libvirt-python loop making the same calls in one thread; the libvirt calls of
  each are counted by wrapping the RPC methods of libvirt-python's classes.

Prints a markdown table and writes JSON. Needs root, like the integration tier. `--quick` is a
smoke run of the whole chain (two small shapes, short windows, no JSON unless --json is given):
its figures are not for BENCHMARKS.md. `--scales` measures 50 dir pools of TOTAL/50 volumes each
instead of `--shapes` (the shapes of the earlier runs).

This module is the entry point; the host's shape is benchmarks/shapes.py, what poolwatch is
compared with benchmarks/baselines.py and benchmarks/scrape_time.py, the full poll
benchmarks/full_poll.py, the scrapes and event latency benchmarks/measure.py, idle cost and
freshness benchmarks/freshness.py, the table and JSON benchmarks/report.py.
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

from benchmarks.baselines import static_server, switched_server
from benchmarks.event_latency import start_poolwatch
from benchmarks.freshness import (
    idle_with_libvirtd,
    libvirtd_alone,
    new_file_latency,
    write_freshness,
)
from benchmarks.full_poll import calls_per_minute, poll_cost
from benchmarks.measure import (
    fetch,
    pool_event_latency,
    proc_rss_mb,
    quiet_reads,
    scrape_matrix,
    wait_for_series,
)
from benchmarks.report import log, machine, table, write_json
from benchmarks.scrape_time import scrape_time_exporter, scrapers
from benchmarks.shapes import EVENT_POOL, POOLS, Shape, Workload, pool_name
from poolwatch.adapter.eventloop import ensure_event_loop
from poolwatch.logsetup import configure_logging

RESULTS = Path(__file__).with_name("results.json")
# The run of BENCHMARKS.md, and the smoke run of --quick; an option given explicitly wins.
# The shapes of the issue "Event-driven for real" (pools x volumes per pool), in an order that
# reshapes cheaply: 50 -> 500 pools adds pools, 500 -> 5 removes them.
ISSUE_SHAPES = [Shape(50, 200), Shape(500, 2), Shape(5, 6000)]
FULL: dict[str, Any] = {
    "shapes": ISSUE_SHAPES,
    "cycles": 100,
    "idle": 60.0,
    "idle_alone": 20.0,
    "scrapers": 10,
    "new_files": 3,
    "scrape_seconds": 0.5,
    "repeats": 1,
    "json": RESULTS,
}
QUICK: dict[str, Any] = {
    "shapes": [Shape(10, 10), Shape(20, 2)],
    "cycles": 5,
    "idle": 16.0,
    "idle_alone": 2.0,
    "scrapers": 10,
    "new_files": 1,
    "scrape_seconds": 0.2,
    "repeats": 1,
    "json": None,
}
# Reads of /metrics with no event going on, under the cycles' scrapers: the timing client's floor.
QUIET_READS = 1000
EXPORTED_PER_POOL = 1000  # poolwatch's default max_volumes_per_pool: the rest is not listed


async def measure_shape(
    daemon: Libvirtd,
    workload: Workload,
    workdir: Path,
    args: argparse.Namespace,
    conn: Any,
) -> dict[str, Any]:
    """Every figure of the workload's current shape: libvirtd alone, then poolwatch as a process
    (idle cost on both sides, scrapes, freshness, events under scrapers), then the scrape-time
    baseline's events under the same scrapers, then poolwatch's resync in this process against
    the poll baselines."""
    shape = workload.shape
    volumes = shape.volumes
    label = f"{shape.pools}x{shape.per_pool}"
    out: dict[str, Any] = {"shape": label, "pools": shape.pools, "volumes": volumes}
    assert daemon.pid is not None
    log(f"{label}: libvirtd alone for {args.idle_alone:g} s ...")
    alone = await libvirtd_alone(daemon.pid, args.idle_alone)
    process = start_poolwatch(daemon.uri, workdir)
    exported = shape.pools * min(shape.per_pool, EXPORTED_PER_POOL)
    try:
        out["first_scan_seconds"] = await wait_for_series(process.url, exported, 300)
        assert process.proc is not None
        pid = process.proc.pid
        log(f"{label}: all served; idle for {args.idle:g} s, scraped every 15 s ...")
        out["idle"] = await idle_with_libvirtd(process.url, pid, daemon.pid, args.idle, alone)
        out["idle"]["rss_mb"], out["idle"]["peak_rss_mb"] = proc_rss_mb(pid)
        if args.scrape_seconds > 0:
            log(f"{label}: scrapes ...")
            out["scrape"] = await scrape_matrix(process.url, args.scrape_seconds)
            plain, gz = await fetch(process.url, False), await fetch(process.url, True)
            with static_server(workdir, plain, gz) as static_url:
                out["scrape_baseline"] = await scrape_matrix(static_url, args.scrape_seconds)
                with scrapers(static_url, args.scrapers):
                    out["quiet_reads_static"] = await asyncio.to_thread(
                        quiet_reads, static_url, EVENT_POOL, QUIET_READS
                    )
        written = pool_name(1)
        log(f"{label}: a guest-like write into {written}, then new volume files ...")
        out["write"] = await write_freshness(
            process.url, workload.root / written, written, "vol-00000.img"
        )
        out["new_file"] = await new_file_latency(
            process.url, workload.root / written, written, args.new_files
        )
        log(f"{label}: {args.cycles} stop/start cycles under {args.scrapers} scrapers ...")
        with scrapers(process.url, args.scrapers):
            out["quiet_reads"] = await asyncio.to_thread(
                quiet_reads, process.url, EVENT_POOL, QUIET_READS
            )
            out["events"] = await asyncio.to_thread(
                pool_event_latency, process.url, conn, EVENT_POOL, args.cycles
            )
        await wait_for_series(process.url, exported, 60)  # the restarted pool is rescanned
        page = await fetch(process.url, False)  # the switched server's, the pool running
        rss, peak = proc_rss_mb(pid)  # after the scrapes: 50 concurrent ones raise the peak
        out["loaded"] = {"rss_mb": rss, "peak_rss_mb": peak}
    finally:
        code = process.stop()
        if code != 0:
            log(f"poolwatch exited with {code}: {process.logs[-5:]}")
    log(f"{label}: the event-switched static server, same cycles and scrapers ...")
    with (
        switched_server(daemon.uri, EVENT_POOL, workdir, page) as url,
        scrapers(url, args.scrapers),
    ):
        out["events_switched"] = await asyncio.to_thread(
            pool_event_latency, url, conn, EVENT_POOL, args.cycles
        )
    log(f"{label}: the scrape-time baseline, same cycles and scrapers ...")
    with scrape_time_exporter(daemon.uri) as url, scrapers(url, args.scrapers):
        out["events_scrape_time"] = await asyncio.to_thread(
            pool_event_latency, url, conn, EVENT_POOL, args.cycles
        )
    log(f"{label}: full poll, poolwatch vs bare loop ...")
    repeats = args.repeats
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
        for shape in shapes:
            seconds = workload.reshape(conn, shape)
            log(f"workload: {shape.volumes} volumes in {shape.pools} dir pools ({seconds:.1f} s)")
            scale = await measure_shape(daemon, workload, workdir, args, conn)
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
        "--shapes",
        type=lambda v: [Shape.parse(x) for x in v.split(",")],
        help="POOLSxVOLUMES dir-pool shapes, measured in turn; default "
        + ",".join(str(s) for s in FULL["shapes"]),
    )
    parser.add_argument(
        "--scales",
        type=lambda v: [Shape.of_total(int(x)) for x in v.split(",")],
        dest="shapes",
        help=f"instead of --shapes: total volumes over {POOLS} dir pools (multiples of {POOLS})",
    )
    parser.add_argument(
        "--cycles", type=int, help=f"stop/start cycles per exporter; default {FULL['cycles']}"
    )
    parser.add_argument(
        "--idle",
        type=float,
        help=f"idle window (s), /metrics scraped every 15 s; default {FULL['idle']:g}",
    )
    parser.add_argument(
        "--idle-alone",
        type=float,
        help=f"window (s) of libvirtd without poolwatch; default {FULL['idle_alone']:g}",
    )
    parser.add_argument(
        "--scrapers",
        type=int,
        help=f"concurrent scrapers during the stop/start cycles; default {FULL['scrapers']}",
    )
    parser.add_argument(
        "--new-files", type=int, help=f"volume files created by hand; default {FULL['new_files']}"
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
        help="a smoke run in about 3 minutes, not for BENCHMARKS.md: --shapes "
        + ",".join(str(s) for s in QUICK["shapes"])
        + f" --cycles {QUICK['cycles']} --idle {QUICK['idle']:g} --scrape-seconds "
        f"{QUICK['scrape_seconds']:g} --repeats {QUICK['repeats']}, and no JSON unless --json is "
        "given; options given explicitly win",
    )
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    shapes = args.shapes
    if any(shape.pools < 2 for shape in shapes):
        parser.error("every shape needs at least 2 pools (one is stopped and started)")
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
