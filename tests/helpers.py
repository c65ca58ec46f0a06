"""Shared by the embedded and integration tiers: run poolwatch (in process or as a real
process), scrape it, and read samples the way Prometheus would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest
import structlog
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from poolwatch.config import Config, ConnectionConfig, PollConfig, WebConfig
from poolwatch.daemon import Daemon
from tests.harness.libvirtd import Libvirtd, LibvirtdError, prerequisites_problem

REPO = Path(__file__).resolve().parents[1]
POOLWATCH = Path(sys.executable).with_name("poolwatch")
STOP_TIMEOUT = 30.0  # seconds for Daemon.stop() in `running`


def unavailable(reason: str) -> NoReturn:
    """A component a test needs cannot be had: in CI a failure (a silent skip would hide a broken
    product), on a workstation a skip with the reason."""
    if os.environ.get("CI", "").lower() in {"true", "1", "yes"}:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def private_libvirtd() -> Iterator[Libvirtd]:
    """A started private libvirtd (see tests/harness/libvirtd.py), closed on the way out."""
    problem = prerequisites_problem()
    if problem:
        unavailable(problem)
    daemon = Libvirtd()
    try:
        daemon.start()
    except LibvirtdError as exc:
        daemon.close()
        unavailable(f"cannot start a private libvirtd: {exc}")
    try:
        yield daemon
    finally:
        daemon.close()


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (utime and stime of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def config_for(uri: str, **poll: Any) -> Config:
    """One connection, a free loopback port, and the given [poll] settings."""
    return Config(
        connections=(ConnectionConfig(name="test", uri=uri),),
        poll=PollConfig(**poll),
        web=WebConfig(listen=("127.0.0.1:0",)),
    )


@contextlib.asynccontextmanager
async def running(
    config: Config, *, dry_run: bool = False, reload_config: Callable[[], Config] | None = None
) -> AsyncIterator[Daemon]:
    """The real daemon wiring in this process, stopped on the way out; ``daemon.reload()``
    loads ``reload_config()``, as a SIGHUP would."""
    daemon = Daemon(config, reload_config=reload_config, demo=False, dry_run=dry_run)
    await daemon.start()
    try:
        yield daemon
    finally:
        # Bounded: a stop that hangs (say, on a libvirt call that never returns) must fail the
        # test that caused it. asyncio.wait, not wait_for: wait_for would wait for the
        # cancelled stop to end, forever if the stop ignores its cancellation.
        stopping = asyncio.ensure_future(daemon.stop())
        done, _ = await asyncio.wait({stopping}, timeout=STOP_TIMEOUT)
        if not done:
            _dump_stacks()
            raise AssertionError(f"Daemon.stop() took more than {STOP_TIMEOUT} s")
        stopping.result()


def _dump_stacks() -> None:
    """Where a hung stop waits: every thread's and every pending task's stack, on stderr."""
    for thread_id, frame in sys._current_frames().items():
        print(f"--- thread {thread_id}", file=sys.stderr)
        traceback.print_stack(frame, file=sys.stderr)
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


@contextlib.contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event of this process while active, at every level, as event dicts with
    `log_level` and a unix `timestamp` (float). Not thread-safe, like structlog's capture_logs."""
    saved = structlog.get_config()["wrapper_class"]
    with capture_logs(processors=[structlog.processors.TimeStamper(fmt=None)]) as entries:
        # A level set by an earlier configure_logging() in this process would hide events.
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET))
        try:
            yield entries
        finally:
            structlog.configure(wrapper_class=saved)


@contextlib.asynccontextmanager
async def serving(app: web.Application, *, shutdown_timeout: float = 1.0) -> AsyncIterator[str]:
    """``app`` (a webhook receiver, say) on a free 127.0.0.1 port: yields http://127.0.0.1:PORT."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def base_url(daemon: Daemon) -> str:
    host, port = daemon.addresses[0]
    return f"http://{host}:{port}"


async def fetch(url: str, *, within: float = 5.0, **kwargs: Any) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within)) as session,
        session.get(url, **kwargs) as response,
    ):
        return response.status, await response.text()


async def scrape(daemon_or_url: Daemon | str) -> str:
    url = daemon_or_url if isinstance(daemon_or_url, str) else base_url(daemon_or_url)
    status, text = await fetch(f"{url}/metrics")
    assert status == 200, text
    return text


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one series ``name`` whose labels include ``labels``; None if absent."""
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} series"
    return found[0] if found else None


def series(text: str, name: str, **labels: str) -> list[dict[str, str]]:
    """The label sets of every series ``name`` whose labels include ``labels``."""
    return [
        s.labels
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, interval: float = 0.02
) -> None:
    """Wait until ``check`` holds; fail with a clear message after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


async def until_metric(
    url: str,
    name: str,
    expected: float | None,
    *,
    within: float = 10.0,
    **labels: str,
) -> float:
    """Scrape until the series has the expected value (None: is absent); return seconds taken."""
    started = time.monotonic()
    last: list[float | None] = [None]

    async def check() -> bool:
        last[0] = sample(await scrape(url), name, **labels)
        return last[0] == expected

    try:
        await eventually(check, within=within)
    except AssertionError:
        raise AssertionError(f"{name}{labels} is {last[0]}, expected {expected}") from None
    return time.monotonic() - started


class PoolwatchProcess:
    """poolwatch run as an operator runs it: a real process, JSON logs, stopped by its pid.

    `prefix` runs it under a wrapper that execs it, so the pid stays poolwatch's own (e.g.
    `unshare -m --propagation private` for a mount namespace of its own).
    """

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, prefix: Sequence[str] = ()
    ) -> None:
        self.args = [*prefix, str(POOLWATCH), *args, "--log.format", "json"]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.logs: list[dict[str, Any]] = []
        self.stdout: list[str] = []
        self._listening = threading.Event()
        self.url = ""

    def start(self, *, timeout: float = 20.0) -> PoolwatchProcess:
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=REPO,
        )
        logs = threading.Thread(target=self._read_logs, daemon=True)
        logs.start()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        deadline = time.monotonic() + timeout
        # Poll, so that a poolwatch that exits at once (bad flags, a crash) fails fast.
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                code = self.stop()
                logs.join(2)  # the last lines say why
                raise AssertionError(
                    f"poolwatch did not start listening (exit code {code}): {self.logs}"
                )
        return self

    def _read_logs(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = {"event": "unparsed", "line": line}
            self.logs.append(entry)
            if entry.get("event") == "http_listening":
                self.url = entry["urls"][0].rstrip("/")
                self._listening.set()

    def _read_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs if e.get("event") == name]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, *, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout)
