"""A careless operator's configuration files: nested 10,000 deep, not a file at all (a FIFO,
/dev/zero), absurd durations, a byte order mark. Each is refused with exit 3 (or, on SIGHUP,
a failed reload that is logged and counted) while the running daemon keeps serving."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from poolwatch.config import Config
from poolwatch.daemon import Daemon
from tests.helpers import POOLWATCH, captured_logs, config_for, percentile, until_metric
from tests.reliability.faults_common import Scraper, poolwatch

Figure = Callable[[str, str, str], None]

DEEP = 10_000
GOOD = '[[connection]]\nname = "test"\nuri = "test:///default"\n[poll]\ninterval = "1s"\n'


def _check_config(path: Path | str) -> tuple[int, str, float]:
    """`poolwatch check-config PATH`: exit code, stderr, and the child's peak RSS in MiB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(
        [str(POOLWATCH), "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,  # a FIFO used to hang here forever
        check=False,
    )
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return proc.returncode, proc.stderr + proc.stdout, peak / 1024


def _deep_documents() -> dict[str, str]:
    return {
        "array": "a = " + "[" * DEEP + "]" * DEEP + "\n",
        "inline table": "a = " + "{b = " * DEEP + "1" + "}" * DEEP + "\n",
        "poll.interval": "[poll]\ninterval = " + "[" * DEEP + "]" * DEEP + "\n",
    }


async def test_deeply_nested_config(tmp_path: Path, figure: Figure) -> None:
    codes = []
    for i, text in enumerate(_deep_documents().values()):
        path = tmp_path / f"deep{i}.toml"
        path.write_text(text)
        code, output, _ = _check_config(path)
        assert code == 3, output
        assert "Traceback" not in output, output
        assert "nested too deep" in output, output
        codes.append(code)
    config = tmp_path / "poolwatch.toml"
    config.write_text(GOOD)
    with poolwatch(config) as process:
        url = process.url
        await until_metric(url, "poolwatch_libvirt_up", 1, uri="test:///default")
        scraper = Scraper(url, pause=0.02)
        async with scraper.running():
            await asyncio.sleep(0.5)
            config.write_text(_deep_documents()["array"])
            process.signal(signal.SIGHUP)
            await until_metric(url, "poolwatch_config_last_reload_successful", 0)
            await asyncio.sleep(0.5)
        assert not scraper.failures, scraper.failures[:3]
        failed = process.events("config_reload_failed")
        assert failed
        assert "nested too deep" in str(failed[0]["errors"]), failed
        unparsed = process.events("unparsed")
        assert not unparsed, unparsed[:3]
        config.write_text(GOOD)
        process.signal(signal.SIGHUP)
        await until_metric(url, "poolwatch_config_last_reload_successful", 1)
    p99 = percentile(scraper.latencies, 99) * 1000
    figure(
        f"config files nested {DEEP:,} deep (array, inline table, in poll.interval): "
        "`check-config`, and a SIGHUP of a running poolwatch onto one",
        "check-config exit 3 'nested too deep', no traceback; the reload failed as "
        "config_reload_failed (JSON) with the gauge at 0, no non-JSON line; scrapes kept working",
        f"exit codes {codes}; {len(process.logs)} log lines, 0 non-JSON; "
        f"/metrics p99 {p99:.1f} ms over {len(scraper.latencies)} scrapes",
    )


