"""poolwatch's configuration: the TOML file's schema, its validation and its error messages.

A `Config` is frozen and validated in full: a file with several problems yields one `ConfigError`
that lists every one of them under its TOML key path, so an operator fixes them in one pass.
Durations are stored as float seconds, so the rest of poolwatch never parses strings.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import tomllib
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "console", "json"]
ReadOnly = bool | Literal["auto"]

DEFAULT_URI = "qemu:///system"
DEFAULT_LISTEN = ":9479"

# Marks validation of file contents: there a duration must be a string with a unit, while Python
# callers (tests, overrides re-validating a dumped config) may pass seconds as numbers.
_FROM_FILE: dict[str, bool] = {"from_file": True}

_DURATION_HINT = '(use e.g. "15s", "5m", "1h30m")'
_DURATION_RE = re.compile(
    r"(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m(?!s))?(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?"
)
_DURATION_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

_SIZE_RE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]i?B|B)")
_SIZE_UNIT_BYTES = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}
_RATIO_RE = re.compile(r"(?P<percent>\d+(?:\.\d+)?)\s*%")

_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_URI_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


class ConfigError(Exception):
    """The configuration cannot be used; `errors` holds one `key.path: message` per problem."""

    def __init__(self, source: str, errors: Iterable[str]) -> None:
        self.source = source
        self.errors = list(errors)
        super().__init__(source, self.errors)

    def __str__(self) -> str:
        count = len(self.errors)
        noun = "error" if count == 1 else "errors"
        lines = [f"invalid configuration in {self.source} ({count} {noun}):"]
        lines.extend(f"  {error}" for error in self.errors)
        return "\n".join(lines)


# --- plain parsers, usable outside pydantic --------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus-style duration such as "250ms", "15s" or "1h30m"."""
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None:
        why = ": must not be negative" if text.lstrip().startswith("-") else ""
        raise ValueError(f"invalid duration {_quote(text)}{why} {_DURATION_HINT}")
    return sum(
        int(count) * _DURATION_UNIT_SECONDS[unit]
        for unit, count in match.groupdict().items()
        if count is not None
    )


