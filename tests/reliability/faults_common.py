"""Shared by the fault and load tests: a real poolwatch process on a private libvirtd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.helpers import PoolwatchProcess


def write_config(path: Path, uri: str, *, poll: dict[str, str], extra: str = "") -> Path:
    lines = ["[[connection]]", 'name = "test"', f'uri = "{uri}"', "[poll]"]
    lines += [f'{key} = "{value}"' for key, value in poll.items()]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@contextlib.contextmanager
def poolwatch(
    config: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[PoolwatchProcess]:
    process = PoolwatchProcess(
        "--config.file", str(config), "--web.listen-address", "127.0.0.1:0", *extra, env=env
    ).start()
    try:
        yield process
    finally:
        process.stop()


@dataclass(frozen=True)
class ProcStats:
    fds: int
    threads: int
    rss_kib: int

    def __str__(self) -> str:
        return f"{self.fds} fds, {self.threads} threads, {self.rss_kib / 1024:.1f} MiB RSS"


def proc_stats(pid: int) -> ProcStats:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return ProcStats(
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(fields["Threads"].strip()),
        rss_kib=int(fields["VmRSS"].split()[0]),
    )


@dataclass
class Scraper:
    """Scrapes /metrics in the background and keeps every latency and every failure."""

    url: str
    pause: float = 0.05
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Scraper]:
        task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                began = time.monotonic()
                try:
                    async with session.get(self.url + "/metrics") as response:
                        await response.read()
                        if response.status != 200:
                            self.failures.append(f"status {response.status}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.failures.append(repr(exc))
                self.latencies.append(time.monotonic() - began)
                await asyncio.sleep(self.pause)
