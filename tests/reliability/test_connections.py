"""Connection floods against a real poolwatch with a descriptor limit: idle plain connections,
TLS connections that never say hello, a flood beyond the descriptors the process has, and the
keep-alive connection a scraper reuses across scrapes."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import PoolwatchProcess, sample, scrape
from tests.reliability.attack_common import (
    Scraper,
    ServedProcess,
    log_problems,
    raise_own_descriptor_limit,
)
from tests.reliability.conftest import sized
from tests.unit.pki import make_pki

Figure = Callable[[str, str, str], None]
NOFILE = 1024  # systemd's default soft limit, the one the issue was found with


@contextmanager
def poolwatch(*extra: str, nofile: int = NOFILE) -> Iterator[PoolwatchProcess]:
    process = PoolwatchProcess(
        "--libvirt.uri",
        "test:///default",
        "--web.listen-address",
        "127.0.0.1:0",
        *extra,
        prefix=["prlimit", f"--nofile={nofile}:{nofile}", "--"],
    ).start()
    try:
        yield process
    finally:
        process.stop()


# Opens argv[3] connections to argv[1]:argv[2] as fast as it can, says how many it got, and
# holds them, without sending a byte, until its stdin closes.
_HOLDER = """
import socket, sys
held = []
for _ in range(int(sys.argv[3])):
    try:
        held.append(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5))
    except OSError:
        pass
