"""Hook receivers that never help: one webhook hangs on every request, one answers 503 forever,
while 150 pools are in warning at once. Queues stay bounded (the excess is dropped and counted),
give-ups are counted, and scrapes are unaffected."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import percentile, scrape, serving, until_metric
from tests.reliability.conftest import sized
from tests.reliability.faults_common import Scraper, poolwatch, proc_stats

Figure = Callable[[str, str, str], None]
POOLS = 150  # over the runner's queue of 100 per webhook


class Receivers:
    def __init__(self) -> None:
        self.hanging = 0
        self.max_hanging = 0
        self.failed_requests = 0
        self.release = asyncio.Event()

    async def hang(self, request: web.Request) -> web.Response:
        self.hanging += 1
        self.max_hanging = max(self.max_hanging, self.hanging)
        try:
            # Held until the client gives up (aiohttp does not cancel a handler on disconnect).
            while not self.release.is_set():
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                await asyncio.sleep(0.02)
        finally:
            self.hanging -= 1
        return web.Response(text="late\n")

    async def fail(self, request: web.Request) -> web.Response:
        self.failed_requests += 1
        return web.Response(status=503, text="no\n")


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Receivers, str]]:
    state = Receivers()
    app = web.Application()
    app.router.add_post("/hang", state.hang)
    app.router.add_post("/fail", state.fail)
    async with serving(app) as url:
        try:
            yield state, url
        finally:
            state.release.set()


def _actions(text: str, hook: str) -> dict[str, float]:
    results: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "poolwatch_actions_total" and s.labels.get("action") == f"hook:{hook}":
                results[s.labels["result"]] = results.get(s.labels["result"], 0) + s.value
    return results


async def test_dead_webhook_receivers(
    receivers: tuple[Receivers, str], tmp_path: Path, figure: Figure
) -> None:
    state, base = receivers
    seconds = float(sized(8, 30))
    host = tmp_path / "host.xml"
    host.write_text(
        "<node>"
        + "".join(
            f"<pool type='dir'><name>w{i}</name><uuid>{uuid.uuid4()}</uuid>"
            f"<target><path>/pools/w{i}</path></target>"
            "<volume type='file'><name>big.img</name><capacity unit='GiB'>90</capacity>"
            "<allocation unit='GiB'>90</allocation></volume></pool>"
            for i in range(POOLS)
        )
        + "</node>"
    )
    config = tmp_path / "poolwatch.toml"
    config.write_text(
        f'[[connection]]\nname = "test"\nuri = "test://{host}"\n[poll]\ninterval = "1s"\n'
        '[[threshold]]\npool = "*"\nwarning = "85%"\nfor = "0s"\nhooks = ["hang", "fail"]\n'
        f'[hooks.hang]\nwebhook = "{base}/hang"\ntimeout = "1s"\nretries = 1\n'
        f'[hooks.fail]\nwebhook = "{base}/fail"\ntimeout = "1s"\nretries = 2\n'
    )
    with poolwatch(config) as process:
        url = process.url
        pid = process.proc.pid if process.proc else 0
        await until_metric(url, "poolwatch_pool_threshold_level", 1, within=15, storage_pool="w0")
        first = proc_stats(pid)
        async with Scraper(url, pause=0.02).running() as scraper:
            await asyncio.sleep(seconds)
        last = proc_stats(pid)
        text = await scrape(url)
        assert process.proc is not None
        assert process.proc.poll() is None
    hang, fail = _actions(text, "hang"), _actions(text, "fail")
    assert not scraper.failures, scraper.failures[:5]
    p99 = percentile(scraper.latencies, 99)
    assert p99 < 0.5
    # One worker per webhook: never more than one request hanging at a time (plus slack).
    assert state.max_hanging <= 2, state.max_hanging
    # Bounded queue: what did not fit was dropped and counted; nothing succeeded.
    assert hang.get("dropped", 0) >= POOLS - 101, hang
    assert hang.get("ok", 0) == 0
    assert fail.get("ok", 0) == 0
    assert fail.get("failed", 0) + fail.get("timeout", 0) >= 1, fail
    # Every request to the 503 receiver belongs to a submitted event: at most 3 tries each.
    assert state.failed_requests <= POOLS * 3
    # The default executor may grow to min(32, cores + 4) workers: bounded, not leaking.
    assert last.threads <= first.threads + 8, (first, last)
    assert last.fds <= first.fds + 10, (first, last)
    figure(
        f"{POOLS} pools enter warning at once; webhook 'hang' never answers (timeout 1 s, 1 retry),"
        f" webhook 'fail' answers 503 forever (2 retries); {seconds:g} s with a scrape every 20 ms",
        "no failed scrape; one worker per webhook (at most 2 connections open to the hanging "
        "receiver at once, the previous one still closing); the excess over the queue "
        "of 100 dropped and counted; give-ups counted as failed/timeout; no thread/fd growth",
        f"/metrics p99 {p99 * 1000:.1f} ms over {len(scraper.latencies)} scrapes; hang: "
        f"{dict(sorted(hang.items()))}, max {state.max_hanging} in flight; fail: "
        f"{dict(sorted(fail.items()))}, {state.failed_requests} requests; {first} -> {last}",
    )