def parse_size(text: str) -> int:
    """Bytes in a size such as "50GiB" (binary units) or "500GB" (decimal units)."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f'invalid size {_quote(text)} (use e.g. "512MiB", "50GiB", "2TB"; '
            "units B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
        )
    # Decimal keeps "2.05MB" at 2050000 bytes where float arithmetic gives 2049999.
    return int(Decimal(match["number"]) * _SIZE_UNIT_BYTES[match["unit"]])


def parse_ratio(text: str) -> float:
    """A percentage such as "85%" as a ratio between 0 and 1."""
    match = _RATIO_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f'invalid ratio {_quote(text)} (use a percentage such as "85%")')
    percent = float(match["percent"])
    if percent > 100:
        raise ValueError(f"invalid ratio {_quote(text)}: must be between 0% and 100%")
    return percent / 100


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """(host, port) of "host:port", "[::1]:port" or ":port"; host None means all addresses."""
    host, colon, port_text = address.rpartition(":")
    if not colon:
        raise ValueError("missing port")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("unclosed bracket")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{_quote(host)} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError("an IPv6 address must be in brackets, e.g. [::1]:9479")
    elif host and not _is_host_name_or_ipv4(host):
        raise ValueError(f"{_quote(host)} is not a host name or IP address")
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"port must be a number from 0 to 65535, not {_quote(port_text)}")
    return (host or None), int(port_text)


def _is_host_name_or_ipv4(host: str) -> bool:
    if re.fullmatch(r"[\d.]+", host):
        # All digits and dots is never a host name, so a typo like 127.0.0.256 fails here
        # rather than at bind time.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return _HOSTNAME_RE.fullmatch(host) is not None


# --- pydantic field types ---------------------------------------------------------------------


def _duration(value: Any, info: ValidationInfo, *, allow_zero: bool) -> float:
    if isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise PydanticCustomError("duration", str(exc)) from None
    elif _from_file(info) or isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError(
            "duration",
            "invalid duration {value}: must be a quoted string with a unit " + _DURATION_HINT,
            {"value": _toml_repr(value)},
        )
    elif not math.isfinite(value) or value < 0:
        raise PydanticCustomError("duration", "invalid duration {value}", {"value": value})
    else:
        seconds = float(value)
    if seconds == 0 and not allow_zero:
        raise PydanticCustomError(
            "duration", "must be greater than 0 (got {value})", {"value": _toml_repr(value)}
        )
    return seconds


def _positive_duration(value: Any, info: ValidationInfo) -> float:
    return _duration(value, info, allow_zero=False)


def _non_negative_duration(value: Any, info: ValidationInfo) -> float:
    return _duration(value, info, allow_zero=True)


def _read_only(value: Any) -> ReadOnly:
    if isinstance(value, bool):
        return value
    if value == "auto":
        return "auto"
    raise PydanticCustomError(
        "read_only",
        'must be "auto", true or false (got {value})',
        {"value": _toml_repr(value)},
    )


def _listen_address(value: str) -> str:
    try:
        parse_listen_address(value)
    except ValueError as exc:
        raise PydanticCustomError(
            "listen_address",
            'invalid listen address {address}: {reason} (use "host:port", "[::1]:port" or ":port")',
            {"address": _quote(value), "reason": str(exc)},
        ) from None
    return value


def _connection_name(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("connection_name", "must not be empty")
    return value


def _libvirt_uri(value: str) -> str:
    if _URI_SCHEME_RE.match(value) is None:
        raise PydanticCustomError(
            "libvirt_uri",
            'invalid libvirt URI {uri} (use e.g. "qemu:///system", "qemu+ssh://root@kvm02/system")',
            {"uri": _quote(value)},
        )
    return value


def _tuple_from_array(value: Any) -> Any:
    # TOML arrays arrive as lists, and strict mode only takes tuples for tuple fields; tuples
    # keep the frozen config hashable and really immutable.
    return tuple(value) if isinstance(value, list) else value


PositiveDuration = Annotated[float, PlainValidator(_positive_duration)]
NonNegativeDuration = Annotated[float, PlainValidator(_non_negative_duration)]
ListenAddress = Annotated[str, AfterValidator(_listen_address)]


# --- models -----------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ConnectionConfig(_Model):
    """One libvirt connection (`[[connection]]`)."""

    name: Annotated[str, AfterValidator(_connection_name)] | None = None
    uri: Annotated[str, AfterValidator(_libvirt_uri)] = DEFAULT_URI
    read_only: Annotated[ReadOnly, PlainValidator(_read_only)] = "auto"

    @property
    def key(self) -> str:
        """What identifies this connection inside poolwatch: its name, else its URI."""
        return self.name if self.name is not None else self.uri

    def wants_read_only(self, refresh_interval: float) -> bool:
        """Whether to open the connection read-only; "auto" asks for write access only when
        poolwatch refreshes pools (libvirt refuses pool.refresh() on read-only connections)."""
        if self.read_only == "auto":
            return refresh_interval <= 0
        return self.read_only


class PollConfig(_Model):
    """How often poolwatch asks libvirt (`[poll]`); durations in seconds."""

    interval: PositiveDuration = 15.0
    volumes_interval: PositiveDuration = 60.0
    refresh_interval: NonNegativeDuration = 300.0
    call_timeout: PositiveDuration = 10.0
    max_volumes_per_pool: int = Field(default=1000, ge=0)


class WebConfig(_Model):
    """The HTTP listener (`[web]`)."""

    listen: Annotated[
        tuple[ListenAddress, ...], BeforeValidator(_tuple_from_array), Field(min_length=1)
    ] = (DEFAULT_LISTEN,)


class LogConfig(_Model):
    """Logging (`[log]`)."""

    level: LogLevel = "info"
    format: LogFormat = "auto"


class Config(_Model):
    """The whole configuration file."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    # The TOML key is singular because each [[connection]] table is one connection.
    connections: Annotated[tuple[ConnectionConfig, ...], BeforeValidator(_tuple_from_array)] = (
        Field(default=(ConnectionConfig(),), validation_alias="connection")
    )
    poll: PollConfig = Field(default_factory=PollConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @field_validator("connections")
    @classmethod
    def _connection_keys_unique(
        cls, connections: tuple[ConnectionConfig, ...]
    ) -> tuple[ConnectionConfig, ...]:
        first_index: dict[str, int] = {}
        duplicates: list[InitErrorDetails] = []
        for index, connection in enumerate(connections):
            first = first_index.setdefault(connection.key, index)
            if first == index:
                continue
            if connection.name is not None:
                field, message = (
                    "name",
                    "duplicate connection name {value} (see connection[{first}])",
                )
            else:
                field = "uri"
                message = (
                    "duplicate uri {value} (see connection[{first}]); "
                    "give connections to the same URI distinct names"
                )
            duplicates.append(
                InitErrorDetails(
                    type=PydanticCustomError(
                        "duplicate_connection",
                        message,
                        {"value": _quote(connection.key), "first": first},
                    ),
                    loc=(index, field),
                    input=connection.key,
                )
            )
        if duplicates:
            # Raising a ValidationError from a validator nests its locations under this field,
            # which reports every duplicate at its own key path.
            raise ValidationError.from_exception_data(cls.__name__, duplicates)
        return connections

    def with_overrides(
        self,
        *,
        listen: Sequence[str] | None = None,
        log_level: str | None = None,
        log_format: str | None = None,
        libvirt_uri: str | None = None,
        source: str = "overrides",
    ) -> Config:
        """A new config with these values replaced (None keeps the current one), validated by the
        same rules as the file; `libvirt_uri` replaces all connections with one unnamed one."""
        data = self.model_dump()
        if listen is not None:
            data["web"]["listen"] = list(listen)
        if log_level is not None:
            data["log"]["level"] = log_level
        if log_format is not None:
            data["log"]["format"] = log_format
        # Validating under the TOML key makes error paths read as they would for the file.
        data["connection"] = data.pop("connections")
        if libvirt_uri is not None:
            data["connection"] = [{"uri": libvirt_uri}]
        try:
            return Config.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(source, _describe_errors(exc)) from None


# --- loading ----------------------------------------------------------------------------------


def parse_config(text: str, *, source: str) -> Config:
    """Validate TOML text; `source` names it in error messages (usually the file path)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"TOML syntax error: {exc}"]) from None
    try:
        return Config.model_validate(data, context=_FROM_FILE)
    except ValidationError as exc:
        raise ConfigError(source, _describe_errors(exc)) from None


def load_config(path: Path) -> Config:
    """Read and validate a configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"the file is not valid UTF-8: {exc}"]) from None
    return parse_config(text, source=str(path))


