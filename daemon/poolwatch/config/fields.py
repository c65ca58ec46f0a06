"""The config's field types: each an annotated type whose validator says what is wrong in the
operator's words, and the base model every table shares.

Validators raise `PydanticCustomError`s of the types `messages.TOML` passes through as they
are, with messages that already quote the offending value.
"""

from __future__ import annotations

import math
import re
import typing
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError, core_schema

from poolwatch.addresses import parse_listen_address
from poolwatch.config.messages import BARE_KEY_RE, quote, toml_repr
from poolwatch.config.units import (
    DURATION_HINT,
    MAX_DURATION,
    Hysteresis,
    format_clear,
    format_duration,
    format_limit,
    format_size,
    parse_clear,
    parse_duration,
    parse_limit,
    parse_size,
    too_long,
)
from poolwatch.policies.rules import FreeBelow, Limit, UsedRatio

ReadOnly = bool | Literal["auto"]

# Marks validation of file contents: there a duration must be a string with a unit, while Python
# callers (tests, overrides re-validating a dumped config) may pass seconds as numbers.
FROM_FILE: dict[str, bool] = {"from_file": True}

_URI_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# An HTTP header name is an RFC 9110 token.
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Pydantic's own error types can be raised again by name; any other needs a PydanticCustomError.
_PYDANTIC_ERROR_TYPES = frozenset(typing.get_args(core_schema.ErrorType))

_T = TypeVar("_T")
_K = TypeVar("_K")
_V = TypeVar("_V")


