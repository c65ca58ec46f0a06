"""The web config file (`--web.config.file`, `[web] config_file`) and the protection it sets up:
TLS, basic auth against bcrypt hashes, extra response headers and a request rate limit.

The format is Prometheus exporter-toolkit's (its docs/web-configuration.md), so the file that
node_exporter takes works here unchanged. Where Python's ssl module cannot do what Go's
crypto/tls does, poolwatch rejects the value with a message that says so rather than ignoring it:

- `client_auth_type: RequireAnyClientCert` (and its old name `RequireClientCert`): OpenSSL
  verifies every certificate it requires, so "any certificate, unverified" cannot be had; use
  `RequireAndVerifyClientCert` with `client_ca_file`.
- `curve_preferences` with more than one curve: Python's ssl restricts the key exchange to a
  single curve or none.
- `VerifyClientCertIfGiven` and `RequireAndVerifyClientCert` need `client_ca_file` (or
  `client_ca`): Go would fall back to the system's CAs, which would let any certificate a public
  CA signed in.
- TLS settings without a certificate (`min_version` alone, say), where Go silently serves plain
  HTTP.

Accepted with a documented difference:

- `RequestClientCert` behaves as `NoClientCert`: Go asks for a certificate it then never checks,
  and poolwatch uses no unverified certificate for anything.
- TLS 1.3 names in `cipher_suites` are accepted and, as in Go, have no effect: TLS 1.3 suites are
  not configurable. `min_version: TLS10`/`TLS11` is honoured, but OpenSSL 3 refuses those
  versions at its default security level anyway.
- `http2` is accepted; aiohttp serves HTTP/1.1 only.
- `client_allowed_sans` is checked per request after the handshake (a client whose certificate
  matches none gets 403 on every path), where Go aborts the handshake.

`WebSecurity` is the live state of one server. It re-reads the file, and the certificate, key
and CA files it names, when any of them changes (and on SIGHUP); a reload that fails leaves the
running settings in place. New TLS connections switch to the newest `SSLContext` in the SNI
callback, which OpenSSL runs for every handshake, so renewed certificates and changed client CAs
apply without a restart while the listening sockets keep their original context.

Basic auth runs bcrypt off the event loop, in a small thread pool of its own, with a bounded
number of checks queued or running; beyond that a request gets 429 at once, so a flood of bad
logins costs at most `BCRYPT_WORKERS` cores and a fixed amount of memory. Successful checks are
cached for a short time, keyed by an HMAC of user, stored hash and password, and an unknown user
costs a bcrypt check against a dummy hash of the same cost as the users' own.

This module knows nothing of aiohttp: `poolwatch.web.app` turns a `WebSecurity` into
middleware and a TLS listener. Nothing here logs or repeats a password, hash or private key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import concurrent.futures
import contextlib
import enum
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import ssl
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import bcrypt
import structlog
import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from poolwatch.errors import ConfigError

log = structlog.get_logger()

# How often the file and the files it names are checked for changes (stat only, no reading).
CHECK_INTERVAL = 5.0
# bcrypt checks that run at once; each takes one core for ~50-250 ms at the usual costs.
BCRYPT_WORKERS = 2
# Checks queued or running at most; a request beyond this gets 429 without waiting. With two
# workers at cost 10 the last one in the queue waits about half a second.
MAX_PENDING_CHECKS = 16
# Successful logins remembered: a Prometheus server scraping every 15 s then costs one bcrypt
# check a minute, and a changed or removed password stops working within a minute at the latest
# (at once on reload, which clears the cache).
AUTH_CACHE_SIZE = 100
AUTH_CACHE_TTL = 60.0
# bcrypt only reads 72 bytes; longer passwords are refused rather than silently truncated.
MAX_PASSWORD_BYTES = 72

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_TLS_VERSION_NAMES = {version: name for name, version in _TLS_VERSIONS.items()}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNSUPPORTED_CLIENT_AUTH = (
    "is not supported: Python's ssl verifies every client certificate it requires, so "
    '"any certificate" cannot be had; use RequireAndVerifyClientCert with client_ca_file'
)
_UNSUPPORTED_CLIENT_AUTH_TYPES = frozenset({"RequireAnyClientCert", "RequireClientCert"})
# Go's names (the ones tls.CipherSuites() lists, which exporter-toolkit accepts) to OpenSSL's.
# None: a TLS 1.3 suite, which neither Go nor OpenSSL's cipher list lets one configure.
_CIPHER_SUITES: dict[str, str | None] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
}
_CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}
# exporter-toolkit allows only these headers, some with a fixed set of values (None: any), to
# keep the Prometheus ecosystem consistent.
_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
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


class WebConfigError(ConfigError):
    """The web config file cannot be used; `errors` holds one `key.path: message` per problem."""

    def __str__(self) -> str:
        count = len(self.errors)
        noun = "error" if count == 1 else "errors"
        lines = [f"invalid web config file {self.source} ({count} {noun}):"]
        lines.extend(f"  {error}" for error in self.errors)
        return "\n".join(lines)

    def one_line(self) -> str:
        return f"invalid web config file {self.source}: " + "; ".join(self.errors)


# --- the file's schema ------------------------------------------------------------------------


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


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
        raise _fail("unknown {what} {value} ({hint})", what=what, value=_quote(value), hint=hint)
    return value


def _tls_version(value: Any) -> str:
    return _choice(value, _TLS_VERSIONS, "TLS version")


def _client_auth_type(value: Any) -> str:
    if value in _UNSUPPORTED_CLIENT_AUTH_TYPES:
        raise _fail("{value} " + _UNSUPPORTED_CLIENT_AUTH, value=value)
    return _choice(value, _CLIENT_AUTH, "client_auth_type")


def _cipher_suite(value: Any) -> str:
    return _choice(
        value,
        _CIPHER_SUITES,
        "cipher suite",
        "use a name that Go's tls.CipherSuites() lists, such as "
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    )


def _curve(value: Any) -> str:
    return _choice(value, _CURVES, "curve")


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
        shown = _quote(value) if isinstance(value, str) else "a non-string"
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


# --- what the file sets up --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """TLS as loaded: PEM contents already read, names already mapped to OpenSSL's."""

    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    client_ca_pem: str | None = field(repr=False)
    client_auth_type: str
    verify_mode: ssl.VerifyMode
    minimum_version: ssl.TLSVersion
    maximum_version: ssl.TLSVersion
    ciphers: str | None
    prefer_server_ciphers: bool
    curve: str | None
    allowed_sans: frozenset[str] | None
    # Which key each PEM came from ("cert" or "cert_file", ...), for messages.
    cert_key: str = "cert_file"
    key_key: str = "key_file"
    client_ca_key: str = "client_ca_file"


