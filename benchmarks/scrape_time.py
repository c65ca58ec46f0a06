"""The scrape-time baseline, and the scrapers that load an exporter while an event is timed.

- `scrape_time_exporter`: a minimal exporter that does what a scrape-time exporter does on
  every scrape: `listAllStoragePools` + `info()` for every pool, rendered as a few gauges
  (`libvirt_storage_pool_state`, capacity, allocation, available) under the labels poolwatch
  uses, so `event_latency.Poller` times both the same way. It runs as its own process (a
  threaded `http.server` on one libvirt connection), like the exporters it stands for.
- `scrapers`: `n` clients in a process of their own scraping a URL back to back, so their load
  falls on the exporter, not on the GIL of the process that times the event. They ask for gzip
  (aiohttp's client does by default), as Prometheus does.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

SCRAPE_TIME_EXPORTER = r"""
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import libvirt
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
uri, port = sys.argv[1], int(sys.argv[2])
conn = libvirt.open(uri)
host = conn.getHostname()
FAMILIES = (
    ("libvirt_storage_pool_state", "Storage pool state.", 0),
    ("libvirt_storage_pool_capacity_bytes", "Pool capacity.", 1),
    ("libvirt_storage_pool_allocation_bytes", "Pool allocation.", 2),
    ("libvirt_storage_pool_available_bytes", "Pool available.", 3),
)

def page():
    rows = []
    for pool in conn.listAllStoragePools(0):
        try:
            rows.append((pool.name(), pool.info()))
        except libvirt.libvirtError:
            continue  # undefined meanwhile
    lines = []
    for name, help_text, index in FAMILIES:
        lines.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
        for pool, info in rows:
            if index and info[0] != libvirt.VIR_STORAGE_POOL_RUNNING:
                continue
            lines.append(f'{name}{{host="{host}",storage_pool="{pool}"}} {float(info[index])}\n')
    return "".join(lines).encode()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's algorithm and the client's
    # delayed ACK hold every response ~40 ms, which would be the baseline's latency, not libvirt's.
    disable_nagle_algorithm = True
    def do_GET(self):
        body = page() if self.path == "/metrics" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    daemon_threads = True
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # scrapers stopping mid-reply
            super().handle_error(request, client_address)

server = Server(("127.0.0.1", port), Handler)
print("ready", flush=True)
server.serve_forever()
"""

SCRAPERS = r"""
import asyncio, sys
import aiohttp
url, n = sys.argv[1], int(sys.argv[2])
async def client(session):
    while True:
        try:
            async with session.get(url + "/metrics") as response:
                await response.read()
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
async def main():
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout,
                                     auto_decompress=False) as session:
        print("ready", flush=True)
        await asyncio.gather(*(client(session) for _ in range(n)))
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def child_process(argv: list[str], what: str) -> Iterator[subprocess.Popen[str]]:
    """`argv` as a child process, once it printed "ready"; terminated when the block ends."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        line = ""
        while "ready" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"{what} did not start")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def scrape_time_exporter(uri: str) -> Iterator[str]:
    """The scrape-time baseline on a free loopback port; yields its base URL."""
    port = free_port()
    argv = [sys.executable, "-c", SCRAPE_TIME_EXPORTER, uri, str(port)]
    with child_process(argv, "the scrape-time exporter"):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def scrapers(url: str, n: int) -> Iterator[None]:
    """`n` clients scraping `url`/metrics back to back until the block ends."""
    if n <= 0:
        yield
        return
    with child_process([sys.executable, "-c", SCRAPERS, url, str(n)], "the scrapers"):
        yield
