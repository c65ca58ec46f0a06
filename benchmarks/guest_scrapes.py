"""Guests cost no libvirt call per scrape: 200 defined guests on the test driver, N scrapes.

    python -m benchmarks.guest_scrapes [--guests 200] [--scrapes 500]

Writes a test-driver host (one dir pool, ``--guests`` domains whose disks are files in it, every
other one paused), runs poolwatch's daemon in this process with timers far beyond the run, waits
until every guest is mapped to the pool, then counts the libvirt calls (libvirt-python's RPC
methods, wrapped as benchmarks/full_poll.py does) made while ``--scrapes`` scrapes of /metrics
and of /api/v1/pools are served. Also prints the libvirt calls the initial guest listing took
and the median scrape time. No root needed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from tests.helpers import base_url, fetch

from benchmarks.full_poll import RpcCounter
from poolwatch.config import Config, ConnectionConfig, PollConfig, WebConfig
from poolwatch.daemon import Daemon
from poolwatch.model import GuestState

POOL = "images"
TARGET = "/var/lib/libvirt/images"


def host_xml(guests: int) -> str:
    domains = []
    for n in range(guests):
        state = "paused" if n % 2 else "running"
        domains.append(
            f"""  <domain type='test'>
    <name>vm{n:04d}</name>
    <memory unit='KiB'>65536</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <source file='{TARGET}/vm{n:04d}.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>
    </devices>
    <test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>{
                3 if state == "paused" else 1
            }</test:runstate>
  </domain>"""
        )
    return (
        "<node>\n"
        f"  <pool type='dir'><name>{POOL}</name><target><path>{TARGET}</path></target></pool>\n"
        + "\n".join(domains)
        + "\n</node>\n"
    )


async def measure(guests: int, scrapes: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "host.xml"
        xml.write_text(host_xml(guests))
        config = Config(
            connections=(ConnectionConfig(name="bench", uri=f"test://{xml}"),),
            poll=PollConfig(interval=3600.0, volumes_interval=3600.0, refresh_interval=0.0),
            web=WebConfig(listen=("127.0.0.1:0",)),
        )
        counter = RpcCounter()
        with counter.installed():
            daemon = Daemon(config, reload_config=None, demo=False)
            await daemon.start()
            try:
                deadline = time.monotonic() + 60
                while True:
                    host = next(iter(daemon.inventory.hosts.values()), None)
                    if host is not None and len(host.pool_guests.get(POOL, ())) == guests:
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit("the guests were not mapped within 60 s")
                    await asyncio.sleep(0.05)
                startup = counter.snapshot()
                paused = sum(1 for g in host.pool_guests[POOL] if g.state is not GuestState.RUNNING)
                before = counter.total
                url = base_url(daemon)
                times = []
                for _ in range(scrapes):
                    started = time.perf_counter()
                    status, text = await fetch(f"{url}/metrics")
                    times.append(time.perf_counter() - started)
                    assert status == 200, text
                    assert "poolwatch_pool_guest_info" in text
                    status, _ = await fetch(f"{url}/api/v1/pools")
                    assert status == 200
                during = counter.total - before
            finally:
                await daemon.stop()
    return {
        "guests": guests,
        "paused": paused,
        "scrapes": scrapes,
        "libvirt_calls_during_scrapes": during,
        "libvirt_calls_at_start": startup,
        "median_scrape_ms": round(statistics.median(times) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=200)
    parser.add_argument("--scrapes", type=int, default=500)
    args = parser.parse_args()
    result = asyncio.run(measure(args.guests, args.scrapes))
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
