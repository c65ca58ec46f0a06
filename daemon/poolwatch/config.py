"""poolwatch's configuration: the TOML file's schema, its validation and its error messages.

A `Config` is frozen and validated in full: a file with several problems yields one `ConfigError`
that lists every one of them under its TOML key path, so an operator fixes them in one pass.
Durations are stored as float seconds and limits as the policies' own rule values, so the rest of
poolwatch never parses strings; `Config.threshold_rules()`, `autostart_rules()` and
`hook_definitions()` hand the policies plain frozen values that know nothing of TOML or pydantic.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import tomllib
import typing
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ModelWrapValidatorHandler,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError, core_schema

from poolwatch.addresses import parse_listen_address, without_credentials
from poolwatch.errors import ConfigError
from poolwatch.policies.rules import (
    AutostartMode,
    AutostartRule,
    ExecHook,
    FreeBelow,
    Hook,
    Limit,
    Selector,
    ThresholdRule,
    UsedRatio,
    WebhookHook,
)

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

_URI_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# A TOML bare key. Hook names must be one, so `[hooks.NAME]` never needs quotes.
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
# An HTTP header name is an RFC 9110 token.
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

_LIMIT_HINT = '(use a used ratio such as "85%" or free space such as "< 20GiB")'
_CLEAR_HINT = (
    '(use a ratio such as "2%" for used-ratio limits or a size such as "5GiB" for free-space '
    "limits)"
)

# Defaults that depend on other keys, so the models cannot state them as field defaults.
DEFAULT_CLEAR_RATIO = 0.02
DEFAULT_CLEAR_BYTES = 2**30
DEFAULT_EXEC_TIMEOUT = 30.0
DEFAULT_WEBHOOK_TIMEOUT = 10.0


# --- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hysteresis:
    """A threshold's `clear`: how far back past its limit a level must go before it clears.

    Exactly one of the two is set: `ratio` (points of used ratio, "2%") for used-ratio limits,
    `bytes` ("5GiB") for free-space limits.
    """

    ratio: float = 0.0
    bytes: int = 0


_K = TypeVar("_K")
_V = TypeVar("_V")


class FrozenTable(Mapping[_K, _V], Generic[_K, _V]):
    """A TOML table as an immutable, hashable mapping, so a frozen `Config` stays hashable.

    Validated as a dict, so errors keep their key paths (`hooks.pager.exec`).
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[_K, _V] | Iterable[tuple[_K, _V]] = ()) -> None:
        self._items: dict[_K, _V] = dict(items)

    def __getitem__(self, key: _K) -> _V:
        return self._items[key]

    def __iter__(self) -> Iterator[_K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        # Order-free, like the equality Mapping defines.
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        key_type, value_type = typing.get_args(source) or (Any, Any)
        as_dict = handler.generate_schema(dict[key_type, value_type])  # type: ignore[valid-type]

        def validate(value: Any, validate_dict: core_schema.ValidatorFunctionWrapHandler) -> Any:
            if isinstance(value, cls):
                return value
            return cls(validate_dict(value))

        return core_schema.no_info_wrap_validator_function(
            validate,
            as_dict,
            serialization=core_schema.plain_serializer_function_ser_schema(
                dict, return_schema=as_dict
            ),
        )


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


def parse_limit(text: str) -> Limit:
    """A threshold limit: a used ratio ("85%") or free space below a size ("< 20GiB")."""
    stripped = text.strip()
    if stripped.startswith("<"):
        size = parse_size(stripped[1:])
        if size == 0:
            raise ValueError(f"invalid limit {_quote(text)}: free space is never below 0 bytes")
        return FreeBelow(size)
    if stripped.endswith("%"):
        ratio = parse_ratio(stripped)
        if ratio == 0:
            raise ValueError(f"invalid limit {_quote(text)}: a used ratio must be more than 0%")
        return UsedRatio(ratio)
    if _SIZE_RE.fullmatch(stripped):
        # A bare size is ambiguous (used? free?); the "<" says "alarm when free space is below".
        raise ValueError(
            f'invalid limit {_quote(text)}: free space needs a "<": write "< {stripped}"'
        )
    raise ValueError(f"invalid limit {_quote(text)} {_LIMIT_HINT}")


def parse_clear(text: str) -> Hysteresis:
    """A threshold's `clear`: a ratio ("2%") for used-ratio limits, a size ("5GiB") for
    free-space limits; never zero."""
    stripped = text.strip()
    if stripped.startswith("<"):
        raise ValueError(
            f'invalid clear {_quote(text)}: a clear margin takes no "<"; '
            f"write {_quote(stripped[1:].strip())}"
        )
    if stripped.endswith("%"):
        clear = Hysteresis(ratio=parse_ratio(stripped))
    elif _SIZE_RE.fullmatch(stripped):
        clear = Hysteresis(bytes=parse_size(stripped))
    else:
        raise ValueError(f"invalid clear {_quote(text)} {_CLEAR_HINT}")
    if clear.ratio == 0 and clear.bytes == 0:
        raise ValueError(f"must be greater than 0 (got {_quote(text)})")
    return clear


# The inverse of the parsers above, for messages and dumps.


def _format_ratio(ratio: float) -> str:
    return f"{ratio * 100:.10g}%"


def _format_size(size: int) -> str:
    """The shortest exact spelling of a size: 21474836480 is "20GiB", 2000000 is "2MB"."""
    spellings = [
        f"{size // unit}{name}"
        for name, unit in sorted(_SIZE_UNIT_BYTES.items(), key=lambda item: -item[1])
        if size % unit == 0
    ]
    return min(spellings, key=len)


def _format_limit(limit: Limit) -> str:
    if isinstance(limit, UsedRatio):
        return _format_ratio(limit.ratio)
    return f"< {_format_size(limit.bytes)}"


def _format_clear(clear: Hysteresis) -> str:
    return _format_ratio(clear.ratio) if clear.ratio else _format_size(clear.bytes)


def _format_duration(seconds: float) -> str:
    """A duration as the config writes it: 5400.0 is "1h30m"."""
    remaining = round(seconds * 1000)
    parts = []
    for unit, unit_seconds in _DURATION_UNIT_SECONDS.items():
        count, remaining = divmod(remaining, round(unit_seconds * 1000))
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


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


def _glob(value: str) -> str:
    if not value:
        raise PydanticCustomError("glob", 'must not be empty (use "*" for every pool)')
    return value


def _limit(value: Any, info: ValidationInfo) -> Limit:
    if isinstance(value, UsedRatio | FreeBelow) and not _from_file(info):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "limit",
            'must be a quoted string such as "85%" or "< 20GiB" (got {value})',
            {"value": _toml_repr(value)},
        )
    try:
        return parse_limit(value)
    except ValueError as exc:
        raise PydanticCustomError("limit", str(exc)) from None


