"""The Prometheus rules and example configuration pass promtool, and every alert is tested."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.e2e.conftest import (
    EXAMPLE_CONFIG,
    EXAMPLE_TARGETS,
    FEDERATION_CONFIG,
    RULE_TESTS,
    RULES,
)
from tests.e2e.promql import read_rules

PROMTOOL_TIMEOUT = 60.0  # seconds; each run takes well under one
# Alerts about the daemon or its libvirt connection: their series have no storage_pool, so
# their annotations name the host or the poolwatch instance. Every other alert is about a pool
# and names host and pool.
DAEMON_ALERTS = frozenset(
    {
        "PoolwatchLibvirtDown",
        "PoolwatchStaleData",
        "PoolwatchDown",
        "PoolwatchConfigReloadFailed",
        "PoolwatchWebConfigReloadFailed",
    }
)


def promtool_run(promtool: Path, *args: str, cwd: Path = RULES.parent) -> str:
    """Run promtool; fail with its output unless it exits 0. Returns stdout and stderr."""
    result = subprocess.run(
        [str(promtool), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=PROMTOOL_TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    command = " ".join(args)
    assert result.returncode == 0, f"promtool {command} exited {result.returncode}:\n{output}"
    return output


def test_rules_pass_promtool_check(promtool: Path) -> None:
    output = promtool_run(promtool, "check", "rules", RULES.name)
    rules = read_rules(RULES)
    # Also proves that read_rules (used for the metric name check) sees every rule.
    assert f"SUCCESS: {len(rules.records) + len(rules.alerts)} rules found" in output, output
    assert len(rules.expressions) == len(rules.records) + len(rules.alerts)


def test_rule_unit_tests_pass(promtool: Path) -> None:
    output = promtool_run(promtool, "test", "rules", RULE_TESTS.name)
    assert "SUCCESS" in output, output


def test_every_alert_has_a_firing_and_a_quiet_test_case() -> None:
    cases = _alert_test_cases(RULE_TESTS.read_text())
    for alert in read_rules(RULES).alerts:
        kinds = cases.get(alert, set())
        assert "firing" in kinds, f"{alert}: no test case where it fires"
        assert "quiet" in kinds, f"{alert}: no test case where it does not fire"


def test_every_recording_rule_is_tested() -> None:
    tested = set(re.findall(r"^\s*- expr:\s*([\w:]+)", RULE_TESTS.read_text(), re.MULTILINE))
    untested = set(read_rules(RULES).records) - tested
    assert not untested, f"recording rules without a promql_expr_test: {sorted(untested)}"


def test_every_alert_has_for_severity_and_annotations() -> None:
    for alert, block in _alert_blocks(RULES.read_text()).items():
        assert re.search(r"^\s+for: \d+[smh]$", block, re.MULTILINE), f"{alert}: no `for`"
        assert re.search(r"^\s+severity: (warning|critical)$", block, re.MULTILINE), alert
        for annotation in ("summary", "description"):
            text = _annotation(block, annotation)
            if alert not in DAEMON_ALERTS:
                assert "$labels.storage_pool" in text, f"{alert} {annotation}: {text}"
                assert "$labels.host" in text, f"{alert} {annotation}: {text}"
            else:
                assert "$labels.host" in text or "$labels.instance" in text, (alert, text)


def test_example_prometheus_config_passes_promtool_check(promtool: Path) -> None:
    output = promtool_run(promtool, "check", "config", EXAMPLE_CONFIG.name)
    assert "SUCCESS" in output, output


def test_example_federation_config_passes_promtool_check(promtool: Path) -> None:
    output = promtool_run(promtool, "check", "config", FEDERATION_CONFIG.name)
    assert "SUCCESS" in output, output


def test_example_targets_file_is_valid_file_sd() -> None:
    groups = json.loads(EXAMPLE_TARGETS.read_text())
    assert groups
    for group in groups:
        assert all(re.fullmatch(r"[\w.-]+:9479", target) for target in group["targets"]), group
        # A target label `host` would clash with poolwatch's own `host` label.
        assert "host" not in group.get("labels", {}), group


def _alert_test_cases(text: str) -> dict[str, set[str]]:
    """alertname -> {"firing", "quiet"}: which kinds of alert_rule_test cases it has."""
    cases: dict[str, set[str]] = {}
    for match in re.finditer(
        r"^\s+alertname:\s*(\w+)\s*\n\s+exp_alerts:(?P<rest>.*)$", text, re.MULTILINE
    ):
        kind = "quiet" if match["rest"].strip() == "[]" else "firing"
        cases.setdefault(match[1], set()).add(kind)
    return cases


def _alert_blocks(text: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    parts = re.split(r"^\s+- (?=alert:|record:|name:)", text, flags=re.MULTILINE)
    for part in parts:
        match = re.match(r"alert:\s*(\w+)", part)
        if match:
            blocks[match[1]] = part
    return blocks


def _annotation(block: str, name: str) -> str:
    annotations = block.split("annotations:", 1)[1]
    match = re.search(rf"^(\s+){name}:(?P<value>.*(?:\n\1\s+.*)*)", annotations, re.MULTILINE)
    assert match, f"no {name} annotation in:\n{block}"
    return match["value"]
