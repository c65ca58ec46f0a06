"""Content negotiation under attack, against a real poolwatch with a page of a few MB: clients
varying the Accept header cannot push a scraper out of the cache, and a malformed Accept gets
the text format instead of an error."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import PoolwatchProcess, fetch, percentile, scrape
from tests.reliability.attack_common import Scraper, log_problems, rss_mib
from tests.reliability.conftest import sized

Figure = Callable[[str, str, str], None]
POOLS, VOLUMES = 40, 50
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
)


def _host_xml(path: Path, pools: int, volumes: int) -> None:
    parts = []
    for p in range(pools):
        vols = "".join(
            f"<volume type='file'><name>volume-{v:05d}.qcow2</name>"
            f"<capacity unit='MiB'>{v + 1}</capacity><allocation unit='MiB'>1</allocation>"
            "</volume>"
            for v in range(volumes)
        )
        parts.append(
            f"<pool type='dir'><name>pool-{p:03d}</name><uuid>{uuid.uuid4()}</uuid>"
            "<capacity unit='GiB'>100</capacity><allocation unit='GiB'>10</allocation>"
            f"<available unit='GiB'>90</available><target><path>/p/{p}</path></target>"
            f"{vols}</pool>"
        )
    path.write_text("<node>" + "".join(parts) + "</node>")


@contextmanager
def poolwatch_with_big_page(tmp_path: Path) -> Iterator[PoolwatchProcess]:
    host = tmp_path / "host.xml"
    pools, volumes = POOLS, VOLUMES
    _host_xml(host, pools, volumes)
    config = tmp_path / "poolwatch.toml"
    config.write_text(
        f'[[connection]]\nname = "big"\nuri = "test://{host}"\n[poll]\nvolumes_interval = "5s"\n'
    )
    process = PoolwatchProcess(
        "--config.file", str(config), "--web.listen-address", "127.0.0.1:0"
    ).start()
    try:
        yield process
    finally:
        process.stop()


# argv[2] threads, each GETting argv[1]/metrics in a loop with its own OpenMetrics version, over
# keep-alive, until stdin closes; prints the number of requests and their content types.
_VARIANTS = """
import collections, http.client, sys, threading
host, port = sys.argv[1].split("//")[1].split(":")
stop = threading.Event()
count = collections.Counter()
def attack(n):
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    i = 0
    while not stop.is_set():
        i += 1
        c.request("GET", "/metrics", headers={
            "Accept": f"application/openmetrics-text; version=1.0.{n * 100000 + i}"})
        r = c.getresponse(); r.read()
        count[(r.status, r.headers["Content-Type"])] += 1
threads = [threading.Thread(target=attack, args=(n,), daemon=True) for n in range(int(sys.argv[2]))]
for t in threads: t.start()
sys.stdin.read(); stop.set()
for t in threads: t.join(60)
print(sum(count.values()), dict(count), flush=True)
"""


async def _all_volumes(url: str, want: int) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = await scrape(url)
        if text.count("libvirt_storage_volume_capacity_bytes{") >= want:
            return text
        await asyncio.sleep(0.5)
    raise AssertionError("the volumes were not scanned in time")


async def test_accept_variants_cannot_push_a_scraper_out_of_the_cache(
    tmp_path: Path, figure: Figure
) -> None:
    clients, seconds = 40, sized(8, 30)
    with poolwatch_with_big_page(tmp_path) as process:
        page = await _all_volumes(process.url, POOLS * VOLUMES)
        before = rss_mib(process.proc.pid)  # type: ignore[union-attr]
        scraper = Scraper(
            process.url,
            interval=0.1,
            keep_alive=True,
            headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"},
        )
        scraper.start()
        await asyncio.sleep(2)
        baseline = list(scraper.latencies)
        attack = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _VARIANTS,
            process.url,
            str(clients),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        start = len(scraper.latencies)
        await asyncio.sleep(seconds)
        out, _ = await asyncio.wait_for(attack.communicate(b""), 120)
        scraper.stop()
        during = scraper.latencies[start:]
        after = rss_mib(process.proc.pid)  # type: ignore[union-attr]
    requests, types = out.decode().split(" ", 1)
    assert scraper.failures == []
    assert "200, 'application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=" in types
    assert "500" not in types
    assert during
    assert percentile(during, 99) < 5.0  # generous; the figure has the real one
    assert after < before + 64, "a render per variant would hold a page per variant"
    p99 = percentile(during, 99) * 1000
    figure(
        f"{clients} clients varying 'application/openmetrics-text; version=1.0.<n>' on every "
        f"request for {seconds:g} s against a {len(page) // 1024} KiB page ({POOLS} pools x "
        f"{VOLUMES} volumes); a Prometheus scraper (its Accept header, gzip) every 100 ms",
        "every variant answered from the one OpenMetrics 1.0.0 page; no failed scrape; memory flat",
        f"scraper p99 {p99:.1f} ms, p50 {percentile(during, 50) * 1000:.1f} ms over "
        f"{len(during)} scrapes (before the attack: p99 "
        f"{percentile(baseline, 99) * 1000:.1f} ms); {requests} attack requests; RSS "
        f"{before:.0f} -> {after:.0f} MiB",
    )


async def test_malformed_accept_gets_the_text_format(figure: Figure) -> None:
    headers = [
        "text/plain; version=zz",
        "application/openmetrics-text; version=abc",
        "application/openmetrics-text; version=1.x.0",
        "text/plain; version=",
        "application/openmetrics-text; version=-1",
        ";,;=,version=1.0.0",
    ]
    process = PoolwatchProcess(
        "--libvirt.uri", "test:///default", "--web.listen-address", "127.0.0.1:0"
    ).start()
    answers = {}
    try:
        plain = await scrape(process.url)
        for accept in headers:
            status, text = await fetch(process.url + "/metrics", headers={"Accept": accept})
            answers[accept] = status
            assert status == 200, (accept, text[:200])
            assert text.startswith("# HELP"), accept
            assert "# EOF" not in text
        await asyncio.sleep(0.2)
    finally:
        process.stop()
    assert len(plain) > 0
    lines = [str(e.get("line", "")) for e in process.logs if e["event"] == "unparsed"]
    assert log_problems(lines) == lines == []
    assert [e for e in process.logs if e.get("level") == "error"] == []
    figure(
        f"{len(headers)} malformed Accept headers (version=zz, version=abc, version=1.x.0, "
        "empty or negative versions, garbage)",
        "each answered 200 in the text format 0.0.4, as Prometheus' own exporters do; no error "
        "logged, no traceback",
        ", ".join(f"{accept!r}={status}" for accept, status in answers.items()),
    )
