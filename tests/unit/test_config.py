"""The configuration file: defaults, every class of mistake and its message, overrides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from poolwatch.addresses import parse_listen_address
from poolwatch.config import (
    AutostartConfig,
    Config,
    ConnectionConfig,
    HookConfig,
    Hysteresis,
    PollConfig,
    ThresholdConfig,
    load_config,
    parse_clear,
    parse_config,
    parse_duration,
    parse_limit,
    parse_ratio,
    parse_size,
)
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

EXAMPLE = Path(__file__).parents[2] / "config" / "poolwatch.toml"
DURATION_HINT = '(use e.g. "15s", "5m", "1h30m")'
GiB = 2**30


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="test.toml")
    return caught.value.errors


def error_of(text: str) -> str:
    errors = errors_of(text)
    assert len(errors) == 1, errors
    return errors[0]


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


def commented_examples(text: str) -> str:
    """The shipped file's commented-out examples, uncommented: each runs from a commented
    `# [table]` or `# [[table]]` line down to the next line that is not a comment."""
    examples: list[str] = []
    inside = False
    for line in text.splitlines():
        starts = re.match(r"# \[{1,2}[a-z]", line) is not None
        inside = line.startswith("#") and (inside or starts)
        if inside:
            examples.append("" if line == "#" else line.removeprefix("# "))
    return "\n".join(examples)


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
            critical=UsedRatio(0.95),
            clear_ratio=0.02,
            clear_bytes=0,
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
        interval = "250ms"
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
        interval=0.25,
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


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("15s", 15.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1s500ms", 1.5),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["15", "", "-5s", "5x", "5m1h", "1.5s", "15 s", "5M", "1h1h"])
def test_parse_duration_rejects_with_the_accepted_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid duration .*\(use e\.g\. \"15s\""):
        parse_duration(text)


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


# --- unknown keys and wrong types -------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("bogus = 1", "bogus: unknown key"),
        ("[web]\nbogus = 1", "web.bogus: unknown key"),
        ("[poll]\nintervall = '15s'", "poll.intervall: unknown key"),
        ("[[connection]]\n[[connection]]\nhost = 'x'", "connection[1].host: unknown key"),
        # The names the tables have inside poolwatch are typos in the file, not synonyms.
        ("[[connections]]\nuri = 'test:///default'", "connections: unknown key"),
        ("[[thresholds]]\npool = 'x'", "thresholds: unknown key"),
        ("[[threshold]]\nhold = '1m'", "threshold[0].hold: unknown key"),
    ],
)
def test_unknown_keys_are_rejected(toml: str, expected: str) -> None:
    assert error_of(toml) == expected


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            '[poll]\nmax_volumes_per_pool = "1000"',
            'poll.max_volumes_per_pool: must be an integer (got "1000")',
        ),
        (
            "[poll]\nmax_volumes_per_pool = 1.5",
            "poll.max_volumes_per_pool: must be an integer (got 1.5)",
        ),
        (
            "[poll]\nmax_volumes_per_pool = true",
            "poll.max_volumes_per_pool: must be an integer (got true)",
        ),
        (
            "[poll]\nmax_volumes_per_pool = -1",
            "poll.max_volumes_per_pool: must be at least 0 (got -1)",
        ),
        ("poll = 5", "poll: must be a table (got 5)"),
        ("[[web]]", "web: must be a table (got an array)"),
        (
            "[log.level]",
            'log.level: must be "debug", "info", "warning" or "error" (got a table)',
        ),
        ("[web]\nlisten = [9479]", "web.listen[0]: must be a string (got 9479)"),
        (
            '[log]\nlevel = "verbose"',
            'log.level: must be "debug", "info", "warning" or "error" (got "verbose")',
        ),
        (
            '[log]\nlevel = "INFO"',
            'log.level: must be "debug", "info", "warning" or "error" (got "INFO")',
        ),
        ("[log]\nformat = 1", 'log.format: must be "auto", "console" or "json" (got 1)'),
    ],
)
def test_wrong_types_name_key_and_value(toml: str, expected: str) -> None:
    assert error_of(toml) == expected


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            """
            bogus = 1
            [[connection]]
            uri = "nope"
            [poll]
            interval = "15"
            call_timeout = "0s"
            [web]
            listen = ["::1:9479"]
            [log]
            level = "verbose"
            """,
            source="/etc/poolwatch/poolwatch.toml",
        )

    paths = [error.split(":")[0] for error in caught.value.errors]
    assert paths == [
        "connection[0].uri",
        "poll.interval",
        "poll.call_timeout",
        "web.listen[0]",
        "log.level",
        "bogus",
    ]
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid configuration in /etc/poolwatch/poolwatch.toml (6 errors):"
    assert lines[1:] == [f"  {error}" for error in caught.value.errors]


# --- files ------------------------------------------------------------------------------------


def test_toml_syntax_error_gives_line_and_column() -> None:
    error = error_of('[poll]\ninterval = "15s\n')

    assert error.startswith("TOML syntax error: ")
    assert "line 2" in error
    assert "column" in error


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.source == str(path)
    assert caught.value.errors == ["cannot read the file: No such file or directory"]
    assert str(path) in str(caught.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path)


def test_non_utf8_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[[connection]]\nname = "h\xf6st"\n')

    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(path)


def test_load_config_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "poolwatch.toml"
    path.write_text('[log]\nlevel = "debug"\n')

    assert load_config(path).log.level == "debug"


# --- overrides --------------------------------------------------------------------------------


def test_overrides_replace_only_what_is_given() -> None:
    base = parse_config(
        '[[connection]]\nname = "kvm01"\n[poll]\ninterval = "5s"\n[log]\nformat = "json"',
        source="t",
    )

    config = base.with_overrides(listen=["127.0.0.1:1", "[::1]:1"], log_level="debug")

    assert config.web.listen == ("127.0.0.1:1", "[::1]:1")
    assert config.log.level == "debug"
    assert config.log.format == "json"
    assert config.poll == base.poll
    assert config.connections == base.connections
    assert base.log.level == "info"  # the original is untouched


def test_no_overrides_keep_the_config() -> None:
    config = parse_config('[poll]\ninterval = "5s"', source="t")

    assert config.with_overrides() == config


def test_libvirt_uri_override_replaces_all_connections_without_a_name() -> None:
    base = parse_config(
        '[[connection]]\nname = "a"\nread_only = true\n[[connection]]\nname = "b"', source="t"
    )

    config = base.with_overrides(libvirt_uri="test:///default")

    assert config.connections == (ConnectionConfig(uri="test:///default"),)


def test_bad_overrides_are_all_reported_like_file_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        Config().with_overrides(
            listen=["nowhere"],
            log_level="verbose",
            log_format="xml",
            libvirt_uri="kvm01",
            source="command-line flags",
        )

    assert caught.value.source == "command-line flags"
    assert [error.split(":")[0] for error in caught.value.errors] == [
        "connection[0].uri",
        "web.listen[0]",
        "log.level",
        "log.format",
    ]
    assert 'log.level: must be "debug", "info", "warning" or "error" (got "verbose")' in (
        caught.value.errors
    )


# --- sizes and ratios -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0B", 0),
        ("512B", 512),
        ("1KiB", 1024),
        ("50GiB", 50 * 2**30),
        ("1.5MiB", 1572864),
        ("2TiB", 2 * 2**40),
        ("1KB", 1000),
        ("2.05MB", 2050000),
        ("500GB", 500 * 10**9),
        ("2TB", 2 * 10**12),
        ("20 GiB", 20 * 2**30),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["50", "50gb", "50G", "5XB", "-1GiB", "GiB", "1,5GiB", ""])
def test_parse_size_rejects_with_the_accepted_form(text: str) -> None:
    with pytest.raises(ValueError, match=r'invalid size .*\(use e\.g\. "512MiB", "50GiB"'):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "ratio"), [("85%", 0.85), ("0%", 0.0), ("100%", 1.0), ("92.5%", 0.925)]
)
def test_parse_ratio(text: str, ratio: float) -> None:
    assert parse_ratio(text) == pytest.approx(ratio)


@pytest.mark.parametrize("text", ["0.85", "85", "-5%", "%", "eighty%"])
def test_parse_ratio_rejects_with_the_accepted_form(text: str) -> None:
    with pytest.raises(ValueError, match=r'use a percentage such as "85%"'):
        parse_ratio(text)


def test_parse_ratio_rejects_more_than_everything() -> None:
    with pytest.raises(ValueError, match="between 0% and 100%"):
        parse_ratio("101%")


# --- policies: rules and hooks ----------------------------------------------------------------

POLICIES = """
[[autostart]]
pool = "nfs-*"
type = "netfs"
mode = "enforce"
ensure_flag = true
max_attempts = 0
backoff = "30s"
backoff_max = "1h"
hooks = ["pager"]

