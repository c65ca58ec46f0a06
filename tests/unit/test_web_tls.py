"""TLS as configured (poolwatch.web.tls): versions, mutual TLS and client_allowed_sans, checked
with real TLS clients against a server on 127.0.0.1 port 0."""

from __future__ import annotations

import ssl
import warnings

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
