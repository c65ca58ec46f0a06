"""The shipped Prometheus, federation and Alertmanager configurations, as the e2e tier runs them.

Each is read from config/ and changed only where a test cannot wait for the real value: every
interval, ``for`` and group timer shortened to about a second, and addresses pointed at the
loopback servers the test started. Everything else (job names, file_sd, the rules, routes,
grouping, inhibit rules, match[] selectors) stays as an operator gets it. A key that a rewrite
expects and no longer finds fails the test, so the shipped files cannot drift away from what
is tested.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import ALERTMANAGER_CONFIG, EXAMPLE_CONFIG, FEDERATION_CONFIG, RULES

INTERVAL = "1s"  # scrape, rule evaluation, alert `for` and Alertmanager group timers
# The receiver of poolwatch's alerts in alertmanager.yml, and the alerts' route to it.
POOLWATCH_RECEIVER = "poolwatch-storage"

_FOR = re.compile(r"^(?P<key>\s+for: )\d+[smh]$", re.MULTILINE)


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def fast_rules() -> str:
    """poolwatch.rules.yml with every alert's ``for`` shortened to :data:`INTERVAL`."""
    text, count = _FOR.subn(rf"\g<key>{INTERVAL}", RULES.read_text())
    assert count > 0, f"no `for:` in {RULES}"
    return text


def prometheus_config(alertmanager: str | None = None) -> dict[str, Any]:
    """prometheus.yml with 1 s intervals, and alerts sent to ``alertmanager`` (host:port) or,
    without one, to none. Its relative paths (the rules file, targets/poolwatch*.json) resolve
    against the directory the server runs in: write :func:`fast_rules` and the targets there."""
    config = _load(EXAMPLE_CONFIG)
    config["global"]["scrape_interval"] = INTERVAL
    config["global"]["evaluation_interval"] = INTERVAL
    [job] = config["scrape_configs"]
    assert job["job_name"] == "poolwatch", job
    job["scrape_interval"] = INTERVAL
    job["scrape_timeout"] = INTERVAL
    [file_sd] = job["file_sd_configs"]
    file_sd["refresh_interval"] = INTERVAL
    assert config["rule_files"] == [RULES.name], config["rule_files"]
    [managers] = config["alerting"]["alertmanagers"]
    if alertmanager is None:
        del config["alerting"]
    else:
        managers["static_configs"] = [{"targets": [alertmanager]}]
    return config


def federation_config(sites: list[str]) -> dict[str, Any]:
    """federation.yml with 1 s intervals, pulling from the site Prometheus servers ``sites``
    (host:port each)."""
    config = _load(FEDERATION_CONFIG)
    config["global"]["scrape_interval"] = INTERVAL
    config["global"]["evaluation_interval"] = INTERVAL
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/federate", job
    job["scrape_interval"] = INTERVAL
    job["scrape_timeout"] = INTERVAL
    job["static_configs"] = [{"targets": sites}]
    return config


def alertmanager_config(webhook_url: str) -> str:
    """alertmanager.yml with 1 s group timers on poolwatch's route, and its webhook receiver
    pointed at ``webhook_url``."""
    config = _load(ALERTMANAGER_CONFIG)
    [route] = [r for r in config["route"]["routes"] if r["receiver"] == POOLWATCH_RECEIVER]
    for timer in ("group_wait", "group_interval"):
        assert timer in route, f"{timer} missing from the route to {POOLWATCH_RECEIVER}"
        route[timer] = INTERVAL
    [receiver] = [r for r in config["receivers"] if r["name"] == POOLWATCH_RECEIVER]
    [webhook] = receiver["webhook_configs"]
    assert webhook["send_resolved"] is True, webhook
    webhook["url"] = webhook_url
    return yaml.safe_dump(config, sort_keys=False)
