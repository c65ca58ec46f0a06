"""TLS as configured (poolwatch.web.tls): versions, curves, mutual TLS and client_allowed_sans,
checked with real TLS clients against a server on 127.0.0.1 port 0; `openssl s_client` where the
key exchange is under test, since Python's ssl does not tell the group it agreed on."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import warnings

import pytest
import structlog

from poolwatch.web import webconfig
from poolwatch.web.app import HttpServer
from poolwatch.web.tls import can_restrict_to
from tests.unit.web_serving import (
    MTLS,
    TLS,
    WebConfigDir,
    get,
    listening_context,
    raw_get,
    refused,
    serve,
    trusting,
)

# --- serving: TLS -----------------------------------------------------------------------------


def _old_tls_client(maximum: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    # The client's own OpenSSL would refuse to offer TLS 1.1 at all otherwise, and the test
    # would prove nothing about the server.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


async def test_tls_11_is_refused_by_default(web_dir: WebConfigDir) -> None:
    async with serve(web_dir.write(TLS)) as server:
        tls11 = await refused(server, _old_tls_client(ssl.TLSVersion.TLSv1_1))
        status, _ = await raw_get(server, _old_tls_client(ssl.TLSVersion.TLSv1_2))
        assert listening_context(server).minimum_version == ssl.TLSVersion.TLSv1_2

    assert tls11
    # The same client, allowed TLS 1.2, gets in.
    assert status == b"HTTP/1.1 200 OK"


async def test_min_version_is_honoured(web_dir: WebConfigDir) -> None:
    async with serve(web_dir.write(TLS + "  min_version: TLS13\n")) as server:
        tls12 = await refused(server, _old_tls_client(ssl.TLSVersion.TLSv1_2))
        status, _ = await raw_get(server, _old_tls_client(ssl.TLSVersion.TLSv1_3))

    assert tls12
    assert status == b"HTTP/1.1 200 OK"


async def test_mutual_tls(web_dir: WebConfigDir) -> None:
    pki = web_dir.pki

    async with serve(web_dir.write(MTLS)) as server:
        no_certificate = await refused(server, trusting(pki))
        other_ca = await refused(server, trusting(pki, pki.client2))
        status, _ = await raw_get(server, trusting(pki, pki.client))
        answer = await get(server, "/metrics", context=trusting(pki, pki.client))

    # TLS is per connection: without a certificate, not even /healthz answers.
    assert no_certificate
    assert other_ca
    assert status == b"HTTP/1.1 200 OK"
    assert answer.status == 200


async def test_client_allowed_sans(web_dir: WebConfigDir) -> None:
    pki = web_dir.pki
    path = web_dir.write(MTLS + "  client_allowed_sans: [prometheus.example]\n")

    async with serve(path) as server:
        allowed = await get(server, "/metrics", context=trusting(pki, pki.client))
        intruder = await get(server, "/metrics", context=trusting(pki, pki.intruder))
        # As Go's handshake would, this refuses /healthz too.
        intruder_health = await get(server, "/healthz", context=trusting(pki, pki.intruder))

    assert allowed.status == 200
    assert (intruder.status, intruder_health.status) == (403, 403)


# --- serving: curves --------------------------------------------------------------------------


async def key_exchange(server: HttpServer, groups: str) -> str | None:
    """The group a TLS 1.3 client offering `groups` (OpenSSL's names, its first key share for
    the first) agrees on with the server, such as "X25519" or "prime256v1"; None when the
    handshake fails."""
    command = shutil.which("openssl")
    assert command is not None, "the tests run openssl s_client"
    host, port = server.addresses[0]
    process = await asyncio.create_subprocess_exec(
        *(command, "s_client", "-connect", f"{host}:{port}", "-tls1_3", "-brief"),
        *("-groups", groups),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 10)
    match = re.search(r"^Server Temp Key: (?:ECDH, )?([^,]+),", output.decode(), re.MULTILINE)
    return match[1] if process.returncode == 0 and match else None


async def test_x25519_as_node_exporter_configs_name_it(web_dir: WebConfigDir) -> None:
    # Debian 12's Python 3.11.2 cannot select X25519 alone; it used to refuse to start.
    with structlog.testing.capture_logs() as logs:
        async with serve(web_dir.write(TLS + "  curve_preferences: [X25519]\n")) as server:
            usual = await key_exchange(server, "X25519:P-256")
            x25519_only = await key_exchange(server, "X25519")
            p256_first = await key_exchange(server, "P-256:X25519")
            p256_only = await key_exchange(server, "P-256")

    assert (usual, x25519_only) == ("X25519", "X25519")
    warned = [log for log in logs if log["event"] == "web_config_curve_not_restricted"]
    if can_restrict_to("X25519"):
        # As in Go: a hello retry for X25519, and no other group.
        assert (p256_first, p256_only) == ("X25519", None)
        assert warned == []
    else:
        assert (p256_first, p256_only) == ("prime256v1", "prime256v1")
        assert len(warned) == 1


async def test_x25519_where_python_cannot_select_it(
    web_dir: WebConfigDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What Debian 12's Python does, on any Python: OpenSSL's default groups, X25519 first.
    monkeypatch.setattr(webconfig, "can_restrict_to", lambda curve: False)

    with structlog.testing.capture_logs() as logs:
        async with serve(web_dir.write(TLS + "  curve_preferences: [X25519]\n")) as server:
            usual = await key_exchange(server, "X25519:P-256")
            p256_first = await key_exchange(server, "P-256:X25519")
            p256_only = await key_exchange(server, "P-256")

    assert (usual, p256_first, p256_only) == ("X25519", "prime256v1", "prime256v1")
    warned = [log for log in logs if log["event"] == "web_config_curve_not_restricted"]
    assert warned == [
        {
            "event": "web_config_curve_not_restricted",
            "log_level": "warning",
            "path": str(web_dir.path),
            "curve": "X25519",
            "reason": "this Python's ssl cannot select X25519 alone; OpenSSL's default groups "
            "stay, X25519 first, so clients that offer it first use it",
        }
    ]


async def test_a_nist_curve_restricts_the_key_exchange(web_dir: WebConfigDir) -> None:
    async with serve(web_dir.write(TLS + "  curve_preferences: [CurveP384]\n")) as server:
        usual = await key_exchange(server, "X25519:P-256:P-384")
        x25519_only = await key_exchange(server, "X25519")

    assert (usual, x25519_only) == ("secp384r1", None)


async def test_a_reload_to_an_unselectable_curve_needs_a_restart(
    web_dir: WebConfigDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webconfig, "can_restrict_to", lambda curve: curve != "X25519")

    path = web_dir.write(TLS + "  curve_preferences: [CurveP384]\n")
    async with serve(path, check_interval=3600) as server:
        web_dir.write(TLS + "  curve_preferences: [X25519]\n")
        with structlog.testing.capture_logs() as logs:
            assert server.reload_web_config() is True
        still_p384 = await key_exchange(server, "X25519:P-256:P-384")

    assert still_p384 == "secp384r1"
    reasons = [log["reason"] for log in logs if log["event"] == "web_config_reload_needs_restart"]
    assert reasons == [
        "curve_preferences: this Python cannot select X25519: the old curve stays until a restart"
    ]
