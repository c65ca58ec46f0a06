"""Addresses every layer names: libvirt URIs as they may be shown, and HTTP listen addresses."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import urllib.parse

_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")

# Query parameters whose value is a secret: a parameter is one if any part of its name (split at
# "_", "-" and ".") is one of these, so api_key and access_token are, keyfile and sshauth (a path
# and a list of methods, which operators want to see) are not.
SECRET_PARAMETERS = frozenset(
    {"password", "passwd", "pass", "pwd", "key", "token", "secret", "auth"}
)
# What a secret's value shows as, as in Prometheus' own config dumps.
REDACTED = "<secret>"
_NAME_PARTS_RE = re.compile(r"[_.-]")


def default_host_name(uri: str) -> str:
    """The host label of a connection before libvirt has told its hostname."""
    return urllib.parse.urlsplit(uri).hostname or socket.gethostname()


def without_credentials(uri: str) -> str:
    """The URI without user or password, and with the values of secret query parameters
    (`?password=...`) redacted: for labels, logs, the API and the landing page."""
    # By hand, not urlunsplit(), which writes "test:///default" back as "test:/default".
    scheme, slashes, rest = uri.partition("://")
    if slashes:
        authority_end = _first_of(rest, "/?#")
        authority = rest[:authority_end]
        if "@" in authority:
            rest = authority.rpartition("@")[2] + rest[authority_end:]
        uri = scheme + slashes + rest
    before, question, query = uri.partition("?")
    if not question:
        return uri
    query, hash_mark, fragment = query.partition("#")
    return before + question + _redact_query(query) + hash_mark + fragment


def _first_of(text: str, characters: str) -> int:
    return min((i for i in (text.find(c) for c in characters) if i >= 0), default=len(text))


def _redact_query(query: str) -> str:
    # Parameter by parameter, as written: only secret values change, nothing is re-encoded.
    shown = []
    for parameter in query.split("&"):
        name, equals, _ = parameter.partition("=")
        if equals and _is_secret(urllib.parse.unquote_plus(name)):
            parameter = f"{name}={REDACTED}"
        shown.append(parameter)
    return "&".join(shown)


def _is_secret(name: str) -> bool:
    return any(part in SECRET_PARAMETERS for part in _NAME_PARTS_RE.split(name.lower()))


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


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
