"""Fixtures for the e2e tier: Prometheus's tools, and one ``poolwatch demo`` that the tests share.

The demo runs with a configuration that has an autostart rule and a threshold rule, so that
the policy series (threshold level, gave up, not mounted, actions) exist as well, as they do
on a host with policies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.e2e.prometheus_server import find_tool
from tests.helpers import REPO, PoolwatchProcess, eventually, scrape, series

PROMETHEUS_DIR = REPO / "config" / "prometheus"
RULES = PROMETHEUS_DIR / "poolwatch.rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "poolwatch.rules.test.yml"
EXAMPLE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
EXAMPLE_TARGETS = PROMETHEUS_DIR / "targets" / "poolwatch.json"
FEDERATION_CONFIG = PROMETHEUS_DIR / "federation.yml"
ALERTMANAGER_CONFIG = REPO / "config" / "alertmanager" / "alertmanager.yml"
DASHBOARD = REPO / "grafana" / "poolwatch.json"

# The persistent pools of poolwatch/demo/host.xml; the demo also creates short-lived transient
# pools (scratch-N) now and then.
DEMO_POOLS = frozenset({"images", "backups", "isos", "vg_guests", "san-lun", "ceph-rbd"})
DEMO_READY_WITHIN = 20.0  # seconds

DEMO_CONFIG = """\
# images is a dir pool whose target is not a mount point here: not_mounted = 1.
[[autostart]]
pool = "images"
type = "dir"
mode = "enforce"
ensure_flag = true
require_mount = true

# Every other pool: set the autostart flag (a set_autostart action at once) and restart the
# pools that the demo stops.
[[autostart]]
pool = "*"
mode = "enforce"
ensure_flag = true

# vg_guests is 93 % full in the demo and stays so: critical.
[[threshold]]
pool = "*"
warning = "80%"
critical = "90%"
time_to_full_warning = "24h"
forecast_window = "1m"
"""


@pytest.fixture(scope="session")
def promtool() -> Path:
    return find_tool("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> Path:
    return find_tool("prometheus")


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def demo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PoolwatchProcess]:
    """``poolwatch demo`` on 127.0.0.1, once it exports every demo pool."""
    config = tmp_path_factory.mktemp("demo") / "poolwatch.toml"
    config.write_text(DEMO_CONFIG)
    process = PoolwatchProcess(
        "demo", "--config.file", str(config), "--web.listen-address", "127.0.0.1:0"
    ).start()
    try:

        async def all_pools() -> bool:
            states = series(await scrape(process.url), "libvirt_storage_pool_state")
            return {s["storage_pool"] for s in states} >= DEMO_POOLS

        await eventually(all_pools, within=DEMO_READY_WITHIN, interval=0.1)
        yield process
    finally:
        code = process.stop()
        assert code == 0, f"poolwatch demo exited with {code}: {process.logs[-5:]}"