def _clear(value: Any, info: ValidationInfo) -> Hysteresis:
    if isinstance(value, Hysteresis) and not _from_file(info):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "clear",
            'must be a quoted string such as "2%" or "5GiB" (got {value})',
            {"value": _toml_repr(value)},
        )
    try:
        return parse_clear(value)
    except ValueError as exc:
        raise PydanticCustomError("clear", str(exc)) from None


def _hook_name(value: str) -> str:
    if _BARE_KEY_RE.fullmatch(value) is None:
        raise PydanticCustomError(
            "hook_name",
            'invalid hook name {name}: use letters, digits, "_" and "-"',
            {"name": _quote(value)},
        )
    return value


def _hook_references(names: tuple[str, ...]) -> tuple[str, ...]:
    first_index: dict[str, int] = {}
    duplicates: list[InitErrorDetails] = []
    for index, name in enumerate(names):
        first = first_index.setdefault(name, index)
        if first != index:
            duplicates.append(
                _error(
                    "hook_reference",
                    f"duplicate hook {_quote(name)} (see hooks[{first}])",
                    loc=(index,),
                    input=name,
                )
            )
    if duplicates:
        raise ValidationError.from_exception_data("hooks", duplicates)
    return names


def _exec_argv(argv: tuple[str, ...]) -> tuple[str, ...]:
    if not argv:
        raise PydanticCustomError(
            "exec",
            "must not be empty: give the program and its arguments, "
            'e.g. ["/usr/local/bin/page-oncall", "--severity", "high"]',
        )
    program = argv[0]
    # A relative path would depend on the daemon's working directory.
    if not program.strip() or ("/" in program and not program.startswith("/")):
        raise ValidationError.from_exception_data(
            "exec",
            [
                _error(
                    "exec",
                    "must be an absolute path or a command name looked up in PATH "
                    f"(got {_quote(program)})",
                    loc=(0,),
                    input=program,
                )
            ],
        )
    return argv


