"""The policy sections: rules and hooks as the policies see them, and checks across rules."""

from __future__ import annotations

import pytest

from poolwatch.config import Config, Hysteresis, ThresholdConfig, parse_config
from poolwatch.errors import ConfigError
from poolwatch.policies.rules import (
    AutostartMode,
    AutostartRule,
    ExecHook,
    FreeBelow,
    Selector,
    ThresholdRule,
    UsedRatio,
    WebhookHook,
    first_match,
)
from tests.unit.config.support import POLICIES, GiB, error_of, errors_of

# --- policies: rules and hooks ----------------------------------------------------------------


def test_policies_become_rule_objects() -> None:
    config = parse_config(POLICIES, source="test.toml")

    assert config.autostart_rules() == (
        AutostartRule(
            selector=Selector(pool="nfs-*", type="netfs"),
            mode=AutostartMode.ENFORCE,
            ensure_flag=True,
            require_mount=False,
            max_attempts=0,
            backoff_initial=30.0,
            backoff_max=3600.0,
            hooks=("pager",),
        ),
        AutostartRule(
            selector=Selector(pool="*", type=None),
            mode=AutostartMode.BOOT,
            ensure_flag=False,
            require_mount=False,
            max_attempts=10,
            backoff_initial=10.0,
            backoff_max=600.0,
            hooks=(),
        ),
    )
    assert config.threshold_rules() == (
        ThresholdRule(
            selector=Selector(pool="*", type="dir"),
            warning=UsedRatio(0.85),
            critical=UsedRatio(0.95),
            clear_ratio=0.02,  # the default for ratio limits
            clear_bytes=0,
            hold=300.0,
            time_to_full_warning=None,
            time_to_full_critical=None,
            forecast_window=6 * 3600.0,
            hooks=("pager", "ops-webhook"),
        ),
        ThresholdRule(
            selector=Selector(pool="*", type=None),
            warning=FreeBelow(20 * GiB),
            critical=FreeBelow(5 * GiB),
            clear_ratio=0.0,
            clear_bytes=5 * GiB,
            hold=0.0,
            time_to_full_warning=86400.0,
            time_to_full_critical=7200.0,
            forecast_window=12 * 3600.0,
            hooks=(),
        ),
    )
    assert config.hook_definitions() == {
        "pager": ExecHook(
            name="pager", argv=("/usr/local/bin/page-oncall", "--severity", "high"), timeout=60.0
        ),
        "ops-webhook": WebhookHook(
            name="ops-webhook",
            url="https://alerts.example.com/poolwatch",
            timeout=5.0,
            retries=0,
            headers=(("Authorization", "Bearer abc"), ("X-Team", "storage")),
        ),
    }


def test_no_policy_sections_mean_no_rules() -> None:
    config = Config()

    assert config.autostart_rules() == ()
    assert config.threshold_rules() == ()
    assert config.hook_definitions() == {}


@pytest.mark.parametrize(
    ("limits", "clear_ratio", "clear_bytes"),
    [
        ('warning = "85%"', 0.02, 0),
        ('critical = "95%"', 0.02, 0),
        ('warning = "< 20GiB"', 0.0, GiB),
        ('critical = "< 20GiB"', 0.0, GiB),
        ('warning = "80%"\nclear = "5%"', 0.05, 0),
        ('critical = "< 10GiB"\nclear = "512MiB"', 0.0, 512 * 2**20),
        ('time_to_full_warning = "1d"', 0.0, 0),  # no space limit: nothing to clear
        # One limit of each kind: clear sets the margin of its own kind, the other keeps its
        # default.
        ('warning = "85%"\ncritical = "< 20GiB"', 0.02, GiB),
        ('warning = "85%"\ncritical = "< 20GiB"\nclear = "5%"', 0.05, GiB),
        ('warning = "< 50GiB"\ncritical = "95%"\nclear = "2GiB"', 0.02, 2 * GiB),
    ],
)
def test_clear_defaults_to_the_kind_of_the_limits(
    limits: str, clear_ratio: float, clear_bytes: int
) -> None:
    (rule,) = parse_config(f"[[threshold]]\n{limits}", source="t").threshold_rules()

    assert rule.clear_ratio == pytest.approx(clear_ratio)
    assert rule.clear_bytes == clear_bytes