@dataclass(frozen=True, slots=True)
class RateLimit:
    interval: float  # seconds per request, on average
    burst: int


@dataclass(frozen=True, slots=True)
class WebSettings:
    """A loaded, valid web config file."""

    path: Path
    tls: TLSSettings | None
    users: Mapping[str, bytes] = field(repr=False)
    headers: tuple[tuple[str, str], ...]
    rate_limit: RateLimit | None
    http2: bool

    def summary(self) -> dict[str, object]:
        """What an operator wants to see in the log after a (re)load; no secrets."""
        tls = self.tls
        return {
            "path": str(self.path),
            "tls": tls is not None,
            "client_auth_type": None if tls is None else tls.client_auth_type,
            "min_version": None if tls is None else _TLS_VERSION_NAMES[tls.minimum_version],
            "basic_auth_users": len(self.users),
            "headers": [name for name, _ in self.headers],
            "rate_limit": self.rate_limit is not None,
        }


# (st_dev, st_ino, st_size, st_mtime_ns) of a file as read, None when it could not be read.
FileStamp = tuple[int, int, int, int] | None


def _stamp_of(stat: os.stat_result) -> FileStamp:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _current_stamp(path: Path) -> FileStamp:
    try:
        return _stamp_of(path.stat())
    except OSError:
        return None


def _read(path: Path, stamps: dict[Path, FileStamp]) -> bytes:
    """The file's bytes; its stamp is taken from the same open file, so a change that lands
    while it is read shows as a change at the next check."""
    stamps[path] = None
    with path.open("rb") as file:
        stamps[path] = _stamp_of(os.fstat(file.fileno()))
        return file.read()


def load_web_config(path: Path) -> WebSettings:
    """Read and validate a web config file, including the certificates and keys it names.

    Raises WebConfigError listing every problem with its key path.
    """
    settings, _ = _load(path, {})
    return settings


