"""A fleet: three hosts, each with its own poolwatch, scraped by one Prometheus through the shipped
file_sd configuration; the rules' host: and fleet: series add the hosts up; and a global
Prometheus federating from it with the shipped federation.yml gets those series and no others.

The hosts are libvirt's test driver (test:///ABSOLUTE/PATH.xml, written here), each under its
own connection name, which becomes the ``host`` label. The test driver gives every pool a
capacity of 100 GiB and an allocation that is the sum of its volumes' allocations, and poolwatch
finds no filesystem to stat behind its pools, so each pool is its own backing.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import RULES
from tests.e2e.prometheus_server import PrometheusServer
from tests.e2e.promql import read_rules
from tests.e2e.shipped_config import federation_config, prometheus_config
from tests.helpers import PoolwatchProcess, eventually, scrape

GiB = 1024**3
WITHIN = 30.0  # seconds for any one thing to show up in Prometheus
POOL_CAPACITY = 100 * GiB  # every test driver pool's

# host -> pool -> (type, [(volume capacity GiB, allocation GiB), ...])
Volumes = list[tuple[int, int]]
FLEET: dict[str, dict[str, tuple[str, Volumes]]] = {
    "kvm-a": {
        "images": ("dir", [(40, 12), (80, 30), (200, 18)]),
        "isos": ("dir", [(10, 10)]),
    },
    "kvm-b": {
        "vg_guests": ("logical", [(20, 20), (20, 20), (50, 50)]),
    },
    "kvm-c": {
        "images": ("dir", [(100, 5)]),
        "scratch": ("dir", []),
        "vg_data": ("logical", [(300, 64)]),
    },
}
# The per-pool series each host: and fleet: sum adds up; free space is libvirt's available, as
# there is no filesystem series to take the minimum with.
SUMMED = {
    "capacity_bytes": "libvirt_storage_pool_capacity_bytes",
    "allocation_bytes": "libvirt_storage_pool_allocation_bytes",
    "free_bytes": "libvirt_storage_pool_available_bytes",
    "volumes_capacity_bytes": "libvirt_storage_pool_volumes_capacity_bytes",
}


def host_xml(pools: dict[str, tuple[str, Volumes]]) -> str:
    parts = ["<node>"]
    for name, (pool_type, volumes) in pools.items():
        source = f"<source><name>{name}</name></source>" if pool_type == "logical" else ""
        parts.append(f"<pool type='{pool_type}'><name>{name}</name>{source}")
        parts.append(f"<target><path>/srv/{name}</path></target>")
        for i, (capacity, allocation) in enumerate(volumes):
            parts.append(
                f"<volume><name>vol{i}</name><capacity unit='GiB'>{capacity}</capacity>"
                f"<allocation unit='GiB'>{allocation}</allocation></volume>"
            )
        parts.append("</pool>")
    parts.append("</node>")
    return "\n".join(parts)


@pytest_asyncio.fixture(loop_scope="session")
async def fleet(tmp_path: Path) -> AsyncIterator[dict[str, PoolwatchProcess]]:
    """host -> its poolwatch, exporting the host's pools and volumes."""
    processes: dict[str, PoolwatchProcess] = {}
    for host, pools in FLEET.items():
        (tmp_path / f"{host}.xml").write_text(host_xml(pools))
        config = tmp_path / f"{host}.toml"
        config.write_text(
            f'[[connection]]\nname = "{host}"\nuri = "test://{tmp_path / host}.xml"\n\n'
            '[web]\nlisten = ["127.0.0.1:0"]\n\n[poll]\ninterval = "1s"\nvolumes_interval = "1s"\n'
        )
        processes[host] = PoolwatchProcess("--config.file", str(config))
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in processes.values()))
        yield processes
    finally:
        for process in processes.values():
            if process.proc is not None:
                process.stop()


async def sums_from_metrics(host: str, url: str) -> dict[str, float]:
    """What one poolwatch exports, added up over its pools, once it has scanned them all."""
    values: dict[str, list[float]] = {}

    async def complete() -> bool:
        families = text_string_to_metric_families(await scrape(url))
        samples = [s for family in families for s in family.samples]
        for figure, metric in SUMMED.items():
            values[figure] = [s.value for s in samples if s.name == metric]
        return all(len(v) == len(FLEET[host]) for v in values.values())

    await eventually(complete, within=WITHIN, interval=0.1)
    return {figure: sum(v) for figure, v in values.items()}


