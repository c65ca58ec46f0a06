"""The configuration file: defaults, every class of mistake and its message, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from poolwatch.config import (
    Config,
    ConfigError,
    ConnectionConfig,
    PollConfig,
    load_config,
    parse_config,
    parse_duration,
    parse_listen_address,
    parse_ratio,
    parse_size,
)

EXAMPLE = Path(__file__).parents[2] / "config" / "poolwatch.toml"
DURATION_HINT = '(use e.g. "15s", "5m", "1h30m")'


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

    assert [c.key for c in config.connections] == ["kvm01", "qemu+ssh://root@kvm02/system"]
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


@pytest.mark.parametrize(
    ("read_only", "refresh_interval", "expected"),
    [
        ('"auto"', 300.0, False),  # refreshing pools needs a read-write connection
        ('"auto"', 0.0, True),
        ("true", 300.0, True),
        ("false", 0.0, False),
    ],
)
def test_wants_read_only(read_only: str, refresh_interval: float, expected: bool) -> None:
    toml = f"[[connection]]\nread_only = {read_only}"
    connection = parse_config(toml, source="test.toml").connections[0]

    assert connection.wants_read_only(refresh_interval) is expected


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
