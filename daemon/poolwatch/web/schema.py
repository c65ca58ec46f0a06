"""The web config file's schema: exporter-toolkit's keys as pydantic models, with validators
that speak the file's language (Go's durations, Go's zero values, bcrypt hashes).

A validator's complaint is a `PydanticCustomError` of type "web_config", whose text
`poolwatch.web.webconfig` shows as it is; no message repeats a hash or a key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator
from pydantic_core import PydanticCustomError

from poolwatch.config.messages import quote
from poolwatch.web.tls import CIPHER_SUITES, CLIENT_AUTH, CURVES, TLS_VERSIONS

_UNSUPPORTED_CLIENT_AUTH = (
    "is not supported: Python's ssl verifies every client certificate it requires, so "
    '"any certificate" cannot be had; use RequireAndVerifyClientCert with client_ca_file'
)
_UNSUPPORTED_CLIENT_AUTH_TYPES = frozenset({"RequireAnyClientCert", "RequireClientCert"})
_BCRYPT_HASH_RE = re.compile(r"\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}")
_BCRYPT_HINT = "generate one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"
# Go's time.ParseDuration units; it takes both the micro sign and the Greek mu for "µs".
_GO_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(" + "|".join(_GO_DURATION_UNITS) + ")"
_GO_DURATION_RE = re.compile(f"(?:{_GO_DURATION_PART})+")
_GO_DURATION_PART_RE = re.compile(_GO_DURATION_PART)


def _fail(message: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError("web_config", message, context)


def _none_is_empty(value: Any) -> Any:
    # `tls_server_config:` with nothing below is YAML null; Go reads it as an empty section.
    return {} if value is None else value


def _table(value: Any) -> Any:
    """A YAML mapping whose keys are names: null is empty, and a key YAML reads as a number or
    boolean is the name as written (Go's yaml does the same for map[string] keys)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {
            key if isinstance(key, str) else _yaml_scalar_text(key): item
            for key, item in value.items()
        }
    return value


def _yaml_scalar_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value  # anything else fails as "must be a string"


def _empty_is_unset(value: Any) -> Any:
    # Go's zero value: `cert_file: ""` is the same as no cert_file.
    return None if value == "" else value


def _list_to_tuple(value: Any) -> Any:
    # Strict mode takes tuples for tuple fields; YAML sequences arrive as lists.
    return tuple(value) if isinstance(value, list) else value


def _choice(value: Any, choices: Mapping[str, object], what: str, hint: str = "") -> str:
    if not isinstance(value, str):
        raise _fail("must be a string")
    if value not in choices:
        if not hint:
            names = list(choices)
            hint = "use " + ", ".join(names[:-1]) + " or " + names[-1]
        raise _fail("unknown {what} {value} ({hint})", what=what, value=quote(value), hint=hint)
    return value


def _tls_version(value: Any) -> str:
    return _choice(value, TLS_VERSIONS, "TLS version")


def _client_auth_type(value: Any) -> str:
    if value in _UNSUPPORTED_CLIENT_AUTH_TYPES:
        raise _fail("{value} " + _UNSUPPORTED_CLIENT_AUTH, value=value)
    return _choice(value, CLIENT_AUTH, "client_auth_type")


def _cipher_suite(value: Any) -> str:
    return _choice(
        value,
        CIPHER_SUITES,
        "cipher suite",
        "use a name that Go's tls.CipherSuites() lists, such as "
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    )


def _curve(value: Any) -> str:
    return _choice(value, CURVES, "curve")


def _one_curve(curves: tuple[str, ...]) -> tuple[str, ...]:
    if len(curves) > 1:
        raise _fail(
            "lists {count} curves, but Python's ssl can restrict the key exchange only to a "
            "single curve: keep one, or remove the key to allow every curve",
            count=len(curves),
        )
    return curves