async def test_config_path_that_is_not_a_regular_file(tmp_path: Path, figure: Figure) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * 200_000)  # 2 MB of comments: valid TOML, but no config
    paths = {"/dev/zero": "/dev/zero", "FIFO": fifo, "directory": tmp_path, "2 MB file": big}
    outcomes = []
    peak = 0.0
    for name, path in paths.items():
        began = time.monotonic()
        code, output, rss = _check_config(path)
        peak = max(peak, rss)
        assert code == 3, (name, output)
        assert "Traceback" not in output, output
        assert str(path) in output, output
        assert "regular file" in output or "larger than" in output, output
        outcomes.append(f"{name}: exit {code} in {time.monotonic() - began:.2f} s")
    # The daemon itself refuses them the same way at start ...
    start = await asyncio.create_subprocess_exec(
        str(POOLWATCH),
        "--config.file",
        "/dev/zero",
        "--web.listen-address",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(start.communicate(), 30)
    assert start.returncode == 3, stderr
    # ... and a running one whose file becomes a FIFO fails the reload without blocking.
    config = tmp_path / "poolwatch.toml"
    config.write_text(GOOD)
    with poolwatch(config) as process:
        url = process.url
        scraper = Scraper(url, pause=0.02)
        async with scraper.running():
            await asyncio.sleep(0.5)
            config.unlink()
            os.mkfifo(config)
            process.signal(signal.SIGHUP)
            await until_metric(url, "poolwatch_config_last_reload_successful", 0)
            await asyncio.sleep(0.5)
        assert not scraper.failures, scraper.failures[:3]
        assert "a FIFO" in str(process.events("config_reload_failed"))
    p99 = percentile(scraper.latencies, 99) * 1000
    figure(
        "`check-config` and the daemon on /dev/zero, a FIFO, a directory and a 2 MB file; "
        "SIGHUP after the running daemon's file was replaced by a FIFO",
        "each refused at once with exit 3 'not a regular file' / 'larger than 1024 KiB' (the "
        "daemon too); the reload failed and counted, the daemon kept serving",
        f"{'; '.join(outcomes)}; peak RSS {peak:.0f} MiB (was 3.7 GB on /dev/zero, a FIFO hung); "
        f"/metrics p99 {p99:.1f} ms during the FIFO reload",
    )


def test_absurd_durations_and_a_byte_order_mark(tmp_path: Path, figure: Figure) -> None:
    cases = {
        'interval = "1ms"': (3, 'at least "500ms"'),
        'volumes_interval = "10ms"': (3, 'at least "1s"'),
        'refresh_interval = "1ms"': (3, 'or "0s" to turn it off'),
        'call_timeout = "1ms"': (3, 'at least "100ms"'),
        'interval = "99999999999999999999d"': (3, "longer than the maximum of 365d"),
        'interval = "366d"': (3, "longer than the maximum of 365d"),
        'interval = "500ms"\nrefresh_interval = "0s"': (0, "OK"),
    }
    for i, (poll, (expected, message)) in enumerate(cases.items()):
        path = tmp_path / f"{i}.toml"
        path.write_text(f"[poll]\n{poll}\n")
        code, output, _ = _check_config(path)
        assert (code, message in output) == (expected, True), (poll, output)
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    code, output, _ = _check_config(bom)
    assert code == 0, output
    figure(
        f"`check-config` on {len(cases)} [poll] settings (1ms, 10ms, 99999999999999999999d, 366d, "
        "the minimums) and a file starting with a UTF-8 byte order mark",
        "below the minimums (interval 500ms, volumes_interval 1s, refresh_interval 0 or 1s, "
        "call_timeout 100ms) and above 365d: exit 3 naming the bound; the BOM file: exit 0",
        f"{len(cases) - 1} refused, 1 valid; BOM file exit {code}",
    )


async def test_any_loading_failure_fails_the_reload(figure: Figure) -> None:
    """Whatever goes wrong while loading (here a bug: RuntimeError), SIGHUP's reload fails as a
    counted, logged config_reload_failed; it used to escape into the signal handler."""

    def broken() -> Config:
        raise RuntimeError("a bug in loading")

    daemon = Daemon(config_for("test:///default"), reload_config=broken, demo=False)
    await daemon.start()
    try:
        with captured_logs() as logs:
            daemon.reload()
    finally:
        await daemon.stop()
    failed = [entry for entry in logs if entry["event"] == "config_reload_failed"]
    assert failed[0]["errors"] == ["RuntimeError: a bug in loading"]
    assert daemon.telemetry.last_reload_successful is False
    figure(
        "SIGHUP while loading the file raises an unexpected exception (RuntimeError)",
        "the reload failed as config_reload_failed with the error, gauge 0, the daemon running",
        f"{len(failed)} config_reload_failed line",
    )
