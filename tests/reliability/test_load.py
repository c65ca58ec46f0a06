"""Load: many concurrent scrapers against a real poolwatch on a private libvirtd. Scrapes are
served from memory, so libvirt sees the same calls whatever the number of scrapers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.libvirtd import Libvirtd
from tests.helpers import cpu_seconds, percentile, scrape, until_metric
from tests.reliability.conftest import sized
from tests.reliability.faults_common import poolwatch, write_config

Figure = Callable[[str, str, str], None]
POOLS = 10
SCRAPERS = 50


def _polls(text: str) -> float:
    """Every poll of libvirt so far (info, volumes, refresh): the libvirt call rate's proxy."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "poolwatch_poll_duration_seconds_count"
    )


async def _phase(url: str, scrapers: int, seconds: float) -> tuple[list[float], int, int]:
    """Closed-loop scrapers for `seconds`: (latencies, non-200 answers, errors)."""
    latencies: list[float] = []
    refused = [0, 0]
    stop = time.monotonic() + seconds

    async def one(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop:
            began = time.monotonic()
            try:
                async with session.get(url + "/metrics") as response:
                    await response.read()
                    if response.status != 200:
                        refused[0] += 1
            except (aiohttp.ClientError, TimeoutError):
                refused[1] += 1
            latencies.append(time.monotonic() - began)

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        await asyncio.gather(*(one(session) for _ in range(scrapers)))
    return latencies, refused[0], refused[1]


async def test_fifty_scrapers(own_libvirtd: Libvirtd, tmp_path: Path, figure: Figure) -> None:
    libvirtd = own_libvirtd
    for i in range(POOLS):
        target = tmp_path / f"p{i}"
        target.mkdir()
        libvirtd.virsh_xml(
            "pool-define",
            f"<pool type='dir'><name>load-{i}</name><target><path>{target}</path></target></pool>",
        )
        libvirtd.virsh("pool-start", f"load-{i}")
        for j in range(5):
            libvirtd.virsh("vol-create-as", f"load-{i}", f"v{j}.img", "1M")
    seconds = float(sized(5, 30))
    poll = {"interval": "1s", "volumes_interval": "1s", "refresh_interval": "1s"}
    config = write_config(tmp_path / "poolwatch.toml", libvirtd.uri, poll=poll)
    with poolwatch(config) as process:
        url = process.url
        pid = process.proc.pid if process.proc else 0
        await until_metric(url, "libvirt_storage_pool_volumes", 5, within=10, storage_pool="load-9")
        size = len(await scrape(url))

        polls_before = _polls(await scrape(url))
        single, _, _ = await _phase(url, 1, seconds)
        polls_single = _polls(await scrape(url)) - polls_before

        cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
        polls_before = _polls(await scrape(url))
        many, refused, errors = await _phase(url, SCRAPERS, seconds)
        polls_many = _polls(await scrape(url)) - polls_before
        cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before)
        assert process.proc is not None
        assert process.proc.poll() is None
    assert errors == 0
    assert refused == 0  # 50 < MAX_IN_FLIGHT: nothing refused
    assert polls_single > 0
    # libvirt calls per second do not depend on the number of scrapers (generous bounds).
    assert polls_many <= polls_single * 1.5 + 3, (polls_single, polls_many)
    assert polls_many >= polls_single * 0.5 - 3, (polls_single, polls_many)
    rps = len(many) / seconds
    p50, p99 = percentile(many, 50) * 1000, percentile(many, 99) * 1000
    print(f"\nload: {rps:.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, cpu {cpu:.0%}")
    assert p99 < 5000
    figure(
        f"{SCRAPERS} closed-loop scrapers for {seconds:g} s against a real poolwatch "
        f"({POOLS} pools x 5 volumes, /metrics {size // 1024} KiB, polls every 1 s), after "
        f"{seconds:g} s of 1 scraper; load generator on the same 2 cores",
        "no error, no refusal; libvirt polls in the same time: same with 1 and with 50 scrapers",
        f"{rps:.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms; poolwatch CPU {cpu:.0%} of a core;"
        f" polls {polls_single / seconds:.1f}/s with 1 scraper vs "
        f"{polls_many / seconds:.1f}/s with {SCRAPERS} "
        f"(1 scraper: {len(single) / seconds:.0f} req/s)",
    )