[[autostart]]
pool = "*"

[[threshold]]
pool = "*"
type = "dir"
warning = "85%"
critical = "95%"
for = "5m"
hooks = ["pager", "ops-webhook"]

[[threshold]]
warning = "< 20GiB"
critical = "< 5GiB"
clear = "5GiB"
time_to_full_warning = "24h"
time_to_full_critical = "2h"
forecast_window = "12h"

[hooks.pager]
exec = ["/usr/local/bin/page-oncall", "--severity", "high"]
timeout = "1m"

[hooks.ops-webhook]
webhook = "https://alerts.example.com/poolwatch"
timeout = "5s"
retries = 0
headers = { Authorization = "Bearer abc", X-Team = "storage" }
"""


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


# --- policies: limits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("85%", UsedRatio(0.85)),
        ("100%", UsedRatio(1.0)),
        ("0.5%", UsedRatio(0.005)),
        ("< 20GiB", FreeBelow(20 * GiB)),
        ("<20GiB", FreeBelow(20 * GiB)),
        ("< 500GB", FreeBelow(500 * 10**9)),
    ],
)
def test_parse_limit(text: str, limit: UsedRatio | FreeBelow) -> None:
    assert parse_limit(text) == limit


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("20GiB", 'invalid limit "20GiB": free space needs a "<": write "< 20GiB"'),
        ("0%", 'invalid limit "0%": a used ratio must be more than 0%'),
        ("101%", 'invalid ratio "101%": must be between 0% and 100%'),
        ("< 0B", 'invalid limit "< 0B": free space is never below 0 bytes'),
        ("> 20GiB", 'invalid limit "> 20GiB" (use a used ratio such as "85%" or free space'),
        ("< 20", 'invalid size " 20" (use e.g.'),
        ("0.85", 'invalid limit "0.85" (use a used ratio'),
    ],
)
def test_parse_limit_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_limit(text)


@pytest.mark.parametrize(
    ("text", "clear"),
    [("2%", Hysteresis(ratio=0.02)), ("5GiB", Hysteresis(bytes=5 * GiB))],
)
def test_parse_clear(text: str, clear: Hysteresis) -> None:
    assert parse_clear(text) == clear


# --- policies: every mistake with its key path ------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        # threshold: limits
        (
            '[[threshold]]\npool = "*"',
            "threshold[0]: sets no level: give at least one of warning, critical, "
            "time_to_full_warning or time_to_full_critical",
        ),
        (
            '[[threshold]]\nwarning = "20GiB"',
            'threshold[0].warning: invalid limit "20GiB": free space needs a "<": write "< 20GiB"',
        ),
        (
            '[[threshold]]\ncritical = "0%"',
            'threshold[0].critical: invalid limit "0%": a used ratio must be more than 0%',
        ),
        (
            '[[threshold]]\nwarning = "120%"',
            'threshold[0].warning: invalid ratio "120%": must be between 0% and 100%',
        ),
        (
            "[[threshold]]\nwarning = 85",
            'threshold[0].warning: must be a quoted string such as "85%" or "< 20GiB" (got 85)',
        ),
        (
            '[[threshold]]\nwarning = "85%"\ncritical = "< 5GiB"',
            'threshold[0].critical: must be the same kind as warning "85%": both used ratios '
            'such as "85%" or both free space such as "< 20GiB" (got "< 5GiB")',
        ),
        (
            '[[threshold]]\nwarning = "95%"\ncritical = "85%"',
            'threshold[0].critical: must be higher than warning "95%" (got "85%")',
        ),
        (
            '[[threshold]]\nwarning = "90%"\ncritical = "90%"',
            'threshold[0].critical: must be higher than warning "90%" (got "90%")',
        ),
        (
            '[[threshold]]\nwarning = "< 5GiB"\ncritical = "< 20GiB"',
            'threshold[0].critical: must be less free space than warning "< 5GiB", which warns '
            'first (got "< 20GiB")',
        ),
        # threshold: clear
        (
            '[[threshold]]\nwarning = "85%"\nclear = "90%"',
            'threshold[0].clear: must be less than warning "85%": a clear of "90%" reaches '
            "beyond the threshold, so the level would never clear",
        ),
        (
            '[[threshold]]\nwarning = "85%"\nclear = "85%"',
            'threshold[0].clear: must be less than warning "85%": a clear of "85%" reaches '
            "beyond the threshold, so the level would never clear",
        ),
        (
            '[[threshold]]\ncritical = "10%"\nclear = "10%"',
            'threshold[0].clear: must be less than critical "10%": a clear of "10%" reaches '
            "beyond the threshold, so the level would never clear",
        ),
        (
            '[[threshold]]\nwarning = "85%"\nclear = "5GiB"',
            'threshold[0].clear: must be a ratio such as "2%" for used-ratio limits (got "5GiB")',
        ),
        (
            '[[threshold]]\nwarning = "< 20GiB"\nclear = "2%"',
            'threshold[0].clear: must be a size such as "5GiB" for free-space limits (got "2%")',
        ),
        (
            '[[threshold]]\nwarning = "< 20GiB"\nclear = "< 5GiB"',
            'threshold[0].clear: invalid clear "< 5GiB": a clear margin takes no "<"; write "5GiB"',
        ),
        (
            '[[threshold]]\nwarning = "< 20GiB"\nclear = "0B"',
            'threshold[0].clear: must be greater than 0 (got "0B")',
        ),
        (
            '[[threshold]]\nwarning = "85%"\nclear = "lots"',
            'threshold[0].clear: invalid clear "lots" (use a ratio such as "2%" for used-ratio '
            'limits or a size such as "5GiB" for free-space limits)',
        ),
        (
            '[[threshold]]\ntime_to_full_warning = "1h"\nclear = "2%"',
            'threshold[0].clear: has no effect without warning or critical (got "2%")',
        ),
        # threshold: durations
        (
            '[[threshold]]\ntime_to_full_warning = "2h"\ntime_to_full_critical = "1d"',
            'threshold[0].time_to_full_critical: must be shorter than time_to_full_warning "2h" '
            '(got "1d")',
        ),
        (
            '[[threshold]]\nwarning = "85%"\nforecast_window = "0s"',
            'threshold[0].forecast_window: must be greater than 0 (got "0s")',
        ),
        (
            '[[threshold]]\nwarning = "85%"\nfor = "-1m"',
            f'threshold[0].for: invalid duration "-1m": must not be negative {DURATION_HINT}',
        ),
        (
            '[[threshold]]\nwarning = "85%"\ntime_to_full_warning = "0s"',
            'threshold[0].time_to_full_warning: must be greater than 0 (got "0s")',
        ),
        (
            '[[threshold]]\nwarning = "85%"\npool = ""',
            'threshold[0].pool: must not be empty (use "*" for every pool)',
        ),
        # autostart
        (
            '[[autostart]]\nmode = "always"',
            'autostart[0].mode: must be "off", "boot" or "enforce" (got "always")',
        ),
        (
            "[[autostart]]\nmax_attempts = -1",
            "autostart[0].max_attempts: must be at least 0 (got -1)",
        ),
        (
            '[[autostart]]\nbackoff = "0s"',
            'autostart[0].backoff: must be greater than 0 (got "0s")',
        ),
        (
            '[[autostart]]\nbackoff = "1h"\nbackoff_max = "10m"',
            'autostart[0].backoff_max: must be at least backoff "1h" (got "10m")',
        ),
        (
            '[[autostart]]\nbackoff = "20m"',  # beyond the default backoff_max
            'autostart[0].backoff: must be at most backoff_max, whose default is "10m": set '
            'backoff_max too (got "20m")',
        ),
        (
            '[[autostart]]\ntype = "netfs"\nrequire_mount = true',
            'autostart[0].require_mount: only applies to dir pools, and type "netfs" does not '
            'match "dir"',
        ),
        (
            '[[autostart]]\nensure_flag = "yes"',
            'autostart[0].ensure_flag: must be true or false (got "yes")',
        ),
        (
            '[[autostart]]\ntype = ""',
            'autostart[0].type: must not be empty (use "*" for every pool)',
        ),
        # hooks
        (
            "[hooks.pager]\n",
            "hooks.pager: needs exec (a command to run) or webhook (a URL to post to)",
        ),
        (
            '[hooks.pager]\nexec = ["/bin/true"]\nwebhook = "https://example.com/"',
            "hooks.pager: has both exec and webhook; a hook is one or the other, so define two "
            "hooks",
        ),
        (
            "[hooks.pager]\nexec = []",
            "hooks.pager.exec: must not be empty: give the program and its arguments, e.g. "
            '["/usr/local/bin/page-oncall", "--severity", "high"]',
        ),
        (
            '[hooks.pager]\nexec = "/usr/local/bin/page-oncall --severity high"',
            'hooks.pager.exec: must be an array (got "/usr/local/bin/page-oncall --severity high")',
        ),
        (
            '[hooks.pager]\nexec = ["bin/page-oncall"]',
            "hooks.pager.exec[0]: must be an absolute path or a command name looked up in PATH "
            '(got "bin/page-oncall")',
        ),
        (
            '[hooks.pager]\nexec = ["", "x"]',
            "hooks.pager.exec[0]: must be an absolute path or a command name looked up in PATH "
            '(got "")',
        ),
        (
            '[hooks.pager]\nexec = ["/bin/page", 5]',
            "hooks.pager.exec[1]: must be a string (got 5)",
        ),
        (
            '[hooks.pager]\nexec = ["/bin/page"]\nretries = 2',
            "hooks.pager.retries: only applies to webhook hooks",
        ),
        (
            '[hooks.pager]\nexec = ["/bin/page"]\nheaders = { A = "b" }',
            "hooks.pager.headers: only applies to webhook hooks",
        ),
        (
            '[hooks.ops]\nwebhook = "ftp://alerts.example.com/"',
            'hooks.ops.webhook: invalid webhook URL "ftp://alerts.example.com/" (use an http:// '
            'or https:// URL such as "https://alerts.example.com/poolwatch")',
        ),
        (
            '[hooks.ops]\nwebhook = "https://"',
            'hooks.ops.webhook: invalid webhook URL "https://" (use an http:// or https:// URL '
            'such as "https://alerts.example.com/poolwatch")',
        ),
        (
            '[hooks.ops]\nwebhook = "https://example.com:99999/"',
            'hooks.ops.webhook: invalid webhook URL "https://example.com:99999/" (use an http:// '
            'or https:// URL such as "https://alerts.example.com/poolwatch")',
        ),
        (
            '[hooks.ops]\nwebhook = "https://example.com/"\nretries = -1',
            "hooks.ops.retries: must be at least 0 (got -1)",
        ),
        (
            '[hooks.ops]\nwebhook = "https://example.com/"\ntimeout = "0s"',
            'hooks.ops.timeout: must be greater than 0 (got "0s")',
        ),
        (
            '[hooks.ops]\nwebhook = "https://example.com/"\nheaders = { "X Team" = "a" }',
            'hooks.ops.headers."X Team": invalid HTTP header name "X Team"',
        ),
        (
            '[hooks.ops]\nwebhook = "https://example.com/"\nheaders = { X-Team = "a\\nX-Evil: 1" }',
            "hooks.ops.headers.X-Team: must not contain line breaks or NUL characters",
        ),
        (
            '[hooks.ops]\nwebhook = "https://example.com/"\nheaders = { X-Team = 1 }',
            "hooks.ops.headers.X-Team: must be a string (got 1)",
        ),
        (
            '[hooks."page me"]\nexec = ["/bin/page"]',
            'hooks."page me": invalid hook name "page me": use letters, digits, "_" and "-"',
        ),
        (
            '[hooks.ops]\nwebhook = "https://example.com/a b"',
            'hooks.ops.webhook: invalid webhook URL "https://example.com/a b" (use an http:// '
            'or https:// URL such as "https://alerts.example.com/poolwatch")',
        ),
        (
            '[[threshold]]\nwarning = "85%"\nclear = 2',
            'threshold[0].clear: must be a quoted string such as "2%" or "5GiB" (got 2)',
        ),
        (
            # clear is checked against warning only once warning itself is valid
            '[[threshold]]\nwarning = "85"\nclear = "5GiB"',
            'threshold[0].warning: invalid limit "85" (use a used ratio such as "85%" or free '
            'space such as "< 20GiB")',
        ),
        ("threshold = [1]", "threshold[0]: must be a table (got 1)"),
        ('hooks = ["pager"]', "hooks: must be a table (got an array)"),
        ("[[hooks]]", "hooks: must be a table (got an array)"),
    ],
)
def test_bad_policy_entries(toml: str, expected: str) -> None:
    assert error_of(toml) == expected


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