print(len(held), flush=True)
sys.stdin.read()
"""


@contextmanager
def idle_connections(url: str, count: int) -> Iterator[Callable[[], int]]:
    """``count`` TCP connections opened at once by a process of their own (so that opening them
    does not slow the scraper's own measurement), held until the block ends. Yields a function
    that waits for the opening to finish and returns how many were opened."""
    host, _, port = url.partition("://")[2].rpartition(":")
    raise_own_descriptor_limit(count + 256)  # inherited by the holder
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, host, port, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    stdout = holder.stdout
    try:
        yield lambda: int(stdout.readline() or 0)
    finally:
        holder.communicate(timeout=60)  # closes stdin: the holder lets go and exits


def _closed(text: str) -> dict[str, int]:
    name = "poolwatch_http_connections_closed_total"
    return {r: int(sample(text, name, reason=r) or 0) for r in ("limit", "refused", "timeout")}


def _attack(
    url: str, count: int, seconds: float, context: ssl.SSLContext | None = None
) -> tuple[Scraper, Scraper, int]:
    """Scrape /metrics and /healthz (a new connection each time) while ``count`` idle
    connections are opened and held for ``seconds``."""
    metrics = Scraper(url, "/metrics", context=context)
    health = Scraper(url, "/healthz", context=context)
    metrics.start()
    health.start()
    with idle_connections(url, count) as opened_count:
        time.sleep(seconds)
        opened = opened_count()
    return metrics.stop(), health.stop(), opened


def _held(process: PoolwatchProcess, metrics: Scraper, health: Scraper) -> list[str]:
    assert metrics.failures == [], metrics.failures[:5]
    assert health.failures == [], health.failures[:5]
    assert metrics.p99_ms() < 1000, metrics.summary()  # generous: the figure reports the real one
    lines = [str(entry.get("line", "")) for entry in process.logs if entry["event"] == "unparsed"]
    assert lines == [], lines[:5]
    assert process.events("http_accept_failed") == []
    return [entry["event"] for entry in process.logs]


async def test_idle_connections_cannot_starve_scrapes(figure: Figure) -> None:
    count, seconds = 3000, sized(6, 20)
    with poolwatch() as process:
        metrics, health, opened = await asyncio.to_thread(_attack, process.url, count, seconds)
        closed = _closed(await scrape(process.url))
        events = _held(process, metrics, health)
    assert opened == count
    assert closed["limit"] >= count - 512
    figure(
        f"{count} idle TCP connections opened at once and held {seconds:g} s against poolwatch "
        f"with {NOFILE} descriptors; /metrics and /healthz on a new connection every 50 ms",
        "no failed or slow scrape; the connection bound (512) closed the quiet ones, counted; "
        "no accept error; every log line JSON",
        f"{metrics.summary()}; /healthz {len(health.latencies)} ok; closed {closed}; "
        f"{len(events)} log lines",
    )


async def test_tls_clients_that_never_say_hello(tmp_path: Path, figure: Figure) -> None:
    count, seconds = 1100, sized(12, 30)
    pki = make_pki(tmp_path)
    config = tmp_path / "web.yml"
    config.write_text(
        f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n"
    )
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    with poolwatch("--web.config.file", str(config)) as process:
        metrics, health, opened = await asyncio.to_thread(
            _attack, process.url, count, seconds, context
        )
        closed = _closed(await asyncio.to_thread(_get, process.url, context))
        events = _held(process, metrics, health)
    assert opened == count
    assert closed["limit"] + closed["timeout"] >= count
    figure(
        f"{count} TCP connections to the TLS listener that never send a ClientHello, held "
        f"{seconds:g} s, poolwatch with {NOFILE} descriptors; /metrics and /healthz over TLS on "
        "a new connection every 50 ms",
        "no failed scrape; handshakes cut after 10 s or closed by the bound, counted; no accept "
        "error; every log line JSON",
        f"{metrics.summary()}; /healthz {len(health.latencies)} ok; closed {closed}; "
        f"{len(events)} log lines",
    )


def _get(url: str, context: ssl.SSLContext | None = None) -> str:
    scraper = Scraper(url, context=context)
    connection = scraper._connection()
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    return text


async def test_out_of_descriptors_is_logged_once_per_interval(figure: Figure) -> None:
    # No connection bound, so the connections exhaust the process' 128 descriptors.
    nofile, count, seconds = 128, 600, sized(12, 32)
    with ServedProcess({"max_connections": 100_000}, nofile=nofile) as served:
        metrics, health, _ = await asyncio.to_thread(_attack, served.url, count, seconds)
        lines = list(served.lines)
    failed = [line for line in lines if '"http_accept_failed"' in line]
    assert log_problems(lines) == []
    assert 1 <= len(failed) <= seconds / 10 + 2, failed
    assert health.latencies
    assert metrics.latencies
    figure(
        f"{count} idle connections against the web server with {nofile} descriptors and no "
        f"connection bound, held {seconds:g} s, scraping every 50 ms",
        "accept() failing with EMFILE logged once per 10 s as JSON, never a traceback; the "
        "bound lowered to what fits (the quietest connections closed), so scrapes get through",
        f"{len(failed)} http_accept_failed lines of {len(lines)} log lines (all JSON); "
        f"{metrics.summary()}; /healthz {len(health.latencies)} ok, {len(health.failures)} "
        "failed",
    )


async def test_a_scraper_keeps_its_connection_between_scrapes(figure: Figure) -> None:
    # Longer apart than the 10 s a request head may take: before, the server closed the idle
    # connection after 10 s and every scrape reconnected.
    scrapes, interval = int(sized(2, 4)), sized(12, 15)
    with poolwatch() as process:
        scraper = Scraper(process.url, interval=interval, keep_alive=True)
        scraper.start()
        await asyncio.sleep(interval * (scrapes - 1) + 1)
        scraper.stop()
    assert scraper.failures == []
    assert len(scraper.latencies) == scrapes
    assert len(scraper.local_ports) == 1, "one connection for every scrape"
    figure(
        f"{scrapes} scrapes {interval:g} s apart over a keep-alive connection, as Prometheus "
        "scrapes",
        "every scrape on the same connection (idle connections are kept 6 minutes; only a "
        "request head is due within 10 s)",
        f"{scrapes} scrapes, {len(scraper.local_ports)} connection",
    )