def test_hook_timeouts_default_by_kind() -> None:
    hooks = parse_config(
        '[hooks.a]\nexec = ["page-oncall"]\n[hooks.b]\nwebhook = "http://127.0.0.1:8080/x"',
        source="t",
    ).hook_definitions()

    assert hooks == {
        "a": ExecHook(name="a", argv=("page-oncall",), timeout=30.0),
        "b": WebhookHook(
            name="b", url="http://127.0.0.1:8080/x", timeout=10.0, retries=3, headers=()
        ),
    }


def test_rules_keep_file_order_so_the_first_match_wins() -> None:
    config = parse_config(
        """
        [[threshold]]
        pool = "db-*"
        warning = "70%"
        [[threshold]]
        pool = "*"
        type = "netfs"
        warning = "< 100GiB"
        [[threshold]]
        warning = "90%"
        [[autostart]]
        pool = "scratch-*"
        mode = "off"
        [[autostart]]
        mode = "enforce"
        """,
        source="t",
    )
    thresholds = config.threshold_rules()
    autostart = config.autostart_rules()

    assert [rule.selector.pool for rule in thresholds] == ["db-*", "*", "*"]
    assert first_match(thresholds, "db-nfs", "netfs") is thresholds[0]
    assert first_match(thresholds, "media", "netfs") is thresholds[1]
    assert first_match(thresholds, "media", "dir") is thresholds[2]
    assert first_match(autostart, "scratch-1", "dir") is autostart[0]
    assert first_match(autostart, "images", "dir") is autostart[1]


def test_selectors_are_case_sensitive_globs() -> None:
    (rule,) = parse_config('[[autostart]]\npool = "NFS-*"', source="t").autostart_rules()

    assert rule.selector.matches("NFS-1", "netfs")
    assert not rule.selector.matches("nfs-1", "netfs")


def test_config_with_policies_is_hashable_and_survives_overrides() -> None:
    config = parse_config(POLICIES, source="t")

    assert hash(config) == hash(parse_config(POLICIES, source="t"))
    overridden = config.with_overrides(log_level="debug", libvirt_uri="test:///default")
    assert overridden.threshold_rules() == config.threshold_rules()
    assert overridden.autostart_rules() == config.autostart_rules()
    assert overridden.hook_definitions() == config.hook_definitions()
    with pytest.raises(TypeError):
        config.hooks["pager"] = config.hooks["pager"]  # type: ignore[index]


def test_webhook_headers_stay_out_of_repr() -> None:
    config = parse_config(POLICIES, source="t")

    assert "Bearer abc" not in repr(config)
    assert "Bearer abc" not in str(config)


def test_python_callers_pass_rule_values() -> None:
    threshold = ThresholdConfig.model_validate(
        {"warning": UsedRatio(0.8), "critical": "90%", "clear": Hysteresis(ratio=0.05)}
    )

    assert (threshold.warning, threshold.critical) == (UsedRatio(0.8), UsedRatio(0.9))
    assert threshold.to_rule().clear_ratio == 0.05
    with pytest.raises(ConfigError, match="must be a quoted string"):
        parse_config("[[threshold]]\nwarning = 0.8", source="t")


def test_policy_limits_dump_as_written() -> None:
    dumped = parse_config(POLICIES, source="t").model_dump(by_alias=True)

    assert dumped["thresholds"][1]["warning"] == "< 20GiB"
    assert dumped["thresholds"][1]["clear"] == "5GiB"
    assert dumped["thresholds"][0]["critical"] == "95%"
    assert dumped["hooks"]["ops-webhook"]["headers"] == {
        "Authorization": "Bearer abc",
        "X-Team": "storage",
    }


