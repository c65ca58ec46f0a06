"""The example Alertmanager configuration passes amtool, routes every poolwatch alert to its
receiver, and its inhibit rules name alerts and labels that poolwatch's rules have.

What the route and inhibit rules do to real alerts is shown by test_alert_chain.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.alertmanager_server import find_amtool
from tests.e2e.conftest import ALERTMANAGER_CONFIG, RULES
from tests.e2e.promql import read_rules
from tests.e2e.shipped_config import POOLWATCH_RECEIVER

AMTOOL_TIMEOUT = 60.0  # seconds; each run takes well under one


@pytest.fixture(scope="module")
def amtool() -> Path:
    return find_amtool()


def amtool_run(amtool: Path, *args: str) -> str:
    """Run amtool; fail with its output unless it exits 0. Returns stdout."""
    result = subprocess.run(
        [str(amtool), *args],
        capture_output=True,
        text=True,
        timeout=AMTOOL_TIMEOUT,
        check=False,
    )
    command = " ".join(args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"amtool {command} exited {result.returncode}:\n{output}"
    return result.stdout


def alert_labels() -> dict[str, str]:
    """alertname -> severity of every alert in poolwatch.rules.yml."""
    text = RULES.read_text()
    found = re.findall(r"^\s+- alert: (\w+)\n(?:\s+(?!- ).*\n)*?\s+severity: (\w+)$", text, re.M)
    return dict(found)


def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    return loaded


def test_example_config_passes_amtool_check(amtool: Path) -> None:
    output = amtool_run(amtool, "check-config", str(ALERTMANAGER_CONFIG))
    assert "SUCCESS" in output, output
    assert " - 2 inhibit rules" in output, output


def test_every_poolwatch_alert_reaches_the_poolwatch_receiver(amtool: Path) -> None:
    alerts = alert_labels()
    assert set(alerts) == set(read_rules(RULES).alerts), alerts  # each one found its severity
    for alertname, severity in alerts.items():
        labels = [f"alertname={alertname}", f"severity={severity}", "host=kvm01"]
        labels += ["storage_pool=images"]
        receiver = amtool_run(
            amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels
        )
        assert receiver.split() == [POOLWATCH_RECEIVER], (alertname, receiver)
    # Other alerts keep going where they went: the default receiver.
    other = amtool_run(
        amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", "job=node"
    )
    assert other.split() == ["default"], other


def test_inhibit_rules_name_poolwatchs_alerts_and_labels() -> None:
    alerts = alert_labels()
    severities = set(alerts.values())
    for rule in config()["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            parsed = re.fullmatch(r'(\w+)(=~|!~|!=|=)"(.*)"', matcher)
            assert parsed, matcher
            label, op, value = parsed.groups()
            if label == "alertname" and op == "=":
                assert value in alerts, matcher
            elif label == "alertname":
                assert any(re.fullmatch(value, name) for name in alerts), matcher
            elif label == "severity":
                assert value in severities, matcher
            else:
                assert label in {"host", "storage_pool"}, matcher
        assert set(rule["equal"]) <= {"host", "storage_pool"}, rule
