"""A full log disk: poolwatch's stderr on /dev/full, or on a tiny tmpfs that is full. It used to
exit 1 at startup without a word (the first log line raised ENOSPC); it must start, serve, reload
and stop as usual, and count the lines it could not write."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp

from tests.helpers import POOLWATCH, percentile, sample, unavailable, until_metric
from tests.reliability.faults_common import Scraper

Figure = Callable[[str, str, str], None]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _full_tmpfs() -> Iterator[Path]:
    """A 64 KiB tmpfs, filled up: writes to a file on it fail with ENOSPC."""
    with tempfile.TemporaryDirectory(prefix="poolwatch-full-") as name:
        mountpoint = Path(name)
        mounted = subprocess.run(
            ["mount", "-n", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mounted.returncode != 0:
            unavailable(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
        try:
            with (mountpoint / "filler").open("wb") as filler, contextlib.suppress(OSError):
                filler.write(b"\0" * 1024 * 1024)
            yield mountpoint
        finally:
            subprocess.run(["umount", "-n", str(mountpoint)], check=False)


async def _answering(url: str) -> None:
    for _ in range(400):
        with contextlib.suppress(aiohttp.ClientError):
            async with aiohttp.ClientSession() as session, session.get(url + "/healthz"):
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered")


async def _serve_with_stderr(stderr: int, tmp_path: Path) -> tuple[int, float, int, float]:
    """Run poolwatch with `stderr` (a file descriptor); (exit code, lines dropped, scrapes,
    p99 ms)."""
    config = tmp_path / "poolwatch.toml"
    config.write_text('[[connection]]\nuri = "test:///default"\n[poll]\ninterval = "1s"\n')
    listen = f"127.0.0.1:{_free_port()}"
    url = f"http://{listen}"
    process = await asyncio.create_subprocess_exec(
        *(str(POOLWATCH), "--config.file", str(config), "--web.listen-address", listen),
        *("--log.format", "json", "--log.level", "debug"),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        # As a user's machine runs it: stderr buffered (PYTHONUNBUFFERED, set on some developer
        # machines, hid an exit status of 120 from the interpreter's final flush).
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
    )
    try:
        await _answering(url)
        await until_metric(url, "poolwatch_libvirt_up", 1, within=20, uri="test:///default")
        scraper = Scraper(url, pause=0.02)
        async with scraper.running():
            await asyncio.sleep(1)
            process.send_signal(signal.SIGHUP)  # logs, and reconfigures logging
            await until_metric(url, "poolwatch_config_last_reload_successful", 1)
            await asyncio.sleep(1)
        assert not scraper.failures, scraper.failures[:3]
        async with (
            aiohttp.ClientSession() as session,
            session.get(url + "/metrics") as response,
        ):
            dropped = sample(await response.text(), "poolwatch_log_lines_dropped_total")
        assert process.returncode is None
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 10)
    assert dropped is not None
    return code, dropped, len(scraper.latencies), percentile(scraper.latencies, 99) * 1000


async def test_full_log_disk(tmp_path: Path, figure: Figure) -> None:
    results = {}
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        results["/dev/full"] = await _serve_with_stderr(full, tmp_path)
    finally:
        os.close(full)
    with _full_tmpfs() as mountpoint:
        log = os.open(mountpoint / "poolwatch.log", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            results["full tmpfs"] = await _serve_with_stderr(log, tmp_path)
        finally:
            os.close(log)
    for where, (code, dropped, _, _) in results.items():
        assert code == 0, where
        assert dropped >= 3, where  # http_listening, connection_added, config_reloaded, ...
    figure(
        "poolwatch started with stderr on /dev/full, and on a file of a full 64 KiB tmpfs; "
        "scraped every 20 ms, SIGHUP, SIGTERM",
        "it started, served every scrape, reloaded and exited 0; the lost lines counted in "
        "poolwatch_log_lines_dropped_total (it used to exit 1 at the first log line)",
        "; ".join(
            f"{where}: exit {code}, {dropped:.0f} lines dropped, /metrics p99 {p99:.1f} ms "
            f"over {scrapes} scrapes"
            for where, (code, dropped, scrapes, p99) in results.items()
        ),
    )
