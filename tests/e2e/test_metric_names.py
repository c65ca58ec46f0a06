"""What poolwatch serves passes ``promtool check metrics``, and the dashboard and the rules ask
only for metrics that poolwatch exports.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import DASHBOARD, RULE_TESTS, RULES
from tests.e2e.promql import (
    PromQLError,
    dashboard_queries,
    metric_names,
    read_rules,
    series_selectors,
)
from tests.helpers import REPO, PoolwatchProcess, eventually, scrape

PROMTOOL_TIMEOUT = 30.0  # seconds
EXPORTED_WITHIN = 30.0  # seconds for the demo to show every metric that is not conditional

# Series that Prometheus itself makes.
PROMETHEUS_NAMES = frozenset({"up"})

# Metrics that poolwatch exports only under conditions the demo cannot meet. Each must still be
# a name that poolwatch's exporter defines (checked below), so a typo cannot hide here.
CONDITIONAL = {
    # statvfs of a pool's target, only where poolwatch can stat it (local dir, fs and netfs
    # pools); the test driver's pools have no real target.
    "libvirt_storage_pool_filesystem_avail_bytes": "local pool targets only",
    # Only while a pool under a threshold rule is growing; the demo's pools fill and drain at
    # random, so at a given moment none may be growing.
    "poolwatch_pool_time_to_full_seconds": "growing pools only",
    # Only with a web config file (TLS, basic auth); the demo serves plain HTTP.
    "poolwatch_web_config_last_reload_successful": "with a web config file only",
    # Per guest with a disk in a pool, and per I/O error QEMU reported: the demo host defines
    # no guests (tests/embedded/test_guests_on_test_driver.py and
    # tests/integration/test_guests.py show them).
    "poolwatch_pool_guest_info": "guests only",
    "poolwatch_guest_io_errors_total": "guest I/O errors only",
}

EXPORTER_SOURCES = sorted((REPO / "daemon" / "poolwatch" / "exporter").glob("*.py"))


async def test_metrics_pass_promtool_check_metrics(demo: PoolwatchProcess, promtool: Path) -> None:
    text = await scrape(demo.url)  # the text format (0.0.4): what promtool check metrics reads
    result = await asyncio.to_thread(
        subprocess.run,
        [str(promtool), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT,
        check=False,
    )
    findings = (result.stdout + result.stderr).strip()
    report = f"promtool check metrics exited {result.returncode} on poolwatch's /metrics:\n"
    assert result.returncode == 0, report + findings
    assert not findings, report + findings


async def test_dashboard_and_rules_use_only_exported_metrics(demo: PoolwatchProcess) -> None:
    used = _used_names()
    wanted = set(used) - set(CONDITIONAL) - PROMETHEUS_NAMES
    exported: set[str] = set()

    async def all_exported() -> bool:
        exported.clear()
        exported.update(_sample_names(await scrape(demo.url)))
        return wanted <= exported

    try:
        await eventually(all_exported, within=EXPORTED_WITHIN, interval=0.5)
    except AssertionError:
        missing = {name: used[name] for name in sorted(wanted - exported)}
        raise AssertionError(
            f"used but not exported by poolwatch demo after {EXPORTED_WITHIN}s: {missing}"
        ) from None


def test_conditional_metrics_are_defined_by_the_exporter() -> None:
    source = "\n".join(path.read_text() for path in EXPORTER_SOURCES)
    for name in CONDITIONAL:
        family = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert f'"{family}"' in source, f"{name} is not a metric poolwatch's exporter defines"


def test_name_extraction_sees_through_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (host, le) (rate(a_bucket{host=~"$host"}'
        "[$__rate_interval]))) > on (job) group_left (x) b:c:sum"
        ' or label_replace(d{k="v"}, "dst", "$1", "src", "(.*)") unless e offset 5m'
        " and 1e9 * f[6h:1m] == bool inf"
    )
    assert metric_names(expr) == {"a_bucket", "b:c:sum", "d", "e", "f"}
    with pytest.raises(PromQLError):
        metric_names("rat(x[5m])")


def _used_names() -> dict[str, list[str]]:
    """Metric name -> where it is used (dashboard, rules, rule tests)."""
    used: dict[str, list[str]] = {}
    rules = read_rules(RULES)
    recorded = set(rules.records)
    # The dashboard must work without the rules, so recording rules count as unknown there.
    sources = [
        (DASHBOARD.name, dashboard_queries(DASHBOARD), set()),
        (RULES.name, rules.expressions, recorded),
        (RULE_TESTS.name, series_selectors(RULE_TESTS), set()),
    ]
    for where, exprs, defined in sources:
        assert exprs, f"no queries found in {where}"
        for expr in exprs:
            for name in metric_names(expr) - defined:
                used.setdefault(name, []).append(where)
    return {name: sorted(set(places)) for name, places in used.items()}


def _sample_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}
