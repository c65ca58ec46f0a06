"""poolwatch's configuration: the TOML file's schema, its validation and its error messages.

A `Config` is frozen and validated in full: a file with several problems yields one `ConfigError`
that lists every one of them under its TOML key path, so an operator fixes them in one pass.

- `units`: durations, sizes, ratios, limits and clear margins, parsed and formatted;
- `messages`: pydantic's validation errors as operator messages, per file format (`Dialect`);
- `fields`: the field types and their validators;
- `schema` and `rules`: the tables as frozen models, `Config` at the top;
- `loading`: the file, and the command-line flags over it.
"""

from poolwatch.config.loading import FLAGS_SOURCE, apply_flags, load_config, parse_config
from poolwatch.config.messages import TOML, Dialect, describe_errors
from poolwatch.config.rules import (
    DEFAULT_CLEAR_BYTES,
    DEFAULT_CLEAR_RATIO,
    DEFAULT_EXEC_TIMEOUT,
    DEFAULT_WEBHOOK_TIMEOUT,
    AutostartConfig,
    HookConfig,
    ThresholdConfig,
)
from poolwatch.config.schema import (
    DEFAULT_LISTEN,
    DEFAULT_URI,
    Config,
    ConnectionConfig,
    LogConfig,
    LogFormat,
    LogLevel,
    PollConfig,
    WebConfig,
)
from poolwatch.config.units import (
    Hysteresis,
    format_clear,
    format_duration,
    format_limit,
    format_ratio,
    format_size,
    parse_clear,
    parse_duration,
    parse_limit,
    parse_ratio,
    parse_size,
)

__all__ = [
    "DEFAULT_CLEAR_BYTES",
    "DEFAULT_CLEAR_RATIO",
    "DEFAULT_EXEC_TIMEOUT",
    "DEFAULT_LISTEN",
    "DEFAULT_URI",
    "DEFAULT_WEBHOOK_TIMEOUT",
    "FLAGS_SOURCE",
    "TOML",
    "AutostartConfig",
    "Config",
    "ConnectionConfig",
    "Dialect",
    "HookConfig",
    "Hysteresis",
    "LogConfig",
    "LogFormat",
    "LogLevel",
    "PollConfig",
    "ThresholdConfig",
    "WebConfig",
    "apply_flags",
    "describe_errors",
    "format_clear",
    "format_duration",
    "format_limit",
    "format_ratio",
    "format_size",
    "load_config",
    "parse_clear",
    "parse_config",
    "parse_duration",
    "parse_limit",
    "parse_ratio",
    "parse_size",
]
