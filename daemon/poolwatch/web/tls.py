"""TLS for the web server: exporter-toolkit's names for versions, client auth types, cipher
suites and curves mapped to OpenSSL's, the server `SSLContext` built from `TLSSettings`, and the
listener that lets renewed certificates and changed client CAs apply without a restart.

PEM material reaches OpenSSL through memfd files (`_as_files`), so key material never touches a
disk; nothing here logs or repeats a private key.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import ssl
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
TLS_VERSION_NAMES = {version: name for name, version in TLS_VERSIONS.items()}
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Go's names (the ones tls.CipherSuites() lists, which exporter-toolkit accepts) to OpenSSL's.
# None: a TLS 1.3 suite, which neither Go nor OpenSSL's cipher list lets one configure.
CIPHER_SUITES: dict[str, str | None] = {
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
CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}
# The head of OpenSSL's default group list: where Python's ssl cannot select it alone, leaving
# the defaults in place comes closest (see `can_restrict_to`).
_FIRST_DEFAULT_GROUPS = frozenset({"X25519"})


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
    # False where this Python's ssl cannot select `curve` (see `can_restrict_to`): OpenSSL's
    # default groups then stay in place.
    restrict_to_curve: bool
    allowed_sans: frozenset[str] | None
    # Which key each PEM came from ("cert" or "cert_file", ...), for messages.
    cert_key: str = "cert_file"
    key_key: str = "key_file"
    client_ca_key: str = "client_ca_file"


def can_restrict_to(curve: str) -> bool:
    """Whether this Python's ssl can restrict the key exchange to `curve` (OpenSSL's name).

    Not so for X25519 where `set_ecdh_curve` predates OpenSSL 3's groups and goes through
    EC_KEY, which knows only the NIST curves: Debian 12's Python 3.11.2 refuses X25519 with
    "unknown group", where 3.11.7 takes it. OpenSSL 3's default groups start with X25519, and
    there leaving them in place comes closest to the operator's choice. Measured with OpenSSL
    3.0: every client that offers X25519 first (Go, curl, OpenSSL, browsers), and every TLS 1.2
    client that offers it at all (the server's preference being the default), gets X25519; a
    client that sends another key share first, or lacks X25519, gets another default group
    where Go would insist on X25519 or refuse it.
    """
    if curve not in _FIRST_DEFAULT_GROUPS:
        # The NIST curves always can; an unknown one fails in `server_context` with its reason.
        return True
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ecdh_curve(curve)
    except ssl.SSLError:
        return False
    return True


def normal_san(san: str) -> str:
    """A SAN for comparison: IP addresses in one spelling (OpenSSL writes IPv6 in full,
    "2001:DB8:0:0:0:0:0:1", where Go and operators write "2001:db8::1")."""
    try:
        return str(ipaddress.ip_address(san.strip()))
    except ValueError:
        return san


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
    if tls.curve is not None and tls.restrict_to_curve:
        context.set_ecdh_curve(tls.curve)


def server_context(tls: TLSSettings, errors: list[str]) -> ssl.SSLContext | None:
    """A complete server context, or None with the reasons added to `errors`."""
    prefix = "tls_server_config"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        _configure(context, tls)
    except (ssl.SSLError, ValueError) as exc:
        restricted = tls.curve is not None and tls.restrict_to_curve
        key = "cipher_suites or curve_preferences" if restricted else "cipher_suites"
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


class TLSListener:
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
        if self.tls.curve is not None and self.tls.restrict_to_curve:
            # OpenSSL's default groups cannot be put back on a context in place.
            if tls.curve is None:
                pending.append("curve_preferences removed: the old curve stays until a restart")
            elif not tls.restrict_to_curve:
                pending.append(
                    f"curve_preferences: this Python cannot select {tls.curve}: the old curve "
                    "stays until a restart"
                )
        _configure(self.context, tls)
        _load_chain(self.context, tls)
        self._current = context
        self.tls = tls
        return pending
