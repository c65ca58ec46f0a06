"""Load on the landing page: clients asking for `/` of a big host (50 pools x 200 volumes on
libvirt's test driver) over and over, while a scraper and a health probe keep going.

The page is rendered at most once a second, in a thread, and served as the same bytes to every
request; rendered on the loop for each request, it would hold up /healthz and /metrics with the
number of clients.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.helpers import percentile
from tests.reliability.faults_common import poolwatch
from tests.reliability.test_pools_document_load import (
    CLIENTS,
    POOLS,
    VOLUMES,
    big_host_config,
    hammer,
    until_big_host,
)

Figure = Callable[[str, str, str], None]


async def test_parallel_landing_pages(tmp_path: Path, figure: Figure) -> None:
    with poolwatch(big_host_config(tmp_path)) as process:
        url = process.url
        await until_big_host(url)
        load = await hammer(url, "/")
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.get(url + "/") as response,
        ):
            content_type = response.headers.get("Content-Type")
            page = await response.text()
        assert process.proc is not None
        assert process.proc.poll() is None
    load.check()
    assert content_type == "text/html; charset=utf-8"
    assert all(f"big-{i}<" in page for i in range(POOLS))
    assert f"{VOLUMES} volumes" in page or str(VOLUMES) in page
    figure(
        f"{CLIENTS} closed-loop clients of the landing page / for {load.seconds:.0f} s on a host "
        f"of {POOLS} pools x {VOLUMES} volumes (test driver, polled every 5 s), beside a "
        "/healthz probe every 20 ms and a /metrics scraper every 50 ms",
        "no failure; the page is rendered at most once a second, in a thread, and served to "
        "every client as the same bytes; every pool on it; /healthz p99 under 500 ms",
        f"/ {len(load.latencies) / load.seconds:.0f} req/s of {load.size // 1024} KiB, p50 "
        f"{percentile(load.latencies, 50) * 1000:.1f} ms; {load.probes()}",
    )