class Model(BaseModel):
    """A config table: strict types, no unknown keys, frozen (and so hashable)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def custom_error(
    kind: str, message: str, *, loc: tuple[int | str, ...], input: Any
) -> InitErrorDetails:
    """One error for `ValidationError.from_exception_data`, at `loc` below the raising field."""
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=input)


def reraisable(error: ErrorDetails) -> InitErrorDetails:
    """An error from a ValidationError in the form that builds a new one."""
    kind = error["type"]
    if kind not in _PYDANTIC_ERROR_TYPES:
        return custom_error(kind, error["msg"], loc=error["loc"], input=error["input"])
    details = InitErrorDetails(type=kind, loc=error["loc"], input=error["input"])
    if "ctx" in error:
        details["ctx"] = error["ctx"]
    return details


def _from_file(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get("from_file"))


# --- containers -------------------------------------------------------------------------------


def _tuple_from_array(value: Any) -> Any:
    # TOML arrays arrive as lists, and strict mode only takes tuples for tuple fields; tuples
    # keep the frozen config hashable and really immutable.
    return tuple(value) if isinstance(value, list) else value


def pairs_as_dict(value: Any) -> Any:
    """A `Table` value passed back in (a Python caller's (key, value) pairs) as the dict a TOML
    table arrives as; anything else unchanged."""
    if isinstance(value, tuple) and all(
        isinstance(item, tuple) and len(item) == 2 for item in value
    ):
        return dict(value)
    return value


def _table_schema(source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    # Validated as a dict, so errors keep their key paths (`hooks.pager.exec`); kept as a tuple of
    # pairs, so the frozen config stays hashable; dumped as the table it was.
    pair = typing.get_args(source)[0]
    key_type, value_type = typing.get_args(pair)
    as_dict = handler.generate_schema(dict[key_type, value_type])  # type: ignore[valid-type]

    def validate(value: Any, validate_dict: core_schema.ValidatorFunctionWrapHandler) -> Any:
        return tuple(validate_dict(pairs_as_dict(value)).items())

    return core_schema.no_info_wrap_validator_function(
        validate,
        as_dict,
        serialization=core_schema.plain_serializer_function_ser_schema(dict, return_schema=as_dict),
    )


# A TOML array, held as a tuple.
Array = Annotated[tuple[_T, ...], BeforeValidator(_tuple_from_array)]
# A TOML table with names for keys, held as (key, value) pairs in file order.
Table = Annotated[tuple[tuple[_K, _V], ...], GetPydanticSchema(_table_schema)]


# --- durations --------------------------------------------------------------------------------


def _duration(value: Any, info: ValidationInfo, *, allow_zero: bool, minimum: float = 0.0) -> float:
    if isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise PydanticCustomError("duration", str(exc)) from None
    elif _from_file(info) or isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError(
            "duration",
            "invalid duration {value}: must be a quoted string with a unit " + DURATION_HINT,
            {"value": toml_repr(value)},
        )
    elif not math.isfinite(value) or value < 0:
        raise PydanticCustomError("duration", "invalid duration {value}", {"value": value})
    elif value > MAX_DURATION:
        raise PydanticCustomError("duration", too_long(value))
    else:
        seconds = float(value)
    if seconds == 0 and not allow_zero:
        raise PydanticCustomError(
            "duration", "must be greater than 0 (got {value})", {"value": toml_repr(value)}
        )
    # Minimums bound what an operator's file can ask of libvirtd ("1ms" polled 790 times a
    # second); Python callers (tests, the demo) may poll faster.
    if _from_file(info) and 0 < seconds < minimum:
        at_least = format_duration(minimum)
        raise PydanticCustomError(
            "duration",
            "must be at least {minimum}{or_zero} (got {value})",
            {
                "minimum": quote(at_least),
                "or_zero": ', or "0s" to turn it off' if allow_zero else "",
                "value": toml_repr(value),
            },
        )
    return seconds


def _positive_duration(value: Any, info: ValidationInfo) -> float:
    return _duration(value, info, allow_zero=False)


def _non_negative_duration(value: Any, info: ValidationInfo) -> float:
    return _duration(value, info, allow_zero=True)


def duration_at_least(minimum: float, *, allow_zero: bool = False) -> PlainValidator:
    """Validates a duration of at least `minimum` seconds in a file (0 too, with `allow_zero`):
    `Annotated[float, duration_at_least(1.0)]`."""

    def validate(value: Any, info: ValidationInfo) -> float:
        return _duration(value, info, allow_zero=allow_zero, minimum=minimum)

    return PlainValidator(validate)


PositiveDuration = Annotated[float, PlainValidator(_positive_duration)]
NonNegativeDuration = Annotated[float, PlainValidator(_non_negative_duration)]


# --- connections, web -------------------------------------------------------------------------


def _read_only(value: Any) -> ReadOnly:
    if isinstance(value, bool):
        return value
    if value == "auto":
        return "auto"
    raise PydanticCustomError(
        "read_only",
        'must be "auto", true or false (got {value})',
        {"value": toml_repr(value)},
    )


def _connection_name(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("connection_name", "must not be empty")
    return value


def _libvirt_uri(value: str) -> str:
    if _URI_SCHEME_RE.match(value) is None:
        raise PydanticCustomError(
            "libvirt_uri",
            'invalid libvirt URI {uri} (use e.g. "qemu:///system", "qemu+ssh://root@kvm02/system")',
            {"uri": quote(value)},
        )
    return value


def _listen_address(value: str) -> str:
    try:
        parse_listen_address(value)
    except ValueError as exc:
        raise PydanticCustomError(
            "listen_address",
            'invalid listen address {address}: {reason} (use "host:port", "[::1]:port" or ":port")',
            {"address": quote(value), "reason": str(exc)},
        ) from None
    return value


def _web_config_file(value: str) -> str:
    # Absolute, so the file does not depend on the daemon's working directory (/ under systemd);
    # --web.config.file makes a relative path absolute before it gets here.
    if not Path(value).is_absolute():
        raise PydanticCustomError(
            "web_config_file",
            "must be an absolute path, e.g. /etc/poolwatch/web-config.yml (got {path})",
            {"path": quote(value)},
        )
    return value


ReadOnlyValue = Annotated[ReadOnly, PlainValidator(_read_only)]
ConnectionName = Annotated[str, AfterValidator(_connection_name)]
LibvirtURI = Annotated[str, AfterValidator(_libvirt_uri)]
ListenAddress = Annotated[str, AfterValidator(_listen_address)]
WebConfigFile = Annotated[str, AfterValidator(_web_config_file)]


# --- policy rules -----------------------------------------------------------------------------


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
            {"value": toml_repr(value)},
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
            {"value": toml_repr(value)},
        )
    try:
        return parse_clear(value)
    except ValueError as exc:
        raise PydanticCustomError("clear", str(exc)) from None


def _free_above(value: Any, info: ValidationInfo) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and not _from_file(info):
        return value
    text = value.strip() if isinstance(value, str) else ""
    if not text.startswith(">"):
        raise PydanticCustomError(
            "free_above",
            'must be a quoted string such as "> 2GiB" (got {value})',
            {"value": toml_repr(value)},
        )
    try:
        return parse_size(text[1:])
    except ValueError as exc:
        raise PydanticCustomError("free_above", str(exc)) from None


def _format_free_above(size: int) -> str:
    return f"> {format_size(size)}"


def _hook_references(names: tuple[str, ...]) -> tuple[str, ...]:
    first_index: dict[str, int] = {}
    duplicates: list[InitErrorDetails] = []
    for index, name in enumerate(names):
        first = first_index.setdefault(name, index)
        if first != index:
            duplicates.append(
                custom_error(
                    "hook_reference",
                    f"duplicate hook {quote(name)} (see hooks[{first}])",
                    loc=(index,),
                    input=name,
                )
            )
    if duplicates:
        raise ValidationError.from_exception_data("hooks", duplicates)
    return names


Glob = Annotated[str, AfterValidator(_glob)]
LimitValue = Annotated[Limit, PlainValidator(_limit), PlainSerializer(format_limit)]
ClearValue = Annotated[Hysteresis, PlainValidator(_clear), PlainSerializer(format_clear)]
HookReferences = Annotated[Array[str], AfterValidator(_hook_references)]
FreeAboveValue = Annotated[int, PlainValidator(_free_above), PlainSerializer(_format_free_above)]


# --- hooks ------------------------------------------------------------------------------------


def _hook_name(value: str) -> str:
    if BARE_KEY_RE.fullmatch(value) is None:
        raise PydanticCustomError(
            "hook_name",
            'invalid hook name {name}: use letters, digits, "_" and "-"',
            {"name": quote(value)},
        )
    return value


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
                custom_error(
                    "exec",
                    "must be an absolute path or a command name looked up in PATH "
                    f"(got {quote(program)})",
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
            {"url": quote(value)},
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
            "header", "invalid HTTP header name {name}", {"name": quote(value)}
        )
    return value


def _header_value(value: str) -> str:
    # A line break would smuggle in further headers.
    if any(char in "\r\n\0" for char in value):
        raise PydanticCustomError("header", "must not contain line breaks or NUL characters")
    return value


HookName = Annotated[str, AfterValidator(_hook_name)]
ExecArgv = Annotated[Array[str], AfterValidator(_exec_argv)]
WebhookURL = Annotated[str, AfterValidator(_webhook_url)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
