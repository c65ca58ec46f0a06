"""Operator messages: unknown keys, wrong types, and every error at once."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from poolwatch.config import TOML, Dialect, describe_errors, parse_config
from poolwatch.errors import ConfigError
from tests.unit.config.support import error_of

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


# --- dialects ---------------------------------------------------------------------------------


class _Table(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    count: int = Field(default=0, ge=0)
    names: dict[str, int] = Field(default_factory=dict)


# As the web config file (YAML) needs it: plain keys, and never the value, which may be a secret.
YAML_LIKE = Dialect(
    messages={
        "int_type": "must be an integer",
        "extra_forbidden": "unknown key",
        "greater_than_equal": "must be at least {ge}",
    },
    fallback="{msg}",
    own_error_types=frozenset({"web_config"}),
    value_repr=None,
)


def errors_in(data: dict[str, object], dialect: Dialect) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        _Table.model_validate(data)
    return describe_errors(caught.value, dialect)


def test_toml_dialect_quotes_keys_and_echoes_values() -> None:
    assert errors_in({"count": -1, "names": {"a b": "x"}, "bogus": "secret"}, TOML) == [
        "count: must be at least 0 (got -1)",
        'names."a b": must be an integer (got "x")',
        "bogus: unknown key",
    ]


def test_a_dialect_without_value_repr_never_echoes_values() -> None:
    assert errors_in({"count": -1, "names": {"a b": "secret"}, "bogus": "secret"}, YAML_LIKE) == [
        "count: must be at least 0",
        "names.a b: must be an integer",
        "bogus: unknown key",
    ]


def test_a_dialect_that_cannot_echo_rejects_templates_that_would() -> None:
    with pytest.raises(ValueError, match="cannot echo values"):
        Dialect(
            messages={}, fallback="{msg} (got {got})", own_error_types=frozenset(), value_repr=None
        )
