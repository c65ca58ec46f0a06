"""Addresses every layer names: libvirt URIs as they may be shown, and HTTP listen addresses."""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse

_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def without_credentials(uri: str) -> str:
    """The URI without user or password, for labels, logs and the API."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


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
