"""A web config reload that fails, with no TOML file at all (the web config from the flag): it
used to show only in the log; now /metrics says so and the shipped rules alert on it."""

from __future__ import annotations

import asyncio
import base64
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import bcrypt

from tests.helpers import PoolwatchProcess, sample

Figure = Callable[[str, str, str], None]

USER, PASSWORD = "prometheus", "ScrapePass-5521"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


async def _gauge(url: str) -> float | None:
    async with aiohttp.ClientSession() as session, session.get(url, headers=AUTH) as response:
        assert response.status == 200
        return sample(await response.text(), "poolwatch_web_config_last_reload_successful")


async def test_failed_web_config_reload_is_on_metrics(tmp_path: Path, figure: Figure) -> None:
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    web.write_text(f"basic_auth_users:\n  {USER}: {hashed}\n")
    process = PoolwatchProcess(
        "--libvirt.uri", "test:///default", "--web.listen-address", "127.0.0.1:0",
        "--web.config.file", str(web),
    ).start()  # fmt: skip
    try:
        url = process.url + "/metrics"
        at_start = await _gauge(url)
        web.write_text(f"basic_auth_users:\n  {USER}: {hashed}\n  intruder: not-a-hash\n")
        process.signal(signal.SIGHUP)
        failed = None
        for _ in range(100):
            failed = await _gauge(url)  # the old users still hold: scrapes go on
            if failed == 0:
                break
            await asyncio.sleep(0.05)
        web.write_text(f"basic_auth_users:\n  {USER}: {hashed}\n")
        process.signal(signal.SIGHUP)
        fixed = None
        for _ in range(100):
            fixed = await _gauge(url)
            if fixed == 1:
                break
            await asyncio.sleep(0.05)
    finally:
        assert process.stop() == 0
    assert (at_start, failed, fixed) == (1, 0, 1)
    assert process.events("web_config_reload_failed")
    figure(
        "poolwatch without a TOML file, its web config from --web.config.file; the file broken "
        "(a user without a bcrypt hash) and SIGHUP, then fixed and SIGHUP",
        "poolwatch_web_config_last_reload_successful went 1 -> 0 -> 1 while the old users kept "
        "scraping; PoolwatchWebConfigReloadFailed fires on 0 (promtool test in "
        "config/prometheus/poolwatch.rules.test.yml)",
        f"gauge {at_start:.0f} -> {failed:.0f} -> {fixed:.0f}",
    )