# --- policies: checks across rules and hooks --------------------------------------------------


@pytest.mark.parametrize("table", ["autostart", "threshold"])
def test_single_bracket_rule_table_is_explained(table: str) -> None:
    assert error_of(f'[{table}]\npool = "*"') == (
        f"{table}: must be an array of tables: write [[{table}]], not [{table}]"
    )


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[[autostart]]\nbogus = 1", "autostart[0].bogus: unknown key"),
        ('[[threshold]]\nwarning = "85%"\nhold = "5m"', "threshold[0].hold: unknown key"),
        ('[[threshold]]\nwarning = "85%"\nwarn = "80%"', "threshold[0].warn: unknown key"),
        ('[hooks.pager]\nexec = ["/bin/true"]\ncommand = "x"', "hooks.pager.command: unknown key"),
    ],
)
def test_unknown_keys_in_policy_sections(toml: str, expected: str) -> None:
    assert error_of(toml) == expected


@pytest.mark.parametrize("setting", ['type = "dir"', 'type = "d*"', 'type = "*"', ""])
def test_require_mount_with_a_type_that_can_be_dir(setting: str) -> None:
    (rule,) = parse_config(
        f"[[autostart]]\n{setting}\nrequire_mount = true", source="t"
    ).autostart_rules()

    assert rule.require_mount


def test_unknown_hook_names_list_the_defined_ones() -> None:
    errors = errors_of(
        """
        [[autostart]]
        hooks = ["pager"]
        [[threshold]]
        warning = "85%"
        hooks = ["pager", "x"]
        [hooks.pager]
        exec = ["/bin/page"]
        [hooks.ops]
        webhook = "https://example.com/"
        """
    )

    assert errors == ['threshold[0].hooks[1]: unknown hook "x" (defined: ops, pager)']


def test_unknown_hook_names_without_hooks() -> None:
    assert error_of('[[autostart]]\nhooks = ["pager"]') == (
        'autostart[0].hooks[0]: unknown hook "pager" (defined: none)'
    )


def test_a_hook_named_twice_in_one_rule() -> None:
    assert error_of(
        '[[autostart]]\nhooks = ["pager", "pager"]\n[hooks.pager]\nexec = ["/bin/page"]'
    ) == ('autostart[0].hooks[1]: duplicate hook "pager" (see hooks[0])')


def test_every_policy_error_is_reported_at_once() -> None:
    errors = errors_of(
        """
        bogus = 1
        [[autostart]]
        mode = "sometimes"
        backoff = "1h"
        backoff_max = "10m"
        hooks = ["nope"]
        [[threshold]]
        warning = "85%"
        critical = "80%"
        clear = "90%"
        [[threshold]]
        warning = "20GiB"
        forecast_window = "0s"
        hooks = ["pager", "x"]
        [hooks.pager]
        exec = ["bin/page"]
        [hooks.ops]
        webhook = "ftp://x"
        """
    )

    assert [error.split(": ")[0] for error in errors] == [
        "autostart[0].mode",
        "autostart[0].backoff_max",
        "threshold[0].critical",
        "threshold[0].clear",
        "threshold[1].warning",
        "threshold[1].forecast_window",
        "hooks.pager.exec[0]",
        "hooks.ops.webhook",
        "bogus",
        "autostart[0].hooks[0]",
        "threshold[1].hooks[1]",
    ]
    # Messages of every kind survive being collected with the unknown hook names.
    assert errors[0] == 'autostart[0].mode: must be "off", "boot" or "enforce" (got "sometimes")'
    assert errors[8] == "bogus: unknown key"
    assert errors[-1] == 'threshold[1].hooks[1]: unknown hook "x" (defined: ops, pager)'