# --- error messages ---------------------------------------------------------------------------

# Pydantic's wording speaks Python ("valid dictionary", "valid tuple"); operators edit TOML.
_MESSAGES = {
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dict_type": "must be a table",
    "tuple_type": "must be an array",
    "list_type": "must be an array",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
}
# Raised by this module's validators, with messages that already quote the offending value.
_OWN_ERROR_TYPES = frozenset(
    {
        "duration",
        "read_only",
        "listen_address",
        "connection_name",
        "libvirt_uri",
        "duplicate_connection",
    }
)


def _describe_errors(exc: ValidationError) -> list[str]:
    return [_describe(error) for error in exc.errors(include_url=False)]


def _describe(error: ErrorDetails) -> str:
    path = _key_path(error["loc"])
    message = _message(error)
    return f"{path}: {message}" if path else message


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    if (
        kind == "tuple_type"
        and error["loc"] == ("connection",)
        and isinstance(error["input"], dict)
    ):
        return "must be an array of tables: write [[connection]], not [connection]"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "too_short":
        return "must not be empty"
    if kind in _OWN_ERROR_TYPES:
        return error["msg"]
    got = f" (got {_toml_repr(error['input'])})"
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", '"')
        return f"must be {expected}{got}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}{got}"
    return _MESSAGES.get(kind, error["msg"]) + got


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _from_file(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get("from_file"))


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _toml_repr(value: Any) -> str:
    """A value as the operator wrote it in TOML, shortened to fit on one line."""
    if isinstance(value, str):
        text = _quote(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list | tuple):
        text = "an array"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
