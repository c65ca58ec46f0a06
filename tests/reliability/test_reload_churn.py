"""Connections added and removed by SIGHUP, hundreds of times: nothing of a removed connection
stays alive, and a poll that finishes after its connection went is dropped quietly."""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc
import weakref
from collections.abc import Callable
from pathlib import Path

from poolwatch.config import Config, ConnectionConfig
from poolwatch.daemon import Daemon
from tests.helpers import captured_logs, config_for
from tests.reliability.conftest import sized

Figure = Callable[[str, str, str], None]

PACKAGE = str(Path(__file__).resolve().parents[2] / "daemon" / "poolwatch")


def _rss_kib() -> int:
    status = Path(f"/proc/{os.getpid()}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


def _own_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes allocated by poolwatch's own code (the allocating frame is poolwatch's)."""
    own = snapshot.filter_traces([tracemalloc.Filter(True, PACKAGE + "/*")])
    return sum(stat.size for stat in own.statistics("filename"))


def _libvirt_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes allocated by libvirt-python (the allocating frame is libvirt.py's)."""
    kept = snapshot.filter_traces([tracemalloc.Filter(True, "*/libvirt.py")])
    return sum(stat.size for stat in kept.statistics("filename"))


async def test_connections_added_and_removed_by_sighup(figure: Figure) -> None:
    cycles = int(sized(300, 1000))
    # Polls as often as Python callers may, so that removals land in the middle of polls.
    one = config_for("test:///default", interval=0.01, volumes_interval=0.01)
    two = one.model_copy(
        update={
            "connections": (*one.connections, ConnectionConfig(name="b", uri="test:///default"))
        }
    )
    reloads = [0]

    def load() -> Config:
        reloads[0] += 1
        return two if reloads[0] % 2 else one

    daemon = Daemon(one, reload_config=load, demo=False)
    removed: list[weakref.ref[object]] = []
    warmup = 30
    with captured_logs() as logs:
        await daemon.start()
        try:
            await asyncio.sleep(0.5)
            for cycle in range(cycles):
                if cycle == warmup:
                    gc.collect()
                    tracemalloc.start(10)
                    snapshot = tracemalloc.take_snapshot()
                    rss_before = _rss_kib()
                    own_before, libvirt_before = _own_bytes(snapshot), _libvirt_bytes(snapshot)
                daemon.reload()  # adds "b"
                running = daemon._running["b"]
                await asyncio.sleep(0.01 + cycle % 5 * 0.004)  # removed at varying points
                daemon.reload()  # removes it
                removed += [weakref.ref(running.watcher), weakref.ref(running.watcher.source)]
                del running
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.5)
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
            own_after, libvirt_after = _own_bytes(snapshot), _libvirt_bytes(snapshot)
            rss_after = _rss_kib()
        finally:
            tracemalloc.stop()
            await daemon.stop()
    crashed = [e for e in logs if e["event"] in ("poll_crashed", "event_handling_failed")]
    assert not crashed, crashed[:2]
    alive = sum(ref() is not None for ref in removed)
    assert alive <= 2, f"{alive} watchers/sources of removed connections still alive"
    measured = cycles - warmup
    own_per_cycle = (own_after - own_before) / measured
    libvirt_per_cycle = (libvirt_after - libvirt_before) / measured
    # A close-callback trampoline (libvirt keeps it) and one activity log line, which is
    # bounded at 500, per cycle: a few hundred bytes (it was 30 KiB).
    assert own_per_cycle < 1024, f"poolwatch's own allocations grew {own_per_cycle:.0f} B/cycle"
    rss_per_cycle = (rss_after - rss_before) * 1024 / measured
    figure(
        f"{cycles} SIGHUP cycles adding and removing a test:///default connection polled every "
        "10 ms, removed 10-26 ms after it was added (in the middle of polls)",
        "no poll_crashed or event_handling_failed; no watcher or LibvirtSource of a removed "
        "connection alive; poolwatch's own allocations flat",
        f"{alive} of {len(removed)} removed objects alive; poolwatch's allocations "
        f"{own_per_cycle:+.0f} B/cycle, libvirt-python's {libvirt_per_cycle:+.0f} B/cycle (the "
        f"test driver never releases a close callback); RSS {rss_per_cycle / 1024:+.1f} KiB/cycle "
        f"({rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB; was ~30-50 KiB/cycle: that "
        "callback kept the whole LibvirtSource)",
    )
