"""Load on the JSON API: clients asking for /api/v1/pools?volumes=1 of a big host (50 pools x 200
volumes on libvirt's test driver) over and over, while a scraper and a health probe keep going.

The document is built once per inventory generation and served as bytes to every request; a
build that grew with the number of such clients would hold up /healthz and /metrics. The load
itself (`hammer`) is shared with the landing page's test (test_landing_load.py).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.helpers import REPO, percentile, series, until_metric
from tests.reliability.conftest import sized
from tests.reliability.faults_common import poolwatch

Figure = Callable[[str, str, str], None]
POOLS = 50
VOLUMES = 200
CLIENTS = 8


def _host_xml(path: Path) -> None:
    pools = []
    for i in range(POOLS):
        volumes = "".join(
            f"<volume type='file'><name>v{j}.qcow2</name><capacity unit='MiB'>{j + 1}</capacity>"
            "<allocation unit='MiB'>1</allocation></volume>"
            for j in range(VOLUMES)
        )
        pools.append(
            f"<pool type='dir'><name>big-{i}</name><uuid>{uuid.uuid4()}</uuid>"
            "<capacity unit='TiB'>10</capacity><allocation unit='TiB'>1</allocation>"
            "<available unit='TiB'>9</available>"
            f"<target><path>/pools/big-{i}</path></target>{volumes}</pool>"
        )
    path.write_text("<node>" + "".join(pools) + "</node>", encoding="utf-8")


async def _closed_loop(
    session: aiohttp.ClientSession, url: str, stop: float, pause: float = 0.0
) -> tuple[list[float], list[str], int]:
    """GET `url` until `stop`: (latencies, failures, bytes of the last answer)."""
    latencies: list[float] = []
    failures: list[str] = []
    size = 0
    while time.monotonic() < stop:
        began = time.monotonic()
        try:
            async with session.get(url) as response:
                size = len(await response.read())
                if response.status != 200:
                    failures.append(f"status {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            failures.append(repr(exc))
        latencies.append(time.monotonic() - began)
        await asyncio.sleep(pause)
    return latencies, failures, size


def clients_main(argv: list[str]) -> None:
    """The clients' process: `CLIENTS` closed loops on the URL; prints (latencies, failures,
    size of an answer) as JSON."""
    url, count, seconds = argv[0], int(argv[1]), float(argv[2])

    async def run() -> tuple[list[float], list[str], int]:
        stop = time.monotonic() + seconds
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=30)
        ) as session:
            results = await asyncio.gather(
                *(_closed_loop(session, url, stop) for _ in range(count))
            )
        latencies = [x for r in results for x in r[0]]
        return latencies, [f for r in results for f in r[1]], max(r[2] for r in results)

    print(json.dumps(asyncio.run(run())))


@dataclass
class Load:
    """What `hammer` measured: the clients' latencies, failures and last answer's size, and
    those of the /healthz probe and the /metrics scraper beside them."""

    seconds: float
    latencies: list[float]
    failures: list[str]
    size: int
    health: list[float]
    health_failures: list[str]
    scrapes: list[float]
    scrape_failures: list[str]

    def check(self) -> None:
        assert not self.health_failures, self.health_failures[:5]
        assert not self.scrape_failures, self.scrape_failures[:5]
        assert not self.failures, self.failures[:5]
        # A generous bound on a shared machine (a free loop answers /healthz in about 1 ms):
        # building the document in each request stalled the loop ~0.5 s per build, /healthz
        # p99 0.4-0.9 s.
        health_p99 = percentile(self.health, 99)
        assert health_p99 < 0.5, f"/healthz p99 {health_p99 * 1000:.0f} ms"

    def probes(self) -> str:
        """The /healthz and /metrics figures, as the report gives them."""
        return (
            f"/healthz p50 {percentile(self.health, 50) * 1000:.1f} ms, p99 "
            f"{percentile(self.health, 99) * 1000:.1f} ms; /metrics p50 "
            f"{percentile(self.scrapes, 50) * 1000:.1f} ms, p99 "
            f"{percentile(self.scrapes, 99) * 1000:.1f} ms over {len(self.scrapes)} scrapes"
        )


def big_host_config(tmp_path: Path) -> Path:
    """A config of one connection to the big host, polled every 5 s: the inventory changes
    while the clients ask, so caches are tested across generations, not only within one."""
    host = tmp_path / "host.xml"
    _host_xml(host)
    config = tmp_path / "poolwatch.toml"
    config.write_text(
        f'[[connection]]\nname = "big"\nuri = "test://{host}"\n'
        '[poll]\ninterval = "5s"\nvolumes_interval = "5s"\n'
    )
    return config


async def until_big_host(url: str) -> None:
    await until_metric(
        url, "libvirt_storage_pool_volumes", VOLUMES, within=60, storage_pool=f"big-{POOLS - 1}"
    )


async def hammer(url: str, path: str) -> Load:
    """`CLIENTS` closed loops on `path` for the test's duration, beside a /healthz probe every
    20 ms and a /metrics scraper every 50 ms."""
    seconds = float(sized(5, 30))
    # The clients run in a process of their own: reading 8 answers of 1 MB in this one would
    # delay the probes below and measure the test, not poolwatch.
    clients = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from tests.reliability.test_pools_document_load import clients_main; "
        "clients_main(sys.argv[1:])",
        url + path,
        str(CLIENTS),
        str(seconds),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        (health, health_failures, _), (scrapes, scrape_failures, _) = await asyncio.gather(
            _closed_loop(session, url + "/healthz", stop, pause=0.02),
            _closed_loop(session, url + "/metrics", stop, pause=0.05),
        )
    out, _ = await clients.communicate()
    latencies, failures, size = json.loads(out)
    return Load(
        seconds, latencies, failures, size, health, health_failures, scrapes, scrape_failures
    )


async def test_parallel_pool_documents_with_volumes(tmp_path: Path, figure: Figure) -> None:
    with poolwatch(big_host_config(tmp_path)) as process:
        url = process.url
        await until_big_host(url)
        api = url + "/api/v1/pools?volumes=1"
        load = await hammer(url, "/api/v1/pools?volumes=1")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.get(api, headers={"Accept-Encoding": "gzip"}) as response:
                gzipped = response.headers.get("Content-Encoding")
                document = await response.json()
            async with session.get(url + "/metrics") as response:
                metrics = await response.text()
        assert process.proc is not None
        assert process.proc.poll() is None
    load.check()
    assert sum(len(p["volumes"]["list"]) for h in document["hosts"] for p in h["pools"]) == (
        POOLS * VOLUMES
    )
    assert len(series(metrics, "libvirt_storage_pool_volumes")) == POOLS
    assert gzipped == "gzip"
    figure(
        f"{CLIENTS} closed-loop clients of /api/v1/pools?volumes=1 for {load.seconds:.0f} s on "
        f"a host of {POOLS} pools x {VOLUMES} volumes (test driver, polled every 5 s), beside a "
        "/healthz probe every 20 ms and a /metrics scraper every 50 ms",
        "no failure; the document is built once per inventory generation, re-encoding only the "
        "pools that changed, and served to every client as the same bytes (gzip when asked); "
        "/healthz p99 under 500 ms",
        f"API {len(load.latencies) / load.seconds:.0f} req/s of {load.size // 1024} KiB, p50 "
        f"{percentile(load.latencies, 50) * 1000:.1f} ms; {load.probes()} (built per request: "
        "API 15 req/s, /healthz p99 890 ms, /metrics p99 897 ms; whole document per "
        "generation: /metrics p99 160 ms)",
    )