def _load(path: Path, stamps: dict[Path, FileStamp]) -> tuple[WebSettings, ssl.SSLContext | None]:
    """The settings and, with TLS, a complete server SSLContext. `stamps` receives every file
    that was read or tried, also when loading fails, so a fix to any of them is noticed."""
    source = str(path)
    try:
        text = _read(path, stamps).decode("utf-8")
    except OSError as exc:
        raise WebConfigError(source, [f"cannot read the file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise WebConfigError(source, [f"the file is not valid UTF-8: {exc}"]) from None
    data = _parse_yaml(text, source)
    try:
        config = WebConfigFile.model_validate(data)
    except PydanticValidationError as exc:
        raise WebConfigError(
            source, [_describe(error) for error in exc.errors(include_url=False)]
        ) from None
    errors: list[str] = []
    tls = _tls_settings(config.tls_server_config, path.parent, stamps, errors)
    headers = _headers(config.http_server_config.headers, errors)
    limit = config.rate_limit
    rate_limit = None
    if limit.interval > 0:
        if limit.burst < 1:
            errors.append(
                "rate_limit.burst: must be at least 1 when rate_limit.interval is set "
                "(0 would refuse every request)"
            )
        rate_limit = RateLimit(limit.interval, limit.burst)
    context = None if tls is None else _server_context(tls, errors)
    if errors:
        raise WebConfigError(source, errors)
    settings = WebSettings(
        path=path,
        tls=tls,
        users={user: hashed.encode("ascii") for user, hashed in config.basic_auth_users.items()},
        headers=headers,
        rate_limit=rate_limit,
        http2=config.http_server_config.http2,
    )
    return settings, context


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys as Go's yaml.UnmarshalStrict does:
    otherwise a second `alice:` would silently replace the first."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {_quote(str(key))}", key_node.start_mark
            )
        seen.add(key if isinstance(key, str | int | float | bool) else id(key_node))
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        # A SafeLoader subclass: plain data only, like yaml.safe_load.
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506
    except yaml.MarkedYAMLError as exc:
        # Only the position and the problem: PyYAML's own text quotes the line, which may hold
        # a password hash or a key.
        where = ""
        if exc.problem_mark is not None:
            mark = exc.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = exc.problem or exc.context or "invalid YAML"
        raise WebConfigError(source, [f"YAML syntax error{where}: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise WebConfigError(source, [f"YAML syntax error: {type(exc).__name__}"]) from None
    if data is None:
        # An empty file, like Go's: no TLS, no users, no headers.
        return {}
    if not isinstance(data, dict):
        raise WebConfigError(source, ["must be a mapping of keys such as tls_server_config"])
    return data


def _tls_settings(
    config: TLSServerConfig, base: Path, stamps: dict[Path, FileStamp], errors: list[str]
) -> TLSSettings | None:
    prefix = "tls_server_config"
    if all(getattr(config, name) is None for name in TLSServerConfig.model_fields):
        return None
    before = len(errors)
    cert, cert_key = _pem(config.cert, config.cert_file, "cert", base, stamps, errors)
    key, key_key = _pem(config.key, config.key_file, "key", base, stamps, errors)
    if cert is None and cert_key == "":
        errors.append(f"{prefix}: needs cert_file (or cert, the PEM inline) to serve TLS")
    if key is None and key_key == "":
        errors.append(f"{prefix}: needs key_file (or key, the PEM inline) to serve TLS")
    client_ca, ca_key = _pem(
        config.client_ca, config.client_ca_file, "client_ca", base, stamps, errors
    )
    client_auth = config.client_auth_type or "NoClientCert"
    verify_mode = _CLIENT_AUTH[client_auth]
    if ca_key and client_auth == "NoClientCert":
        errors.append(
            f"{prefix}.{ca_key}: has no effect without client_auth_type; to check client "
            "certificates, set client_auth_type: RequireAndVerifyClientCert"
        )
    if verify_mode != ssl.CERT_NONE and not ca_key:
        errors.append(
            f"{prefix}.client_auth_type: {client_auth} needs client_ca_file (or client_ca): the "
            "CA that signs client certificates (poolwatch does not trust the system's CAs for "
            "clients)"
        )
    if config.client_allowed_sans is not None and client_auth != "RequireAndVerifyClientCert":
        errors.append(
            f"{prefix}.client_allowed_sans: needs client_auth_type: RequireAndVerifyClientCert "
            "(other types let a client connect without a certificate to match)"
        )
    minimum = _TLS_VERSIONS[config.min_version or "TLS12"]
    maximum = _TLS_VERSIONS[config.max_version or "TLS13"]
    if minimum > maximum:
        errors.append(
            f"{prefix}.max_version: must not be below min_version "
            f"({config.max_version or 'TLS13'} < {config.min_version or 'TLS12'})"
        )
    if len(errors) > before or cert is None or key is None:
        return None
    ciphers = [
        name
        for name in (_CIPHER_SUITES[suite] for suite in config.cipher_suites or ())
        if name is not None
    ]
    curves = config.curve_preferences or ()
    return TLSSettings(
        cert_pem=cert,
        key_pem=key,
        client_ca_pem=None if client_ca is None else client_ca.decode("ascii", "replace"),
        client_auth_type=client_auth,
        verify_mode=verify_mode,
        minimum_version=minimum,
        maximum_version=maximum,
        ciphers=":".join(ciphers) or None,
        prefer_server_ciphers=config.prefer_server_cipher_suites is not False,
        curve=_CURVES[curves[0]] if curves else None,
        allowed_sans=None
        if config.client_allowed_sans is None
        else frozenset(_normal_san(san) for san in config.client_allowed_sans),
        cert_key=cert_key,
        key_key=key_key,
        client_ca_key=ca_key,
    )


def _pem(
    inline: str | None,
    file_name: str | None,
    name: str,
    base: Path,
    stamps: dict[Path, FileStamp],
    errors: list[str],
) -> tuple[bytes | None, str]:
    """The PEM text of `name` or `name_file`, and which key gave it ("" for neither)."""
    prefix = "tls_server_config"
    if inline is not None and file_name is not None:
        errors.append(
            f"{prefix}.{name}_file: set either {name} (the PEM inline) or {name}_file, not both"
        )
        return None, f"{name}_file"
    if inline is not None:
        return inline.encode("utf-8"), name
    if file_name is None:
        return None, ""
    # Relative to the web config file's directory, as exporter-toolkit resolves them.
    path = base / file_name
    try:
        return _read(path, stamps), f"{name}_file"
    except OSError as exc:
        errors.append(f"{prefix}.{name}_file: cannot read {path}: {exc.strerror or exc}")
        return None, f"{name}_file"


def _headers(headers: Mapping[str, str], errors: list[str]) -> tuple[tuple[str, str], ...]:
    prefix = "http_server_config.headers"
    result = []
    for name, value in headers.items():
        if name not in _HEADERS:
            allowed = ", ".join(_HEADERS)
            errors.append(
                f"{prefix}.{name}: this header cannot be configured (exporter-toolkit allows "
                f"{allowed})"
            )
            continue
        if any(char in value for char in "\r\n\0"):
            errors.append(f"{prefix}.{name}: must not contain line breaks or NUL characters")
            continue
        values = _HEADERS[name]
        if value and values is not None and value not in values:
            expected = " or ".join(_quote(v) for v in values)
            errors.append(f"{prefix}.{name}: must be {expected} (got {_quote(value)})")
            continue
        if value:
            # An empty value leaves the header unset, as in exporter-toolkit.
            result.append((name, value))
    return tuple(result)


def _normal_san(san: str) -> str:
    """A SAN for comparison: IP addresses in one spelling (OpenSSL writes IPv6 in full,
    "2001:DB8:0:0:0:0:0:1", where Go and operators write "2001:db8::1")."""
    try:
        return str(ipaddress.ip_address(san.strip()))
    except ValueError:
        return san


# --- TLS --------------------------------------------------------------------------------------


def _configure(context: ssl.SSLContext, tls: TLSSettings) -> None:
    """Apply the settings that can be changed on a context in place."""
    with warnings.catch_warnings():
        # TLS 1.0 and 1.1 are deprecated in Python; the operator asked for them by name.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = tls.minimum_version
        context.maximum_version = tls.maximum_version
    context.verify_mode = tls.verify_mode
    if tls.prefer_server_ciphers:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.ciphers is not None:
        context.set_ciphers(tls.ciphers)
    if tls.curve is not None:
        context.set_ecdh_curve(tls.curve)


def _server_context(tls: TLSSettings, errors: list[str]) -> ssl.SSLContext | None:
    """A complete server context, or None with the reasons added to `errors`."""
    prefix = "tls_server_config"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        _configure(context, tls)
    except (ssl.SSLError, ValueError) as exc:
        key = "cipher_suites" if tls.curve is None else "cipher_suites or curve_preferences"
        reason = _ssl_reason(exc) if isinstance(exc, ssl.SSLError) else str(exc)
        errors.append(f"{prefix}.{key}: not available in this OpenSSL: {reason}")
        return None
    before = len(errors)
    if b"-----BEGIN CERTIFICATE-----" not in tls.cert_pem:
        errors.append(f"{prefix}.{tls.cert_key}: contains no PEM certificate")
    if b"PRIVATE KEY-----" not in tls.key_pem:
        errors.append(f"{prefix}.{tls.key_key}: contains no PEM private key")
    elif b"ENCRYPTED" in tls.key_pem:
        errors.append(
            f"{prefix}.{tls.key_key}: the key is encrypted; poolwatch, like exporter-toolkit, "
            "needs an unencrypted key"
        )
    if len(errors) == before:
        try:
            _load_chain(context, tls)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                errors.append(
                    f"{prefix}: the key in {tls.key_key} does not belong to the certificate in "
                    f"{tls.cert_key}"
                )
            else:
                errors.append(
                    f"{prefix}: cannot load the certificate ({tls.cert_key}) and key "
                    f"({tls.key_key}): {_ssl_reason(exc)}"
                )
    if tls.client_ca_pem is not None and "-----BEGIN CERTIFICATE-----" not in tls.client_ca_pem:
        errors.append(f"{prefix}.{tls.client_ca_key}: contains no PEM certificate")
    elif tls.client_ca_pem is not None:
        try:
            context.load_verify_locations(cadata=tls.client_ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            reason = _ssl_reason(exc) if isinstance(exc, ssl.SSLError) else str(exc)
            errors.append(f"{prefix}.{tls.client_ca_key}: contains no usable PEM CA: {reason}")
    return None if len(errors) > before else context


def _ssl_reason(exc: ssl.SSLError) -> str:
    if exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)


def _load_chain(context: ssl.SSLContext, tls: TLSSettings) -> None:
    with _as_files(tls.cert_pem, tls.key_pem) as (cert, key):
        # A password callback, so an encrypted key fails instead of prompting on a terminal.
        context.load_cert_chain(cert, key, password=lambda: b"")


@contextlib.contextmanager
def _as_files(*contents: bytes) -> Iterator[list[str]]:
    """File names that read as `contents`, for ssl calls that take nothing else: memfd files
    on Linux, so key material never touches a disk; a private temporary directory elsewhere."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fds: list[int] = []
        try:
            for data in contents:
                fd = os.memfd_create("poolwatch-tls", os.MFD_CLOEXEC)
                fds.append(fd)
                with open(fd, "wb", closefd=False) as file:
                    file.write(data)
            yield [f"/proc/self/fd/{fd}" for fd in fds]
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="poolwatch-tls-") as directory:
        names = []
        for index, data in enumerate(contents):
            name = os.path.join(directory, f"{index}.pem")
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "wb") as file:
                file.write(data)
            names.append(name)
        yield names


class _TLSListener:
    """The context the listening sockets hold, and the newest complete context.

    asyncio binds an SSLContext to a listening socket for good. So the listening context's SNI
    callback, which OpenSSL runs for every handshake (with or without SNI), switches each new
    connection to the newest context: certificate, key, client CAs and cipher list come from
    there. OpenSSL copies a few settings into the connection before that callback runs (TLS
    versions, verify mode, options, curves), so those are also changed on the listening context
    in place.
    """

    def __init__(self, tls: TLSSettings, context: ssl.SSLContext) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls = tls
        self._current = context
        _configure(self.context, tls)
        # Served only if the switch did not happen; no client CAs here, so a connection that
        # was not switched fails client verification rather than using stale CAs.
        _load_chain(self.context, tls)
        self.context.sni_callback = self._switch

    def _switch(
        self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        connection.context = self._current

    def update(self, tls: TLSSettings, context: ssl.SSLContext) -> list[str]:
        """Swap in new settings; returns what could not be applied without a restart."""
        pending = []
        if self.tls.curve is not None and tls.curve is None:
            pending.append("curve_preferences removed: the old curve stays until a restart")
        _configure(self.context, tls)
        _load_chain(self.context, tls)
        self._current = context
        self.tls = tls
        return pending


# --- basic auth -------------------------------------------------------------------------------


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    DENIED = "denied"
    BUSY = "busy"  # too many checks pending: try again shortly


def parse_basic_authorization(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from an `Authorization: Basic ...` header, or None."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    # surrogateescape: a user name that is not UTF-8 simply matches no configured user.
    return user.decode("utf-8", "surrogateescape"), password


def _cost(hashed: bytes) -> int:
    return int(hashed[4:6])


def _dummy_hash(users: Mapping[str, bytes]) -> bytes:
    """A hash no password matches, at the cost most users' hashes have, so checking an unknown
    user takes as long as a wrong password. bcrypt only needs its salt to be well-formed."""
    costs = collections.Counter(_cost(hashed) for hashed in users.values())
    cost = max(costs, key=lambda c: (costs[c], c)) if costs else 10
    return bcrypt.gensalt(cost) + b"." * 31


class BasicAuth:
    """Checks basic auth credentials against bcrypt hashes, off the event loop."""

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        check: Callable[[bytes, bytes], bool] = bcrypt.checkpw,
        workers: int = BCRYPT_WORKERS,
        max_pending: int = MAX_PENDING_CHECKS,
        cache_size: int = AUTH_CACHE_SIZE,
        cache_ttl: float = AUTH_CACHE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._workers = workers
        self._max_pending = max_pending
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl
        self._clock = clock
        # Cache keys are HMACs under a key that lives only in this process, so the cache holds
        # nothing that a memory dump could turn into a fast password guess.
        self._secret = secrets.token_bytes(32)
        self._cache: collections.OrderedDict[bytes, float] = collections.OrderedDict()
        self._pending: dict[bytes, asyncio.Task[bool]] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._slots = asyncio.Semaphore(workers)
        self._users: Mapping[str, bytes] = {}
        self._dummy = b""
        self.update(users)

    @property
    def enabled(self) -> bool:
        """Whether credentials are required at all (the file lists users)."""
        return bool(self._users)

    def update(self, users: Mapping[str, bytes]) -> None:
        """New users (on reload); forgets every cached login."""
        self._users = dict(users)
        self._dummy = _dummy_hash(self._users)
        self._cache.clear()

    async def check(self, authorization: str | None) -> Verdict:
        credentials = parse_basic_authorization(authorization)
        if credentials is None:
            return Verdict.DENIED
        user, password = credentials
        if len(password) > MAX_PASSWORD_BYTES:
            return Verdict.DENIED
        stored = self._users.get(user)
        known = stored is not None
        hashed = stored if stored is not None else self._dummy
        key = self._cache_key(user, hashed, password)
        if known and self._cached(key):
            return Verdict.ALLOWED
        task = self._pending.get(key)
        if task is None:
            if len(self._pending) >= self._max_pending:
                return Verdict.BUSY
            # A task of its own, which the request only awaits: a client that hangs up does not
            # free the slot before bcrypt is done with it, so the bound holds.
            task = asyncio.get_running_loop().create_task(self._verify(password, hashed))
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        matched = await asyncio.shield(task)
        if matched and known:
            self._remember(key)
            return Verdict.ALLOWED
        return Verdict.DENIED

    async def close(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _cache_key(self, user: str, hashed: bytes, password: bytes) -> bytes:
        message = b"\0".join(
            part.hex().encode("ascii")
            for part in (user.encode("utf-8", "surrogateescape"), hashed, password)
        )
        return hmac.digest(self._secret, message, hashlib.sha256)

    def _cached(self, key: bytes) -> bool:
        expires = self._cache.get(key)
        if expires is None:
            return False
        if expires <= self._clock():
            del self._cache[key]
            return False
        self._cache.move_to_end(key)
        return True

    def _remember(self, key: bytes) -> None:
        self._cache[key] = self._clock() + self._cache_ttl
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _verify(self, password: bytes, hashed: bytes) -> bool:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._workers, thread_name_prefix="poolwatch-bcrypt"
            )
        async with self._slots:
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._executor, self._check, password, hashed)
            except ValueError:
                return False


class TokenBucket:
    """exporter-toolkit's rate limit: one request per `interval` on average, `burst` at once."""

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._tokens = float(limit.burst)
        self._last = clock()

    def allow(self) -> bool:
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(float(self.limit.burst), self._tokens + elapsed / self.limit.interval)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


# --- the live state of one server -------------------------------------------------------------


class WebSecurity:
    """The web config of one running server: TLS listener, users, headers, rate limit.

    Raises WebConfigError when the file is invalid at start. Later, `reload()` (SIGHUP) and
    `reload_if_changed()` (a timer) swap in a valid new file; an invalid one is logged and the
    running settings stay.
    """

    def __init__(
        self,
        path: Path,
        *,
        auth: Callable[[Mapping[str, bytes]], BasicAuth] = BasicAuth,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._clock = clock
        self._stamps: dict[Path, FileStamp] = {}
        settings, context = _load(path, self._stamps)
        self.settings = settings
        self._listener = (
            None if settings.tls is None or context is None else _TLSListener(settings.tls, context)
        )
        self.auth = auth(settings.users)
        self._limiter = self._new_limiter(settings.rate_limit)

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """What the listening sockets take; None serves plain HTTP."""
        return None if self._listener is None else self._listener.context

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return self.settings.headers

    def allow_request(self) -> bool:
        """False when the rate limit is exhausted."""
        return self._limiter is None or self._limiter.allow()

    def client_allowed(self, peercert: Mapping[str, Any] | None) -> bool:
        """Whether the verified client certificate has a SAN in client_allowed_sans (True
        without that key)."""
        sans = None if self._listener is None else self._listener.tls.allowed_sans
        if sans is None:
            return True
        if not peercert:
            return False
        return any(
            _normal_san(str(value)) in sans for _, value in peercert.get("subjectAltName", ())
        )

    def changed(self) -> bool:
        """Whether the file, or a file it names, differs from what was last read."""
        return any(_current_stamp(path) != stamp for path, stamp in self._stamps.items())

    def reload_if_changed(self) -> bool | None:
        """Reload when something changed: True or False for the outcome, None for no change."""
        return self.reload() if self.changed() else None

    def reload(self) -> bool:
        """Read the file again and apply it; on failure, log and keep the running settings."""
        stamps: dict[Path, FileStamp] = {}
        try:
            settings, context = _load(self.path, stamps)
        except WebConfigError as exc:
            # The stamps of what failed: the next check retries only once something changes.
            self._stamps = stamps
            log.error("web_config_reload_failed", path=str(self.path), errors=exc.errors)
            return False
        self._stamps = stamps
        self._apply(settings, context)
        log.info("web_config_reloaded", **settings.summary())
        return True

    async def close(self) -> None:
        await self.auth.close()

    def _apply(self, settings: WebSettings, context: ssl.SSLContext | None) -> None:
        if self._listener is None or settings.tls is None or context is None:
            if (self._listener is None) != (settings.tls is None):
                turned = "on" if settings.tls is not None else "off"
                log.warning(
                    "web_config_reload_needs_restart",
                    path=str(self.path),
                    reason=f"TLS turned {turned}; the listener keeps its scheme until a restart",
                )
        else:
            for reason in self._listener.update(settings.tls, context):
                log.warning("web_config_reload_needs_restart", path=str(self.path), reason=reason)
        self.auth.update(settings.users)
        if settings.rate_limit != self.settings.rate_limit:
            self._limiter = self._new_limiter(settings.rate_limit)
        self.settings = settings

    def _new_limiter(self, limit: RateLimit | None) -> TokenBucket | None:
        return None if limit is None else TokenBucket(limit, clock=self._clock)


# --- error messages ---------------------------------------------------------------------------

# Pydantic's wording speaks Python; operators edit YAML. No message repeats the value: it may
# be a password hash or a private key.
_MESSAGES = {
    "model_type": "must be a mapping (key: value lines)",
    "model_attributes_type": "must be a mapping (key: value lines)",
    "dict_type": "must be a mapping (key: value lines)",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "extra_forbidden": "unknown key",
}


def _describe(error: ErrorDetails) -> str:
    path = _key_path(error["loc"])
    kind = error["type"]
    if kind == "web_config":
        message = error["msg"]
    elif kind == "greater_than_equal":
        message = f"must be at least {(error.get('ctx') or {}).get('ge')}"
    else:
        message = _MESSAGES.get(kind, error["msg"])
    return f"{path}: {message}" if path else message


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "[key]":
            path += f".{part}" if path else part
    return path
