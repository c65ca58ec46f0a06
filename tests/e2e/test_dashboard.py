"""The Grafana dashboard is importable as is and its queries follow the host and pool variables.

(That it names only metrics poolwatch exports is test_metric_names.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from tests.e2e.conftest import DASHBOARD
from tests.e2e.promql import dashboard_queries

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Selectors: a metric name and its label matchers.
_SELECTOR = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}")
# Daemon-wide series: no host label, so they are filtered by a join on the host's daemon.
_DAEMON_WIDE = re.compile(r"poolwatch_(?:config_\w+|build_info)")


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in data["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def test_dashboard_has_the_datasource_host_and_pool_variables() -> None:
    data = _dashboard()
    assert 36 <= data["schemaVersion"] <= 41
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    host, pool = variables["host"], variables["storage_pool"]
    for variable in (host, pool):
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert variable["multi"] is True
        assert variable["includeAll"] is True
    assert host["query"]["query"] == "label_values(libvirt_storage_pool_state, host)"
    assert pool["query"]["query"] == (
        'label_values(libvirt_storage_pool_state{host=~"$host"}, storage_pool)'
    )


def test_every_panel_queries_the_datasource_variable() -> None:
    for panel in _panels(_dashboard()):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    ids = set()
    for panel in _panels(_dashboard()):
        assert panel["id"] not in ids, panel["title"]
        ids.add(panel["id"])
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_queries_follow_the_host_and_pool_variables() -> None:
    exprs = [t["expr"] for p in _panels(_dashboard()) for t in p.get("targets", [])]
    assert exprs
    for expr in exprs:
        for name, matchers in _SELECTOR.findall(expr):
            if _DAEMON_WIDE.fullmatch(name):
                continue
            assert 'host=~"$host"' in matchers, f"{name} is not filtered by $host in {expr}"
            if name.startswith(("libvirt_storage_", "poolwatch_pool_", "poolwatch_autostart_")) or (
                name == "poolwatch_actions_total"
            ):
                assert 'storage_pool=~"$storage_pool"' in matchers, (
                    f"{name} is not filtered by $storage_pool in {expr}"
                )
        if _DAEMON_WIDE.search(expr):
            assert 'on (job, instance) poolwatch_libvirt_up{host=~"$host"}' in expr, expr


def test_dashboard_covers_what_operators_look_at() -> None:
    queries = "\n".join(dashboard_queries(DASHBOARD))
    for needle in (
        "libvirt_storage_pool_allocation_bytes",  # fill level
        "libvirt_storage_pool_filesystem_avail_bytes",  # free: the smaller view
        "poolwatch_pool_time_to_full_seconds",  # forecast
        "predict_linear(",
        "libvirt_storage_pool_volumes_capacity_bytes",  # thin overcommit
        "libvirt_storage_pool_events_total",
        "libvirt_storage_pool_autostart",
        "poolwatch_pool_threshold_level",
        "poolwatch_autostart_gave_up",
        "poolwatch_pool_not_mounted",
        "poolwatch_actions_total",
        "poolwatch_libvirt_up",
        "histogram_quantile(0.99",
        "poolwatch_poll_errors_total",
        "poolwatch_last_poll_success_timestamp_seconds",
        "poolwatch_config_last_reload_successful",
    ):
        assert needle in queries, needle