def _webhook_url(value: str) -> str:
    if not _is_http_url(value):
        raise PydanticCustomError(
            "webhook_url",
            "invalid webhook URL {url} (use an http:// or https:// URL such as "
            '"https://alerts.example.com/poolwatch")',
            {"url": _quote(value)},
        )
    return value


def _is_http_url(value: str) -> bool:
    if any(char.isspace() or not char.isprintable() for char in value):
        return False
    try:
        url = urllib.parse.urlsplit(value)
        _ = url.port  # raises ValueError on a port that is not a number from 0 to 65535
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.hostname)


def _header_name(value: str) -> str:
    if _HEADER_NAME_RE.fullmatch(value) is None:
        raise PydanticCustomError(
            "header", "invalid HTTP header name {name}", {"name": _quote(value)}
        )
    return value


def _header_value(value: str) -> str:
    # A line break would smuggle in further headers.
    if any(char in "\r\n\0" for char in value):
        raise PydanticCustomError("header", "must not contain line breaks or NUL characters")
    return value


PositiveDuration = Annotated[float, PlainValidator(_positive_duration)]
NonNegativeDuration = Annotated[float, PlainValidator(_non_negative_duration)]
ListenAddress = Annotated[str, AfterValidator(_listen_address)]
Glob = Annotated[str, AfterValidator(_glob)]
LimitValue = Annotated[Limit, PlainValidator(_limit), PlainSerializer(_format_limit)]
ClearValue = Annotated[Hysteresis, PlainValidator(_clear), PlainSerializer(_format_clear)]
HookName = Annotated[str, AfterValidator(_hook_name)]
HookReferences = Annotated[
    tuple[str, ...], BeforeValidator(_tuple_from_array), AfterValidator(_hook_references)
]


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
        """What identifies this connection inside poolwatch (in logs, the API, /readyz): its
        name, else its URI without credentials."""
        return self.name if self.name is not None else without_credentials(self.uri)

    def wants_read_only(self, config: Config) -> bool:
        """Whether to open the connection read-only: "auto" asks for write access only when
        `config.needs_write()`."""
        if self.read_only != "auto":
            return self.read_only
        return not config.needs_write()


class PollConfig(_Model):
    """How often poolwatch asks libvirt (`[poll]`); durations in seconds."""

    interval: PositiveDuration = 15.0
    volumes_interval: PositiveDuration = 60.0
    refresh_interval: NonNegativeDuration = 300.0
    call_timeout: PositiveDuration = 10.0
    max_volumes_per_pool: int = Field(default=1000, ge=0)


def _web_config_file(value: str) -> str:
    # Absolute, so the file does not depend on the daemon's working directory (/ under systemd);
    # --web.config.file makes a relative path absolute before it gets here.
    if not Path(value).is_absolute():
        raise PydanticCustomError(
            "web_config_file",
            "must be an absolute path, e.g. /etc/poolwatch/web-config.yml (got {path})",
            {"path": _quote(value)},
        )
    return value


class WebConfig(_Model):
    """The HTTP listener (`[web]`)."""

    listen: Annotated[
        tuple[ListenAddress, ...], BeforeValidator(_tuple_from_array), Field(min_length=1)
    ] = (DEFAULT_LISTEN,)
    # A web config file in Prometheus exporter-toolkit's format (TLS, basic auth, headers). Only
    # its path is checked here: the web layer reads the file and the certificates it names
    # (check-config and the daemon start do so before anything else runs).
    config_file: Annotated[str, AfterValidator(_web_config_file)] | None = None


class LogConfig(_Model):
    """Logging (`[log]`)."""

    level: LogLevel = "info"
    format: LogFormat = "auto"


