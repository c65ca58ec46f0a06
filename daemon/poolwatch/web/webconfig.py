"""The web config file (`--web.config.file`, `[web] config_file`): reading it, with the
certificates and keys it names, into `WebSettings`, and every problem at once in a
`WebConfigError`.

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
- `curve_preferences: [X25519]` on a Python whose ssl cannot select X25519 (Debian 12's 3.11.2)
  leaves OpenSSL's default groups, X25519 first, in place (`poolwatch.web.tls.can_restrict_to`
  says what clients then get); `WebSecurity` logs a warning.
- `client_allowed_sans` is checked per request after the handshake (a client whose certificate
  matches none gets 403 on every path), where Go aborts the handshake.

Every file read is stamped (`FileStamp`), so `poolwatch.web.reload` can tell when one changed.
Nothing here logs or repeats a password, hash or private key.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError as PydanticValidationError

from poolwatch.config.messages import Dialect, describe_errors, quote
from poolwatch.errors import ConfigError
from poolwatch.web.schema import TLSServerConfig, WebConfigFile
from poolwatch.web.tls import (
    CIPHER_SUITES,
    CLIENT_AUTH,
    CURVES,
    TLS_VERSION_NAMES,
    TLS_VERSIONS,
    TLSSettings,
    can_restrict_to,
    normal_san,
    server_context,
)

# exporter-toolkit allows only these headers, some with a fixed set of values (None: any), to
# keep the Prometheus ecosystem consistent.
_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}


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


# --- what the file sets up --------------------------------------------------------------------


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
            "min_version": None if tls is None else TLS_VERSION_NAMES[tls.minimum_version],
            "basic_auth_users": len(self.users),
            "headers": [name for name, _ in self.headers],
            "rate_limit": self.rate_limit is not None,
        }


# (st_dev, st_ino, st_size, st_mtime_ns) of a file as read, None when it could not be read.
FileStamp = tuple[int, int, int, int] | None


def _stamp_of(stat: os.stat_result) -> FileStamp:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def current_stamp(path: Path) -> FileStamp:
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
    settings, _ = read_web_config(path, {})
    return settings


def read_web_config(
    path: Path, stamps: dict[Path, FileStamp]
) -> tuple[WebSettings, ssl.SSLContext | None]:
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
        raise WebConfigError(source, describe_errors(exc, YAML)) from None
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
    context = None if tls is None else server_context(tls, errors)
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
                None, None, f"duplicate key {quote(str(key))}", key_node.start_mark
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
    verify_mode = CLIENT_AUTH[client_auth]
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
    minimum = TLS_VERSIONS[config.min_version or "TLS12"]
    maximum = TLS_VERSIONS[config.max_version or "TLS13"]
    if minimum > maximum:
        errors.append(
            f"{prefix}.max_version: must not be below min_version "
            f"({config.max_version or 'TLS13'} < {config.min_version or 'TLS12'})"
        )
    if len(errors) > before or cert is None or key is None:
        return None
    ciphers = [
        name
        for name in (CIPHER_SUITES[suite] for suite in config.cipher_suites or ())
        if name is not None
    ]
    curves = config.curve_preferences or ()
    curve = CURVES[curves[0]] if curves else None
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
        curve=curve,
        restrict_to_curve=curve is None or can_restrict_to(curve),
        allowed_sans=None
        if config.client_allowed_sans is None
        else frozenset(normal_san(san) for san in config.client_allowed_sans),
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
            expected = " or ".join(quote(v) for v in values)
            errors.append(f"{prefix}.{name}: must be {expected} (got {quote(value)})")
            continue
        if value:
            # An empty value leaves the header unset, as in exporter-toolkit.
            result.append((name, value))
    return tuple(result)


# --- error messages ---------------------------------------------------------------------------

# Pydantic's wording speaks Python; operators edit YAML. No message repeats the value: it may
# be a password hash or a private key.
YAML = Dialect(
    messages={
        "model_type": "must be a mapping (key: value lines)",
        "model_attributes_type": "must be a mapping (key: value lines)",
        "dict_type": "must be a mapping (key: value lines)",
        "tuple_type": "must be a list",
        "list_type": "must be a list",
        "string_type": "must be a string",
        "int_type": "must be an integer",
        "bool_type": "must be true or false",
        "extra_forbidden": "unknown key",
        "greater_than_equal": "must be at least {ge}",
    },
    fallback="{msg}",
    own_error_types=frozenset({"web_config"}),
    value_repr=None,
)
