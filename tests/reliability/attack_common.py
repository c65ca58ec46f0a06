"""Shared by the HTTP attack tests: a legitimate scraper that measures itself while an attack
runs, the server under attack in a process of its own (so the attack's client load does not
distort the scraper's figures), and descriptor limits.

The server runs either as poolwatch itself (tests.helpers.PoolwatchProcess) or, where a test
needs a setting no flag has (a short login cache, no connection bound), as `SERVE` below: the
real `start_http_server` and app with sample pools, logging JSON like poolwatch.
"""

from __future__ import annotations

import http.client
import json
import resource
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.helpers import REPO, percentile

# The web server of poolwatch with sample pools, configured from argv[1] (JSON); it logs
# http_listening with its URL, like poolwatch, and serves until SIGTERM.
SERVE = """
import asyncio, functools, json, signal, sys
from pathlib import Path
from prometheus_client import CollectorRegistry
from poolwatch.exporter.collector import InventoryCollector
from poolwatch.exporter.exposition import Exposition
from poolwatch.logsetup import configure_logging
from poolwatch.web.app import create_app, start_http_server
from poolwatch.web.auth import BasicAuth
from tests.unit.factories import sample_inventory, sample_telemetry

async def main(settings):
    configure_logging(level="info", fmt="json")
    inventory, telemetry = sample_inventory(), sample_telemetry()
    registry = CollectorRegistry()
    collector = InventoryCollector(
        inventory, telemetry, version="0", libvirt_version="0", python_version="3"
    )
    registry.register(collector)
    app = create_app(
        inventory=inventory, telemetry=telemetry,
        exposition=Exposition(registry, collector.generation),
    )
    server = await start_http_server(
        app=app, listen=["127.0.0.1:0"],
        web_config_file=Path(settings["web_config"]) if "web_config" in settings else None,
        auth=functools.partial(BasicAuth, **settings.get("auth", {})),
        max_connections=settings.get("max_connections"),
    )
    host, port = server.addresses[0]
    from structlog import get_logger
    get_logger().info("http_listening", urls=[f"{server.scheme}://{host}:{port}/"])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.close()

asyncio.run(main(json.loads(sys.argv[1])))
"""


class ServedProcess:
    """`SERVE` in a process of its own, with an optional descriptor limit; JSON logs kept."""

    def __init__(self, settings: Mapping[str, Any], *, nofile: int | None = None) -> None:
        prefix = [] if nofile is None else ["prlimit", f"--nofile={nofile}:{nofile}", "--"]
        self.args = [*prefix, sys.executable, "-c", SERVE, json.dumps(settings)]
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.url = ""
        self._listening = threading.Event()

    def __enter__(self) -> ServedProcess:
        self.proc = subprocess.Popen(
            self.args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(30):
            self.__exit__()
            raise AssertionError(f"the server did not start: {self.lines[-20:]}")
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if not self._listening.is_set() and '"http_listening"' in line:
                self.url = json.loads(line)["urls"][0].rstrip("/")
                self._listening.set()

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def log_problems(lines: Sequence[str]) -> list[str]:
    """The log lines that are not JSON objects: tracebacks, stray prints."""
    problems = []
    for line in lines:
        try:
            if not isinstance(json.loads(line), dict):
                problems.append(line)
        except json.JSONDecodeError:
            problems.append(line)
    return problems


def raise_own_descriptor_limit(at_least: int) -> None:
    """The test process itself holds one descriptor per attacking connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < at_least:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, at_least), hard))


class Scraper(threading.Thread):
    """A legitimate scraper: GET ``path`` every ``interval`` seconds in a thread of its own,
    over one keep-alive connection (as Prometheus does) or a new connection each time (the
    harder case while a connection flood runs), recording latencies and failures."""

    def __init__(
        self,
        url: str,
        path: str = "/metrics",
        *,
        interval: float = 0.05,
        keep_alive: bool = False,
        headers: Mapping[str, str] | None = None,
        context: ssl.SSLContext | None = None,
        source: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(daemon=True)
        scheme, _, hostport = url.partition("://")
        host, _, port = hostport.rpartition(":")
        self._connect = (host, int(port), scheme == "https")
        self.path = path
        self.interval = interval
        self.keep_alive = keep_alive
        self.headers = dict(headers or {})
        self.context = context
        self.source = source
        self.timeout = timeout
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.statuses: dict[int, int] = {}
        self.local_ports: set[int] = set()
        self._stop_event = threading.Event()

    def _connection(self) -> http.client.HTTPConnection:
        host, port, tls = self._connect
        source = None if self.source is None else (self.source, 0)
        if tls:
            return http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=self.context, source_address=source
            )
        return http.client.HTTPConnection(host, port, timeout=self.timeout, source_address=source)

    def run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self._stop_event.is_set():
            began = time.monotonic()
            try:
                if connection is None:
                    connection = self._connection()
                connection.request("GET", self.path, headers=self.headers)
                response = connection.getresponse()
                response.read()
                if connection.sock is not None:
                    self.local_ports.add(connection.sock.getsockname()[1])
                self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
                if response.status == 200:
                    self.latencies.append(time.monotonic() - began)
                else:
                    self.failures.append(f"HTTP {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}"[:120])
                if connection is not None:
                    connection.close()
                connection = None
            if not self.keep_alive and connection is not None:
                connection.close()
                connection = None
            self._stop_event.wait(self.interval)
        if connection is not None:
            connection.close()

    def stop(self) -> Scraper:
        self._stop_event.set()
        self.join(30)
        return self

    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000

    def summary(self) -> str:
        return (
            f"{self.path} p99 {self.p99_ms():.1f} ms, p50 "
            f"{percentile(self.latencies, 50) * 1000:.1f} ms over {len(self.latencies)} scrapes, "
            f"{len(self.failures)} failed"
        )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