class AutostartConfig(_Model):
    """One `[[autostart]]` rule: which pools poolwatch starts, and how it retries."""

    pool: Glob = "*"
    type: Glob | None = None
    mode: Literal["off", "boot", "enforce"] = "boot"
    ensure_flag: bool = False
    require_mount: bool = False
    max_attempts: int = Field(default=10, ge=0)
    backoff: PositiveDuration = 10.0
    backoff_max: PositiveDuration = 600.0
    hooks: HookReferences = ()

    # Checks across keys are field validators, reading the keys validated before them from
    # info.data (a key that failed is absent there), so they report with every other error.

    @field_validator("require_mount")
    @classmethod
    def _only_dir_pools_mount(cls, require_mount: bool, info: ValidationInfo) -> bool:
        pool_type = info.data.get("type")
        if require_mount and pool_type is not None and not fnmatch.fnmatchcase("dir", pool_type):
            raise PydanticCustomError(
                "inconsistent",
                'only applies to dir pools, and type {type} does not match "dir"',
                {"type": _quote(pool_type)},
            )
        return require_mount

    @field_validator("backoff_max")
    @classmethod
    def _backoff_max_not_below_backoff(cls, backoff_max: float, info: ValidationInfo) -> float:
        backoff = info.data.get("backoff")
        if backoff is not None and backoff_max < backoff:
            raise PydanticCustomError(
                "inconsistent",
                "must be at least backoff {backoff} (got {value})",
                {
                    "backoff": _quote(_format_duration(backoff)),
                    "value": _quote(_format_duration(backoff_max)),
                },
            )
        return backoff_max

    @model_validator(mode="after")
    def _backoff_within_default_max(self) -> Self:
        # Defaults are not validated, so _backoff_max_not_below_backoff misses this case.
        if "backoff_max" not in self.model_fields_set and self.backoff > self.backoff_max:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    _error(
                        "inconsistent",
                        "must be at most backoff_max, whose default is "
                        f"{_quote(_format_duration(self.backoff_max))}: set backoff_max too "
                        f"(got {_quote(_format_duration(self.backoff))})",
                        loc=("backoff",),
                        input=self.backoff,
                    )
                ],
            )
        return self

    @property
    def writes(self) -> bool:
        """Whether this rule may change libvirt (start pools, set autostart flags)."""
        return self.mode != "off" or self.ensure_flag

    def to_rule(self) -> AutostartRule:
        return AutostartRule(
            selector=Selector(self.pool, self.type),
            mode=AutostartMode(self.mode),
            ensure_flag=self.ensure_flag,
            require_mount=self.require_mount,
            max_attempts=self.max_attempts,
            backoff_initial=self.backoff,
            backoff_max=self.backoff_max,
            hooks=self.hooks,
        )