def _go_duration(value: Any) -> float:
    # Go's yaml reads an integer into a time.Duration as nanoseconds, and a string with
    # time.ParseDuration.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value * 1e-9
    if not isinstance(value, str) or (_GO_DURATION_RE.fullmatch(value) is None and value != "0"):
        shown = quote(value) if isinstance(value, str) else "a non-string"
        raise _fail(
            'invalid duration {value} (use Go\'s form, e.g. "100ms", "1s", "1m30s")', value=shown
        )
    return sum(
        float(number) * _GO_DURATION_UNITS[unit]
        for number, unit in _GO_DURATION_PART_RE.findall(value)
    )


def _user_name(value: str) -> str:
    if ":" in value:
        # Basic auth splits "user:password" at the first colon.
        raise _fail('user names cannot contain ":"')
    return value


def _bcrypt_hash(value: str) -> str:
    # The value is a secret of sorts: never part of the message.
    match = _BCRYPT_HASH_RE.fullmatch(value)
    if match is None:
        raise _fail("is not a bcrypt hash ({hint})", hint=_BCRYPT_HINT)
    if not 4 <= int(match["cost"]) <= 31:
        raise _fail("has a bcrypt cost outside 4 to 31 ({hint})", hint=_BCRYPT_HINT)
    return value


OptionalText = Annotated[str | None, BeforeValidator(_empty_is_unset)]
TLSVersionName = Annotated[str, PlainValidator(_tls_version)]
ClientAuthType = Annotated[str, PlainValidator(_client_auth_type)]
CipherSuiteName = Annotated[str, PlainValidator(_cipher_suite)]
CurveName = Annotated[str, PlainValidator(_curve)]
UserName = Annotated[str, AfterValidator(_user_name)]
BcryptHash = Annotated[str, AfterValidator(_bcrypt_hash)]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class TLSServerConfig(_Model):
    """`tls_server_config`: unset keys are None, so "set at all" can be told apart."""

    cert: OptionalText = None
    key: OptionalText = Field(default=None, repr=False)
    client_ca: OptionalText = None
    cert_file: OptionalText = None
    key_file: OptionalText = None
    client_auth_type: Annotated[ClientAuthType | None, BeforeValidator(_empty_is_unset)] = None
    client_ca_file: OptionalText = None
    client_allowed_sans: Annotated[tuple[str, ...] | None, BeforeValidator(_list_to_tuple)] = None
    min_version: Annotated[TLSVersionName | None, BeforeValidator(_empty_is_unset)] = None
    max_version: Annotated[TLSVersionName | None, BeforeValidator(_empty_is_unset)] = None
    cipher_suites: Annotated[
        tuple[CipherSuiteName, ...] | None, BeforeValidator(_list_to_tuple)
    ] = None
    prefer_server_cipher_suites: bool | None = None
    curve_preferences: Annotated[
        tuple[CurveName, ...] | None, BeforeValidator(_list_to_tuple), AfterValidator(_one_curve)
    ] = None


class HTTPServerConfig(_Model):
    """`http_server_config`."""

    # aiohttp speaks HTTP/1.1 only; accepted so node_exporter's file loads.
    http2: bool = True
    headers: Annotated[dict[str, str], BeforeValidator(_table)] = Field(default_factory=dict)


class RateLimitConfig(_Model):
    """`rate_limit`: a token bucket, one token per `interval`, at most `burst` saved."""

    interval: Annotated[float, PlainValidator(_go_duration)] = 0.0
    burst: int = Field(default=0, ge=0)


class WebConfigFile(_Model):
    """The whole file."""

    tls_server_config: Annotated[TLSServerConfig, BeforeValidator(_none_is_empty)] = Field(
        default_factory=TLSServerConfig
    )
    http_server_config: Annotated[HTTPServerConfig, BeforeValidator(_none_is_empty)] = Field(
        default_factory=HTTPServerConfig
    )
    rate_limit: Annotated[RateLimitConfig, BeforeValidator(_none_is_empty)] = Field(
        default_factory=RateLimitConfig
    )
    basic_auth_users: Annotated[dict[UserName, BcryptHash], BeforeValidator(_table)] = Field(
        default_factory=dict, repr=False
    )
