"""A real Prometheus scrapes ``poolwatch demo`` and evaluates poolwatch's rules on it.

Set up like config/prometheus/prometheus.yml (job "poolwatch", file_sd targets file, the rules
file), but with 1 s intervals so that everything shows within seconds.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest_asyncio

from tests.e2e.conftest import DEMO_POOLS, RULES
from tests.e2e.prometheus_server import PrometheusServer
from tests.e2e.promql import read_rules
from tests.helpers import PoolwatchProcess, eventually

GiB = 1024**3
WITHIN = 30.0  # seconds for any one thing to show up in Prometheus
DEMO_POOL_REGEX = "|".join(sorted(DEMO_POOLS))
# vg_guests in the demo host: 100 GiB, of which 93 GiB allocated, and the filler leaves it be.
VG_GUESTS_FREE = 7 * GiB


@pytest_asyncio.fixture(loop_scope="session")
async def prometheus(
    demo: PoolwatchProcess, prometheus_binary: Path
) -> AsyncIterator[PrometheusServer]:
    address = urlsplit(demo.url).netloc
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "poolwatch",
                "scrape_timeout": "1s",
                "file_sd_configs": [{"files": ["targets/poolwatch*.json"]}],
            }
        ],
    }
    targets = json.dumps([{"targets": [address], "labels": {"datacenter": "e2e"}}])
    server = PrometheusServer(prometheus_binary, config, files={"targets/poolwatch.json": targets})
    try:
        yield await server.start()
    finally:
        server.stop()


async def test_prometheus_scrapes_poolwatch_and_evaluates_its_rules(
    prometheus: PrometheusServer, demo: PoolwatchProcess
) -> None:
    # The target, found through file_sd, is up.
    await prometheus.wait_for(
        'up{job="poolwatch"} == 1', lambda r: len(r) == 1, within=WITHIN, what="target up"
    )
    targets = await prometheus.api("targets", state="active")
    [target] = targets["activeTargets"]
    assert target["health"] == "up", target
    assert target["labels"]["job"] == "poolwatch"
    assert target["scrapeUrl"] == f"{demo.url}/metrics"

    # Every persistent demo pool's capacity is there (the demo stops one now and then, so
    # look back a little; transient scratch-N pools come and go and are left out).
    await prometheus.wait_for(
        f'count(last_over_time(libvirt_storage_pool_capacity_bytes{{storage_pool=~"{DEMO_POOL_REGEX}"}}[1m]))',
        lambda r: r and _value(r[0]) == len(DEMO_POOLS),
        within=WITHIN,
        what="capacity of every demo pool",
    )
    # poolwatch's labels arrive as they are; the target's own labels are added.
    [vg] = await prometheus.query('libvirt_storage_pool_capacity_bytes{storage_pool="vg_guests"}')
    assert vg["metric"] == {
        "__name__": "libvirt_storage_pool_capacity_bytes",
        "job": "poolwatch",
        "instance": urlsplit(demo.url).netloc,
        "datacenter": "e2e",
        "host": "demo",
        "storage_pool": "vg_guests",
    }
    assert _value(vg) == 100 * GiB

    # Recording rules evaluate on real data: vg_guests (LVM, no filesystem series) gets
    # libvirt's free space, and the host's capacity is a whole number of 100 GiB pools.
    [free] = await prometheus.wait_for(
        'storage_pool:libvirt_storage_pool_free_bytes:min{storage_pool="vg_guests"}',
        lambda r: len(r) == 1,
        within=WITHIN,
        what="per-pool free space rule",
    )
    assert _value(free) == VG_GUESTS_FREE
    [capacity] = await prometheus.wait_for(
        "host:libvirt_storage_pool_capacity_bytes:sum",
        lambda r: len(r) == 1,
        within=WITHIN,
        what="host capacity rule",
    )
    assert capacity["metric"] == {
        "__name__": "host:libvirt_storage_pool_capacity_bytes:sum",
        "host": "demo",
    }
    assert _value(capacity) % (100 * GiB) == 0, capacity
    assert _value(capacity) >= len(DEMO_POOLS) * 100 * GiB - 100 * GiB, capacity
    [ratio] = await prometheus.wait_for(
        "fleet:libvirt_storage_pool_thin_overcommit:ratio",
        lambda r: len(r) == 1,
        within=WITHIN,
        what="fleet thin overcommit rule",
    )
    assert _value(ratio) > 1  # the demo's images and ceph-rbd pools are thin

    # Every rule is loaded and has evaluated without error on poolwatch's real output.
    expected = read_rules(RULES)
    rules = await _evaluated_rules(prometheus)
    assert sorted(r["name"] for r in rules if r["type"] == "recording") == sorted(expected.records)
    assert sorted(r["name"] for r in rules if r["type"] == "alerting") == sorted(expected.alerts)
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken, broken

    # vg_guests is 93 % full: the space alert is pending (for: 10m) with its labels and
    # annotations filled in from poolwatch's labels, as for any pool without filesystem series.
    alert = await _alert(prometheus, "PoolwatchPoolAlmostFull", storage_pool="vg_guests")
    assert alert["state"] in {"pending", "firing"}, alert
    assert alert["labels"]["host"] == "demo"
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"] == "Storage pool vg_guests on demo is almost full"
    assert "has only 7GiB free" in alert["annotations"]["description"]


async def _evaluated_rules(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    """All rules, once each has been evaluated at least once."""
    found: list[dict[str, Any]] = []

    def evaluated(rules: list[dict[str, Any]]) -> bool:
        return bool(rules) and all(not r["lastEvaluation"].startswith("0001-") for r in rules)

    async def check() -> bool:
        data = await prometheus.api("rules")
        found[:] = [rule for group in data["groups"] for rule in group["rules"]]
        return evaluated(found)

    await eventually(check, within=WITHIN, interval=0.25)
    return found


async def _alert(prometheus: PrometheusServer, name: str, **labels: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    async def check() -> bool:
        data = await prometheus.api("alerts")
        found[:] = [
            a
            for a in data["alerts"]
            if a["labels"]["alertname"] == name
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]
        return len(found) == 1

    try:
        await eventually(check, within=WITHIN, interval=0.25)
    except AssertionError:
        raise AssertionError(f"no {name}{labels} alert in Prometheus: {found}") from None
    return found[0]


def _value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])
