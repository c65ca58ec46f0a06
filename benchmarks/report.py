"""What a run tells its reader: progress lines on stderr, the markdown table of BENCHMARKS.md
on stdout, and every figure in results.json.

The table has a column per shape measured and a row per figure; a figure a shape lacks shows
as "-". Event latencies are rows like the others (poolwatch, the event-switched static server
and the scrape-time baseline).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from benchmarks.event_latency import cpu_model, version_string
from benchmarks.measure import LEVELS
from poolwatch import __version__


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine(conn: Any) -> dict[str, Any]:
    """What the figures were measured on: CPUs, libvirt on both ends, Python, poolwatch."""
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "libvirtd": version_string(conn.getLibVersion()),
        "libvirt_library": version_string(libvirt.getVersion()),
        "python": platform.python_version(),
        "poolwatch": __version__,
        "kernel": platform.release(),
    }


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def table(results: dict[str, Any]) -> str:
    scales = results["scales"]
    lines = [
        "| figure | "
        + " | ".join(
            f"{s['pools']} pools x {s['volumes'] // max(s['pools'], 1):,} vols"
            if "pools" in s
            else f"{s['volumes']:,} vols"
            for s in scales
        )
        + " | target |",
        "|---|" + "---:|" * len(scales) + "---|",
    ]

    def row(name: str, cell: Callable[[dict[str, Any]], str], target: str = "") -> None:
        cells = []
        for s in scales:
            try:
                cells.append(cell(s))
            except (KeyError, TypeError):
                cells.append("-")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {target} |")

    def transition(key: str, kind: str) -> Callable[[dict[str, Any]], str]:
        def cell(s: dict[str, Any]) -> str:
            ev = s[key][kind]
            return f"{ev['p50_ms']:.1f} / {ev['p99_ms']:.1f} ({ev['max_ms']:.0f})"

        return cell

    scrapers = results.get("args", {}).get("scrapers", 10)
    for kind, verb in (("stop", "stop"), ("start", "start")):
        row(
            f"pool {verb} → /metrics, poolwatch p50 / p99 (max) ms, {scrapers} scrapers",
            transition("events", kind),
            "p99 ≤ 10 ms and < scrape-time p50",
        )
        row(
            f"same, event-switched static server p50 / p99 (max) ms, {scrapers} scrapers",
            transition("events_switched", kind),
        )
        row(
            f"same, scrape-time baseline p50 / p99 (max) ms, {scrapers} scrapers",
            transition("events_scrape_time", kind),
        )
    row(
        "same, a bare libvirt client gets the stop event p50 / p99 (max) ms",
        transition("events", "bare_stop"),
    )
    row(
        f"the timing client's /metrics read with no event, {scrapers} scrapers, p50 / p99 ms, "
        "poolwatch (static server, same bytes)",
        lambda s: (
            f"{s['quiet_reads']['p50_ms']:.1f} / {s['quiet_reads']['p99_ms']:.1f}"
            f" ({s['quiet_reads_static']['p50_ms']:.1f} / "
            f"{s['quiet_reads_static']['p99_ms']:.1f})"
        ),
    )
    row(
        "its reads during the cycles p50 / p99 ms, poolwatch (switched; scrape-time)",
        lambda s: (
            f"{s['events']['metrics_poll_ms']['p50']:.1f} / "
            f"{s['events']['metrics_poll_ms']['p99']:.1f}"
            f" ({s['events_switched']['metrics_poll_ms']['p50']:.1f} / "
            f"{s['events_switched']['metrics_poll_ms']['p99']:.1f}; "
            f"{s['events_scrape_time']['metrics_poll_ms']['p50']:.1f} / "
            f"{s['events_scrape_time']['metrics_poll_ms']['p99']:.1f})"
        ),
    )
    row(
        "CPU steal during the cycles, % of the machine, poolwatch (switched; scrape-time)",
        lambda s: (
            f"{s['events']['steal_percent']:.0f} ({s['events_switched']['steal_percent']:.0f}; "
            f"{s['events_scrape_time']['steal_percent']:.0f})"
        ),
    )
    row(
        "transitions not seen within 10 s, poolwatch / switched / scrape-time",
        lambda s: (
            f"{s['events']['failures']} / {s['events_switched']['failures']} / "
            f"{s['events_scrape_time']['failures']}"
        ),
    )
    row(
        "poolwatch's own idle CPU, % of a core (scraped every 15 s)",
        lambda s: f"{s['idle']['cpu_percent_of_core']:.2f}",
        "≤ 0.3 at 50x200, ≤ 1 at 5x6,000",
    )
    row(
        "libvirtd CPU caused by poolwatch at idle, % of a core (with - without)",
        lambda s: (
            f"{s['idle']['libvirtd_caused_percent_of_core']:.2f} "
            f"({s['idle']['libvirtd_cpu_percent_of_core']:.2f} - "
            f"{s['idle']['libvirtd_alone_percent_of_core']:.2f})"
        ),
        "≤ 0.3 at 50x200, ≤ 1 at 5x6,000",
    )
    row(
        "1 GiB fallocated into a volume of a dir pool → pool allocation on /metrics, s",
        lambda s: f"{s['write']['pool_seconds']:.1f}",
        "≤ 15 s",
    )
    row(
        "same → volume allocation on /metrics, s",
        lambda s: f"{s['write']['volume_seconds']:.1f}",
        "≤ 15 s",
    )
    row(
        "new volume file → on /metrics, s (max of n)",
        lambda s: f"{max(s['new_file']['appear_seconds']):.2f} (n={s['new_file']['n']})",
        "≤ 1 s",
    )
    row(
        "volume file removed → gone from /metrics, s (max)",
        lambda s: f"{max(s['new_file']['gone_seconds']):.2f}",
    )
    row("full poll: poolwatch s", lambda s: f"{s['poll']['seconds']['poolwatch']:.3f}")
    row("full poll: bare loop s", lambda s: f"{s['poll']['seconds']['baseline']:.3f}")
    row(
        "full poll: bare loop with keepalive s",
        lambda s: f"{s['poll']['seconds']['keepalive']:.3f}",
    )
    row(
        "full poll: ratio (to the bare loop with keepalive)",
        lambda s: f"{s['poll']['ratio']:.2f}x ({s['poll']['ratio_keepalive']:.2f}x)",
        "≤ 1.2x",
    )
    row(
        "full poll: CPU s poolwatch / bare / bare with keepalive",
        lambda s: (
            f"{s['poll']['cpu_seconds']['poolwatch']:.2f} / "
            f"{s['poll']['cpu_seconds']['baseline']:.2f} / "
            f"{s['poll']['cpu_seconds']['keepalive']:.2f}"
        ),
    )
    row(
        "full poll: RPCs poolwatch / bare",
        lambda s: (
            f"{s['poll']['rpc_totals']['poolwatch']:,} / {s['poll']['rpc_totals']['baseline']:,}"
        ),
    )
    row(
        "page render ms: first, after one pool event, + gzip (whole page encoded at once)",
        lambda s: (
            f"{s['poll']['render']['first_ms']:.0f}, {s['poll']['render']['after_event_ms']:.0f}"
            f", +{s['poll']['render']['gzip_ms']:.0f}"
            f" ({s['poll']['render']['whole_page_encode_ms']:.0f})"
        ),
    )
    for level in LEVELS:
        for gz in (False, True):
            key = f"{level}{'-gzip' if gz else ''}"
            target = "≤ 20 ms at 10k" if level == 10 else ""

            def latencies(s: dict[str, Any], k: str = key) -> str:
                return (
                    f"{s['scrape'][k]['p50_ms']:.1f} / {s['scrape'][k]['p99_ms']:.1f}"
                    f" ({s['scrape_baseline'][k]['p50_ms']:.1f} / "
                    f"{s['scrape_baseline'][k]['p99_ms']:.1f})"
                )

            row(
                f"/metrics p50 / p99 ms, {level} scraper{'s' if level > 1 else ''}"
                f"{', gzip' if gz else ''} (static server)",
                latencies,
                target,
            )
    row("/metrics bytes plain", lambda s: f"{s['scrape']['1']['bytes']:,}")
    row("/metrics bytes gzip", lambda s: f"{s['scrape']['1-gzip']['bytes']:,}")
    row(
        "RSS MB (peak) idle",
        lambda s: f"{s['idle']['rss_mb']:.0f} ({s['idle']['peak_rss_mb']:.0f})",
        "≤ 100 MB",
    )
    row(
        "RSS MB (peak) after the scrapes",
        lambda s: f"{s['loaded']['rss_mb']:.0f} ({s['loaded']['peak_rss_mb']:.0f})",
    )
    row(
        "libvirt calls/min at defaults (info+volumes+refresh)",
        lambda s: (
            f"{s['calls_per_minute']['total']:,.0f} ("
            f"{s['calls_per_minute']['info']:,.0f}+{s['calls_per_minute']['volumes']:,.0f}+"
            f"{s['calls_per_minute']['refresh']:,.0f})"
        ),
    )
    m = results["machine"]
    lines += [
        "",
        f"Machine: {m['nproc']} CPUs (nproc), {m['cpu']}; libvirtd {m['libvirtd']}, library "
        f"{m['libvirt_library']}; Python {m['python']}; poolwatch {m['poolwatch']}; "
        f"run took {results['seconds']:.0f} s.",
    ]
    return "\n".join(lines)
