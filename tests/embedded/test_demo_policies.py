"""`poolwatch demo` as shipped shows what poolwatch does, not only what it watches: with its own
rules (poolwatch/demo/demo.toml) it raises and clears an alarm, forecasts a time to full, starts
a stopped autostart pool again and runs a hook that logs, and each shows on the landing page,
in /api/v1/events and in `poolwatch status`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from structlog.testing import capture_logs

from poolwatch import status
from poolwatch.config import WebConfig, load_config
from poolwatch.daemon import Daemon, DemoPace
from poolwatch.demo import DEMO_CONFIG
from tests.helpers import PoolwatchProcess, eventually, fetch

# Twice the shipped pace, and the same scenario on every run. The forecast needs real seconds
# of history (a tenth of its window), so the pace cannot go much faster.
PACE = DemoPace(step=1.0, poll_interval=1.0, volumes_interval=2.5, refresh_interval=10.0, seed=1)
# The README promises all of it within two minutes of `poolwatch demo`; at twice the pace it
# takes about twenty seconds.
WITHIN = 120.0


@dataclass
class Seen:
    """What each of the three places has shown so far, over many looks."""

    page: set[str] = field(default_factory=set)
    events: set[str] = field(default_factory=set)
    status: set[str] = field(default_factory=set)

    def complete(self) -> bool:
        wanted = {"raised", "cleared", "time_to_full", "started", "hook"}
        return wanted <= self.page and wanted <= self.events and wanted <= self.status


def _look_at_page(page: str, seen: set[str]) -> None:
    if "badge warning" in page or "badge critical" in page:
        seen.add("raised")
    if "recovery ok" in page:
        seen.add("cleared")
    if "full in " in page:
        seen.add("time_to_full")
    if "start_pool ok" in page:
        seen.add("started")
    if "hook:log " in page:
        seen.add("hook")
    if "<svg class='spark'" in page:
        seen.add("chart")


def _look_at_events(events: list[dict[str, Any]], pools: dict[str, Any], seen: set[str]) -> None:
    raised: set[str] = set()
    for event in reversed(events):  # oldest first
        if event["action"] == "hook:log" and event["result"] == "ok":
            seen.add("hook")
            if event["detail"] in ("warning", "critical"):
                seen.add("raised")
                raised.add(event["pool"])
            elif event["detail"] == "recovery" and event["pool"] in raised:
                seen.add("cleared")
        if event["action"] == "start_pool" and event["result"] == "ok":
            seen.add("started")
    # The events tell actions; the forecast is in the pools document.
    if any(
        pool["policy"] and pool["policy"]["time_to_full_seconds"] is not None
        for host in pools["hosts"]
        for pool in host["pools"]
    ):
        seen.add("time_to_full")


def _status_table(url: str) -> str:
    """What `poolwatch status --web.url URL` prints."""
    daemon = status.daemon_url(url)
    rows = status.parse_pools(status.fetch_pools(daemon, timeout=5.0), url=daemon)
    return status.render_table(rows, now=time.time())


def _look_at_status(table: str, seen: set[str]) -> None:
    header, *lines = table.splitlines()
    forecast = header.index("FORECAST")
    autostart = header.index("AUTOSTART")
    for line in lines:
        if " WARNING " in line or " CRITICAL " in line:
            seen.add("raised")
        if "hook:log recovery ok" in line:
            seen.add("cleared")
        if line[forecast:autostart].strip() not in ("", "-"):
            seen.add("time_to_full")
        if "start_pool ok" in line:
            seen.add("started")
        if "hook:log " in line:
            seen.add("hook")


async def _json(url: str) -> Any:
    code, body = await fetch(url)
    assert code == 200, body
    return json.loads(body)


async def test_the_demo_shows_its_policies_at_work() -> None:
    config = load_config(DEMO_CONFIG).model_copy(
        update={"connections": (), "web": WebConfig(listen=("127.0.0.1:0",))}
    )
    daemon = Daemon(config, reload_config=None, demo=True, demo_pace=PACE)
    seen = Seen()
    with capture_logs() as logs:
        await daemon.start()
        try:
            url = f"http://127.0.0.1:{daemon.addresses[0][1]}"

            async def everything_shown() -> bool:
                _look_at_page((await fetch(f"{url}/"))[1], seen.page)
                events = (await _json(f"{url}/api/v1/events?limit=500"))["events"]
                _look_at_events(events, await _json(f"{url}/api/v1/pools"), seen.events)
                _look_at_status(await asyncio.to_thread(_status_table, url), seen.status)
                return seen.complete()

            await eventually(everything_shown, within=WITHIN, interval=0.5)
        finally:
            await daemon.stop()
    assert "chart" in seen.page  # the fill history of the pools, drawn
    # The hook only logs: its output is in the daemon's log, with its result.
    said = [
        e["stdout"]
        for e in logs
        if e["event"] == "policy_action" and e["action"] == "hook:log" and e["result"] == "ok"
    ]
    assert any(line.endswith(" -> critical\n") for line in said), said
    assert any(line.endswith(" -> ok\n") for line in said), said


async def test_poolwatch_demo_runs_the_demo_rules_without_a_file() -> None:
    process = PoolwatchProcess("demo", "--web.listen-address", "127.0.0.1:0").start()
    try:
        # vg_guests is 93 % full from the start: critical at once, and the hook says so.
        async def hook_ran() -> bool:
            return any(
                e.get("pool") == "vg_guests" and e.get("stdout") == "vg_guests: ok -> critical\n"
                for e in process.events("policy_action")
            )

        await eventually(hook_ran, within=20)
        pools = await _json(f"{process.url}/api/v1/pools")
        policies = {p["name"]: p["policy"] for h in pools["hosts"] for p in h["pools"]}
        assert policies["vg_guests"]["level"] == "critical"
        assert policies["ceph-rbd"]["autostart"]["mode"] == "enforce"
    finally:
        assert process.stop() == 0
