"""The config's tables: defaults, the shipped example, connections, durations and listen
addresses as keys, read-only "auto"."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel, ValidationError

from poolwatch.addresses import parse_listen_address
from poolwatch.config import (
    AutostartConfig,
    Config,
    ConnectionConfig,
    HookConfig,
    PollConfig,
    ThresholdConfig,
    load_config,
    parse_config,
)
from poolwatch.policies.rules import (
    AutostartMode,
    AutostartRule,
    ExecHook,
    FreeBelow,
    Selector,
    ThresholdRule,
    UsedRatio,
    WebhookHook,
)
from tests.unit.config.support import (
    DURATION_HINT,
    EXAMPLE,
    GiB,
    commented_examples,
    error_of,
    errors_of,
)

# --- defaults and the shipped example ---------------------------------------------------------


def test_empty_file_gives_defaults() -> None:
    config = parse_config("", source="test.toml")

    assert config == Config()
    assert config.connections == (ConnectionConfig(name=None, uri="qemu:///system"),)
    assert config.connections[0].read_only == "auto"
    assert config.poll == PollConfig(
        interval=15.0,
        volumes_interval=60.0,
        refresh_interval=300.0,
        call_timeout=10.0,
        max_volumes_per_pool=1000,
    )
    assert config.web.listen == (":9479",)
    assert (config.log.level, config.log.format) == ("info", "auto")


def test_shipped_example_validates_and_equals_the_defaults() -> None:
    assert load_config(EXAMPLE) == Config()


def test_shipped_example_documents_a_second_connection() -> None:
    lines = EXAMPLE.read_text().splitlines()
    block = []
    for line in lines[lines.index("# [[connection]]") :]:
        if not line.startswith("#"):
            break
        block.append(line.removeprefix("#").removeprefix(" "))

    config = parse_config("\n".join(block), source="example")

    assert config.connections == (
        ConnectionConfig(name="kvm02", uri="qemu+ssh://root@kvm02/system"),
    )


def test_shipped_example_documents_working_policies() -> None:
    config = parse_config(commented_examples(EXAMPLE.read_text()), source="examples")

    assert config.autostart_rules() == (
        AutostartRule(
            selector=Selector("scratch-*"),
            mode=AutostartMode.OFF,
            ensure_flag=False,
            require_mount=False,
            max_attempts=10,
            backoff_initial=10.0,
            backoff_max=600.0,
            hooks=(),
        ),
        AutostartRule(
            selector=Selector("*", "netfs"),
            mode=AutostartMode.ENFORCE,
            ensure_flag=False,
            require_mount=False,
            max_attempts=0,
            backoff_initial=10.0,
            backoff_max=600.0,
            hooks=("pager",),
        ),
        AutostartRule(
            selector=Selector("backup", "dir"),
            mode=AutostartMode.BOOT,
            ensure_flag=True,
            require_mount=True,
            max_attempts=10,
            backoff_initial=10.0,
            backoff_max=600.0,
            hooks=("pager",),
        ),
    )
    assert config.threshold_rules() == (
        ThresholdRule(
            selector=Selector("*", "netfs"),
            warning=FreeBelow(200 * GiB),
            critical=FreeBelow(50 * GiB),
            clear_ratio=0.0,
            clear_bytes=10 * GiB,
            hold=300.0,
            time_to_full_warning=86400.0,
            time_to_full_critical=7200.0,
            forecast_window=21600.0,
            hooks=("pager", "ops-webhook"),
        ),
        ThresholdRule(
            selector=Selector("*"),
            warning=UsedRatio(0.85),
            # Free space as the last line of defence: a ratio critical at 95 % would not fire
            # before guests pause on an ext4 that reserves 5 % for root.
            critical=FreeBelow(20 * GiB),
            clear_ratio=0.02,
            clear_bytes=GiB,
            hold=300.0,
            time_to_full_warning=None,
            time_to_full_critical=None,
            forecast_window=21600.0,
            hooks=("ops-webhook",),
        ),
    )
    assert config.hook_definitions() == {
        "pager": ExecHook("pager", ("/usr/local/bin/page-oncall", "--severity", "high"), 30.0),
        "ops-webhook": WebhookHook(
            "ops-webhook",
            "https://alerts.example.com/poolwatch",
            timeout=10.0,
            retries=3,
            headers=(("Authorization", "Bearer REPLACE-WITH-TOKEN"),),
        ),
    }


@pytest.mark.parametrize(
    ("model", "table"),
    [
        (AutostartConfig, "[[autostart]]"),
        (ThresholdConfig, "[[threshold]]"),
        (HookConfig, "[hooks."),
    ],
)
def test_shipped_example_shows_every_policy_key(model: type[BaseModel], table: str) -> None:
    text = EXAMPLE.read_text()
    examples = commented_examples(text)
    keys = {field.alias or name for name, field in model.model_fields.items()}

    assert table in examples
    for key in keys:
        assert f"\n{key} = " in examples, f"no example sets {key}"
        # Documented in the key list above the example: "#   key   what it does".
        assert re.search(rf"^#   (\w+, )*{key}(,|\s|$)", text, re.MULTILINE), f"{key} undocumented"


def test_full_file_is_read() -> None:
    config = parse_config(
        """
        [[connection]]
        name = "kvm01"
        uri = "qemu:///system"
        read_only = true

        [[connection]]
        uri = "qemu+ssh://root@kvm02/system"

        [poll]
        interval = "750ms"
        volumes_interval = "1h30m"
        refresh_interval = "0s"
        call_timeout = "1d"
        max_volumes_per_pool = 0

        [web]
        listen = ["127.0.0.1:9479", "[::1]:9479"]

        [log]
        level = "debug"
        format = "json"
        """,
        source="test.toml",
    )

    # Without a name the key is the URI without its user and password: it appears in logs.
    assert [c.key for c in config.connections] == ["kvm01", "qemu+ssh://kvm02/system"]
    assert config.connections[0].read_only is True
    assert config.poll == PollConfig(
        interval=0.75,
        volumes_interval=5400.0,
        refresh_interval=0.0,
        call_timeout=86400.0,
        max_volumes_per_pool=0,
    )
    assert config.web.listen == ("127.0.0.1:9479", "[::1]:9479")
    assert (config.log.level, config.log.format) == ("debug", "json")


def test_config_is_frozen_and_hashable() -> None:
    config = Config()

    with pytest.raises(ValidationError, match="frozen"):
        config.poll = PollConfig()
    assert hash(config) == hash(Config())


# --- connections ------------------------------------------------------------------------------


def test_connection_key_is_name_else_uri() -> None:
    assert ConnectionConfig(name="kvm01", uri="qemu:///system").key == "kvm01"
    assert ConnectionConfig(uri="qemu:///system").key == "qemu:///system"


def test_empty_connection_list_is_allowed() -> None:
    assert parse_config("connection = []", source="test.toml").connections == ()


def test_duplicate_connection_names_are_reported_at_each_duplicate() -> None:
    errors = errors_of(
        """
        [[connection]]
        name = "kvm01"
        [[connection]]
        name = "kvm01"
        uri = "qemu+ssh://kvm01/system"
        [[connection]]
        uri = "test:///default"
        [[connection]]
        uri = "test:///default"
        """
    )

    assert errors == [
        'connection[1].name: duplicate connection name "kvm01" (see connection[0])',
        'connection[3].uri: duplicate uri "test:///default" (see connection[2]); '
        "give connections to the same URI distinct names",
    ]


def test_same_uri_with_distinct_names_is_allowed() -> None:
    config = parse_config(
        '[[connection]]\nname = "a"\n[[connection]]\nname = "b"', source="test.toml"
    )

    assert [c.key for c in config.connections] == ["a", "b"]


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('name = ""', "connection[0].name: must not be empty"),
        (
            'uri = "kvm01"',
            'connection[0].uri: invalid libvirt URI "kvm01" '
            '(use e.g. "qemu:///system", "qemu+ssh://root@kvm02/system")',
        ),
        ('read_only = "yes"', 'connection[0].read_only: must be "auto", true or false (got "yes")'),
        ("name = 1", "connection[0].name: must be a string (got 1)"),
    ],
)
def test_bad_connection_entries(toml: str, expected: str) -> None:
    assert error_of(f"[[connection]]\n{toml}") == expected


def test_single_bracket_connection_table_is_explained() -> None:
    assert error_of('[connection]\nuri = "qemu:///system"') == (
        "connection: must be an array of tables: write [[connection]], not [connection]"
    )


# --- durations as keys ------------------------------------------------------------------------


def test_negative_duration_says_so() -> None:
    assert error_of('[poll]\ninterval = "-5s"') == (
        f'poll.interval: invalid duration "-5s": must not be negative {DURATION_HINT}'
    )


def test_bad_duration_names_its_key() -> None:
    assert error_of('[poll]\ninterval = "15"') == (
        f'poll.interval: invalid duration "15" {DURATION_HINT}'
    )


def test_bare_number_duration_is_rejected_in_a_file() -> None:
    assert error_of("[poll]\nvolumes_interval = 15") == (
        "poll.volumes_interval: invalid duration 15: must be a quoted string with a unit "
        + DURATION_HINT
    )


@pytest.mark.parametrize("key", ["interval", "volumes_interval", "call_timeout"])
def test_zero_is_rejected_where_it_would_mean_never(key: str) -> None:
    assert error_of(f'[poll]\n{key} = "0s"') == f'poll.{key}: must be greater than 0 (got "0s")'


def test_zero_refresh_interval_disables_refresh() -> None:
    assert parse_config('[poll]\nrefresh_interval = "0s"', source="t").poll.refresh_interval == 0


def test_python_callers_pass_seconds() -> None:
    assert PollConfig(interval=0.5, refresh_interval=0).interval == 0.5
    with pytest.raises(ValidationError, match="invalid duration"):
        PollConfig(interval=-1.0)


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ('interval = "1ms"', 'poll.interval: must be at least "500ms" (got "1ms")'),
        (
            'volumes_interval = "999ms"',
            'poll.volumes_interval: must be at least "1s" (got "999ms")',
        ),
        (
            'refresh_interval = "10ms"',
            'poll.refresh_interval: must be at least "1s", or "0s" to turn it off (got "10ms")',
        ),
        ('call_timeout = "99ms"', 'poll.call_timeout: must be at least "100ms" (got "99ms")'),
    ],
)
def test_a_file_cannot_poll_libvirt_absurdly_often(setting: str, error: str) -> None:
    # "1ms" was accepted: 790 polls a second against libvirtd.
    assert error_of(f"[poll]\n{setting}") == error


def test_the_minimums_themselves_are_accepted() -> None:
    poll = parse_config(
        '[poll]\ninterval = "500ms"\nvolumes_interval = "1s"\nrefresh_interval = "1s"\n'
        'call_timeout = "100ms"',
        source="t",
    ).poll
    assert (poll.interval, poll.volumes_interval, poll.refresh_interval, poll.call_timeout) == (
        0.5,
        1.0,
        1.0,
        0.1,
    )


@pytest.mark.parametrize("value", ['"99999999999999999999d"', '"366d"', '"8761h"'])
def test_durations_over_a_year_are_refused(value: str) -> None:
    assert error_of(f"[poll]\ninterval = {value}") == (
        f"poll.interval: invalid duration {value}: longer than the maximum of 365d"
    )


def test_python_callers_cannot_pass_more_than_a_year_either() -> None:
    with pytest.raises(ValidationError, match="longer than the maximum of 365d"):
        PollConfig(interval=1e300)


# --- web.listen -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        (":9479", (None, 9479)),
        ("127.0.0.1:9479", ("127.0.0.1", 9479)),
        ("localhost:0", ("localhost", 0)),
        ("kvm01.example.org:65535", ("kvm01.example.org", 65535)),
        ("[::1]:9479", ("::1", 9479)),
        ("[::]:9479", ("::", 9479)),
    ],
)
def test_parse_listen_address(address: str, parsed: tuple[str | None, int]) -> None:
    assert parse_listen_address(address) == parsed
    assert parse_config(f'[web]\nlisten = ["{address}"]', source="t").web.listen == (address,)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("9479", "missing port"),
        ("::1:9479", "an IPv6 address must be in brackets, e.g. [::1]:9479"),
        ("[::1:9479", "unclosed bracket"),
        ("[kvm01]:9479", '"kvm01" is not an IPv6 address'),
        (":65536", 'port must be a number from 0 to 65535, not "65536"'),
        ("localhost:http", 'port must be a number from 0 to 65535, not "http"'),
        ("127.0.0.256:9479", '"127.0.0.256" is not a host name or IP address'),
        ("my_host:9479", '"my_host" is not a host name or IP address'),
    ],
)
def test_bad_listen_address(address: str, reason: str) -> None:
    assert error_of(f'[web]\nlisten = [":9479", "{address}"]') == (
        f'web.listen[1]: invalid listen address "{address}": {reason} '
        '(use "host:port", "[::1]:port" or ":port")'
    )


def test_listen_must_be_a_non_empty_array() -> None:
    assert error_of('[web]\nlisten = ":9479"') == 'web.listen: must be an array (got ":9479")'
    assert error_of("[web]\nlisten = []") == "web.listen: must not be empty"


# --- read-only "auto" -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[poll]\nrefresh_interval = "0s"', True),
        ("", False),  # refreshing pools needs write access
        ('[poll]\nrefresh_interval = "0s"\n[[autostart]]\nmode = "off"', True),
        ('[poll]\nrefresh_interval = "0s"\n[[autostart]]\nmode = "boot"', False),
        ('[poll]\nrefresh_interval = "0s"\n[[autostart]]\nmode = "enforce"', False),
        ('[poll]\nrefresh_interval = "0s"\n[[autostart]]', False),  # mode defaults to boot
        (
            '[poll]\nrefresh_interval = "0s"\n[[autostart]]\nmode = "off"\nensure_flag = true',
            False,
        ),
        (
            '[poll]\nrefresh_interval = "0s"\n[[threshold]]\nwarning = "85%"\n'
            '[hooks.a]\nexec = ["/bin/true"]',
            True,  # thresholds and hooks never write to libvirt
        ),
    ],
)
def test_auto_read_only_follows_what_poolwatch_writes(toml: str, expected: bool) -> None:
    config = parse_config(f"[[connection]]\n{toml}", source="t")

    assert config.needs_write() is not expected
    assert config.connections[0].wants_read_only(config) is expected


@pytest.mark.parametrize("read_only", [True, False])
def test_explicit_read_only_wins_over_policies(read_only: bool) -> None:
    config = parse_config(
        f'[[connection]]\nread_only = {str(read_only).lower()}\n[[autostart]]\nmode = "enforce"',
        source="t",
    )

    assert config.connections[0].wants_read_only(config) is read_only