class ThresholdConfig(_Model):
    """One `[[threshold]]` rule: the space levels of the pools it selects."""

    pool: Glob = "*"
    type: Glob | None = None
    warning: LimitValue | None = None
    critical: LimitValue | None = None
    clear: ClearValue | None = None
    # `for` is a Python keyword; the field says what it is: how long a level must hold.
    hold: NonNegativeDuration = Field(default=0.0, alias="for")
    time_to_full_warning: PositiveDuration | None = None
    time_to_full_critical: PositiveDuration | None = None
    forecast_window: PositiveDuration = 6 * 3600.0
    hooks: HookReferences = ()

    # Checks across keys are field validators, reading the keys validated before them from
    # info.data (a key that failed is absent there), so they report with every other error.

    @field_validator("critical")
    @classmethod
    def _critical_beyond_warning(cls, critical: Limit | None, info: ValidationInfo) -> Limit | None:
        warning = info.data.get("warning")
        if warning is None or critical is None:
            return critical
        if type(warning) is not type(critical):
            message = (
                "must be the same kind as warning {warning}: both used ratios such as "
                '"85%" or both free space such as "< 20GiB" (got {value})'
            )
        elif isinstance(warning, UsedRatio) and isinstance(critical, UsedRatio):
            if critical.ratio > warning.ratio:
                return critical
            message = "must be higher than warning {warning} (got {value})"
        elif isinstance(warning, FreeBelow) and isinstance(critical, FreeBelow):
            if critical.bytes < warning.bytes:
                return critical
            message = (
                "must be less free space than warning {warning}, which warns first (got {value})"
            )
        raise PydanticCustomError(
            "inconsistent",
            message,
            {"warning": _quote(_format_limit(warning)), "value": _quote(_format_limit(critical))},
        )

    @field_validator("clear")
    @classmethod
    def _clear_fits_the_limits(
        cls, clear: Hysteresis | None, info: ValidationInfo
    ) -> Hysteresis | None:
        # The lowest limit decides: warning, else critical. When it is invalid, its own error
        # says what to fix first.
        if clear is None or "warning" not in info.data:
            return clear
        warning = info.data["warning"]
        if warning is None and "critical" not in info.data:
            return clear
        lowest = warning if warning is not None else info.data["critical"]
        context = {"value": _quote(_format_clear(clear))}
        if lowest is None:
            message = "has no effect without warning or critical (got {value})"
        elif isinstance(lowest, UsedRatio):
            if clear.ratio == 0:
                message = 'must be a ratio such as "2%" for used-ratio limits (got {value})'
            elif clear.ratio >= lowest.ratio:
                # The level would clear only below 0% used: never.
                message = (
                    "must be less than {name} {limit}: a clear of {value} reaches beyond the "
                    "threshold, so the level would never clear"
                )
                context["name"] = "warning" if warning is not None else "critical"
                context["limit"] = _quote(_format_limit(lowest))
            else:
                return clear
        elif clear.bytes == 0:
            message = 'must be a size such as "5GiB" for free-space limits (got {value})'
        else:
            return clear
        raise PydanticCustomError("inconsistent", message, context)

    @field_validator("time_to_full_critical")
    @classmethod
    def _critical_forecast_sooner(
        cls, critical: float | None, info: ValidationInfo
    ) -> float | None:
        warning = info.data.get("time_to_full_warning")
        if warning is not None and critical is not None and critical >= warning:
            raise PydanticCustomError(
                "inconsistent",
                "must be shorter than time_to_full_warning {warning} (got {value})",
                {
                    "warning": _quote(_format_duration(warning)),
                    "value": _quote(_format_duration(critical)),
                },
            )
        return critical

    @model_validator(mode="after")
    def _sets_a_level(self) -> Self:
        levels = (
            self.warning,
            self.critical,
            self.time_to_full_warning,
            self.time_to_full_critical,
        )
        if all(level is None for level in levels):
            raise PydanticCustomError(
                "inconsistent",
                "sets no level: give at least one of warning, critical, time_to_full_warning "
                "or time_to_full_critical",
            )
        return self

    def to_rule(self) -> ThresholdRule:
        clear_ratio, clear_bytes = 0.0, 0
        kind = self.warning if self.warning is not None else self.critical
        if isinstance(kind, UsedRatio):
            clear_ratio = DEFAULT_CLEAR_RATIO if self.clear is None else self.clear.ratio
        elif isinstance(kind, FreeBelow):
            clear_bytes = DEFAULT_CLEAR_BYTES if self.clear is None else self.clear.bytes
        return ThresholdRule(
            selector=Selector(self.pool, self.type),
            warning=self.warning,
            critical=self.critical,
            clear_ratio=clear_ratio,
            clear_bytes=clear_bytes,
            hold=self.hold,
            time_to_full_warning=self.time_to_full_warning,
            time_to_full_critical=self.time_to_full_critical,
            forecast_window=self.forecast_window,
            hooks=self.hooks,
        )