async def test_fleet_rules_add_up_the_hosts_and_federation_pulls_only_them(
    fleet: dict[str, PoolwatchProcess], prometheus_binary: Path
) -> None:
    addresses = {host: urlsplit(p.url).netloc for host, p in fleet.items()}
    targets = [
        {"targets": [addresses["kvm-a"], addresses["kvm-b"]], "labels": {"datacenter": "fra1"}},
        {"targets": [addresses["kvm-c"]], "labels": {"datacenter": "ams2"}},
    ]
    site = PrometheusServer(
        prometheus_binary,
        prometheus_config(),
        files={
            "poolwatch.rules.yml": RULES.read_text(),
            "targets/poolwatch.json": json.dumps(targets),
        },
    )
    try:
        await site.start()
        await site.wait_for(
            'up{job="poolwatch"} == 1', lambda r: len(r) == 3, within=WITHIN, what="targets up"
        )
        # -- host: and fleet: against the hosts' own /metrics, and the XML behind them -------
        hosts: dict[str, dict[str, float]] = {}
        for host, process in fleet.items():
            hosts[host] = await sums_from_metrics(host, process.url)
            assert hosts[host]["capacity_bytes"] == len(FLEET[host]) * POOL_CAPACITY
            allocated = sum(a for _, volumes in FLEET[host].values() for _, a in volumes)
            assert hosts[host]["allocation_bytes"] == allocated * GiB
        for figure in SUMMED:
            by_host = {h: totals[figure] for h, totals in hosts.items()}
            await expect(site, f"host:libvirt_storage_pool_{figure}:sum", by_host)
            await expect(site, f"fleet:libvirt_storage_pool_{figure}:sum", sum(by_host.values()))
        overcommit = {
            h: t["volumes_capacity_bytes"] / t["capacity_bytes"] for h, t in hosts.items()
        }
        await expect(site, "host:libvirt_storage_pool_thin_overcommit:ratio", overcommit)
        fleet_overcommit = sum(t["volumes_capacity_bytes"] for t in hosts.values()) / sum(
            t["capacity_bytes"] for t in hosts.values()
        )
        await expect(site, "fleet:libvirt_storage_pool_thin_overcommit:ratio", fleet_overcommit)

        # -- federation: the global Prometheus gets the host: and fleet: series, no others ---
        upward = {r for r in read_rules(RULES).records if r.startswith(("host:", "fleet:"))}
        assert len(upward) == 2 * (len(SUMMED) + 1), upward
        top = PrometheusServer(prometheus_binary, federation_config([urlsplit(site.url).netloc]))
        try:
            await top.start()
            pools = sum(len(p) for p in FLEET.values())
            await expect(
                top, "fleet:libvirt_storage_pool_capacity_bytes:sum", pools * POOL_CAPACITY
            )
            await top.wait_for(
                'group by (__name__) ({__name__=~"libvirt_.+|poolwatch_.+|.+:.+:.+"})',
                lambda r: {s["metric"]["__name__"] for s in r} == upward,
                within=WITHIN,
                what="only the host: and fleet: series federated",
            )
            await expect(
                top,
                "host:libvirt_storage_pool_free_bytes:sum",
                {h: t["free_bytes"] for h, t in hosts.items()},
            )
        finally:
            top.stop()
    finally:
        site.stop()


async def expect(
    prometheus: PrometheusServer, record: str, expected: float | dict[str, float]
) -> None:
    """Wait until the recorded series ``record`` has the expected value (one series without
    labels), or the expected value per host (one series per host)."""
    want = expected if isinstance(expected, dict) else {"": expected}

    def holds(result: list[dict[str, Any]]) -> bool:
        got = {s["metric"].get("host", ""): float(s["value"][1]) for s in result}
        return got.keys() == want.keys() and all(
            math.isclose(got[h], want[h], rel_tol=1e-12) for h in want
        )

    await prometheus.wait_for(record, holds, within=WITHIN, what=f"{record} == {want}")