class HookConfig(_Model):
    """One `[hooks.NAME]` table: a command to run or a URL to post to."""

    exec: (
        Annotated[tuple[str, ...], BeforeValidator(_tuple_from_array), AfterValidator(_exec_argv)]
        | None
    ) = None
    webhook: Annotated[str, AfterValidator(_webhook_url)] | None = None
    # None: DEFAULT_EXEC_TIMEOUT or DEFAULT_WEBHOOK_TIMEOUT, by kind.
    timeout: PositiveDuration | None = None
    retries: int = Field(default=3, ge=0)
    # Often a credential (Authorization), so kept out of repr() and with it out of logs.
    headers: FrozenTable[
        Annotated[str, AfterValidator(_header_name)], Annotated[str, AfterValidator(_header_value)]
    ] = Field(default=FrozenTable(), repr=False)

    @field_validator("retries", "headers")
    @classmethod
    def _webhook_only(cls, value: Any, info: ValidationInfo) -> Any:
        # Runs only for keys the file sets; defaults are not validated.
        if (
            info.data.get("exec") is not None
            and "webhook" in info.data
            and info.data["webhook"] is None
        ):
            raise PydanticCustomError("inconsistent", "only applies to webhook hooks")
        return value

    @model_validator(mode="after")
    def _exec_or_webhook(self) -> Self:
        if self.exec is None and self.webhook is None:
            raise PydanticCustomError(
                "inconsistent", "needs exec (a command to run) or webhook (a URL to post to)"
            )
        if self.exec is not None and self.webhook is not None:
            raise PydanticCustomError(
                "inconsistent",
                "has both exec and webhook; a hook is one or the other, so define two hooks",
            )
        return self

    def to_hook(self, name: str) -> Hook:
        if self.exec is not None:
            timeout = DEFAULT_EXEC_TIMEOUT if self.timeout is None else self.timeout
            return ExecHook(name=name, argv=self.exec, timeout=timeout)
        assert self.webhook is not None  # _exec_or_webhook guarantees it
        return WebhookHook(
            name=name,
            url=self.webhook,
            timeout=DEFAULT_WEBHOOK_TIMEOUT if self.timeout is None else self.timeout,
            retries=self.retries,
            headers=tuple(self.headers.items()),
        )


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
    # In file order: the first matching rule applies.
    autostart: Annotated[tuple[AutostartConfig, ...], BeforeValidator(_tuple_from_array)] = ()
    thresholds: Annotated[tuple[ThresholdConfig, ...], BeforeValidator(_tuple_from_array)] = Field(
        default=(), validation_alias="threshold"
    )
    hooks: FrozenTable[HookName, HookConfig] = FrozenTable()

    @model_validator(mode="wrap")
    @classmethod
    def _hooks_are_defined(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        # Checked on the raw input, so unknown hook names are reported together with every
        # other problem in the file, not only once the rest is valid.
        unknown = _unknown_hook_references(data)
        try:
            config = handler(data)
        except ValidationError as exc:
            if not unknown:
                raise
            errors = [_reraisable(error) for error in exc.errors(include_url=False)]
            raise ValidationError.from_exception_data(cls.__name__, errors + unknown) from None
        if unknown:
            raise ValidationError.from_exception_data(cls.__name__, unknown)
        return config

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

    def needs_write(self) -> bool:
        """Whether poolwatch writes to libvirt: refreshing pools, or an autostart rule that
        starts pools or sets their autostart flag. read_only = "auto" connections follow it."""
        return self.poll.refresh_interval > 0 or any(rule.writes for rule in self.autostart)

    def threshold_rules(self) -> tuple[ThresholdRule, ...]:
        """The `[[threshold]]` rules in file order (the first matching rule applies)."""
        return tuple(threshold.to_rule() for threshold in self.thresholds)

    def autostart_rules(self) -> tuple[AutostartRule, ...]:
        """The `[[autostart]]` rules in file order (the first matching rule applies)."""
        return tuple(rule.to_rule() for rule in self.autostart)

    def hook_definitions(self) -> dict[str, Hook]:
        """The `[hooks.NAME]` tables by name."""
        return {name: hook.to_hook(name) for name, hook in self.hooks.items()}

    def with_overrides(
        self,
        *,
        listen: Sequence[str] | None = None,
        web_config_file: str | None = None,
        log_level: str | None = None,
        log_format: str | None = None,
        libvirt_uri: str | None = None,
        source: str = "overrides",
    ) -> Config:
        """A new config with these values replaced (None keeps the current one), validated by the
        same rules as the file; `libvirt_uri` replaces all connections with one unnamed one, and
        `web_config_file=""` removes the web config file."""
        # The policy sections go back in as the validated models they are: flags never change
        # them, and their dump is not TOML (`for` is dumped as `hold`).
        data = self.model_dump(exclude={"autostart", "thresholds", "hooks"})
        data.update(autostart=self.autostart, threshold=self.thresholds, hooks=self.hooks)
        if listen is not None:
            data["web"]["listen"] = list(listen)
        if web_config_file is not None:
            data["web"]["config_file"] = web_config_file or None
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


def _error(kind: str, message: str, *, loc: tuple[int | str, ...], input: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=input)


def _reraisable(error: ErrorDetails) -> InitErrorDetails:
    """An error from a ValidationError in the form that builds a new one."""
    kind = error["type"]
    if kind not in _PYDANTIC_ERROR_TYPES:
        return _error(kind, error["msg"], loc=error["loc"], input=error["input"])
    details = InitErrorDetails(type=kind, loc=error["loc"], input=error["input"])
    if "ctx" in error:
        details["ctx"] = error["ctx"]
    return details


def _unknown_hook_references(data: Any) -> list[InitErrorDetails]:
    """Errors for rules that name a hook without a [hooks.NAME] table, from unvalidated input."""
    if not isinstance(data, Mapping):
        return []
    hooks = data.get("hooks", {})
    if not isinstance(hooks, Mapping):
        return []  # reported as "must be a table"
    defined = sorted(str(name) for name in hooks)
    known = ", ".join(defined) if defined else "none"
    errors: list[InitErrorDetails] = []
    for section in ("autostart", "threshold", "thresholds"):
        rules = data.get(section)
        if not isinstance(rules, list | tuple):
            continue
        for index, rule in enumerate(rules):
            if isinstance(rule, AutostartConfig | ThresholdConfig):
                names: Any = rule.hooks
            elif isinstance(rule, Mapping):
                names = rule.get("hooks")
            else:
                continue
            if not isinstance(names, list | tuple):
                continue
            errors.extend(
                _error(
                    "hook_reference",
                    f"unknown hook {_quote(name)} (defined: {known})",
                    loc=(section, index, "hooks", position),
                    input=name,
                )
                for position, name in enumerate(names)
                if isinstance(name, str) and name not in hooks
            )
    return errors


# --- loading ----------------------------------------------------------------------------------


def parse_config(text: str, *, source: str) -> Config:
    """Validate TOML text; `source` names it in error messages (usually the file path)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"TOML syntax error: {exc}"]) from None
    try:
        # The file spells tables by their TOML keys only: [[connections]] is a typo, not a synonym.
        return Config.model_validate(data, context=_FROM_FILE, by_alias=True, by_name=False)
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
        "glob",
        "limit",
        "clear",
        "hook_name",
        "hook_reference",
        "exec",
        "webhook_url",
        "header",
        "inconsistent",
        "web_config_file",
    }
)
# Pydantic's own error types can be raised again by name; any other needs a PydanticCustomError.
_PYDANTIC_ERROR_TYPES = frozenset(typing.get_args(core_schema.ErrorType))
# Keys that hold [[arrays of tables]]: a single-bracket [table] there is a common slip.
_ARRAYS_OF_TABLES = frozenset({"connection", "autostart", "threshold"})


def _describe_errors(exc: ValidationError) -> list[str]:
    return [_describe(error) for error in exc.errors(include_url=False)]


def _describe(error: ErrorDetails) -> str:
    path = _key_path(error["loc"])
    message = _message(error)
    return f"{path}: {message}" if path else message


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    loc = error["loc"]
    if (
        kind == "tuple_type"
        and len(loc) == 1
        and loc[0] in _ARRAYS_OF_TABLES
        and isinstance(error["input"], dict)
    ):
        return f"must be an array of tables: write [[{loc[0]}]], not [{loc[0]}]"
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
        elif part == "[key]":
            # Pydantic's marker for an error in a table's key rather than its value: the path
            # up to here already names the key.
            continue
        else:
            # As TOML writes keys: bare when it can, quoted otherwise (`hooks."my hook"`).
            key = part if _BARE_KEY_RE.fullmatch(part) else _quote(part)
            path += f".{key}" if path else key
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
