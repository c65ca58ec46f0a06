"""The web config file (poolwatch.web.webconfig, .schema): exporter-toolkit's format read in
full, and every invalid file refused with the key it is about and without showing secrets."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest

from poolwatch.web.webconfig import RateLimit, WebConfigError, load_web_config
from tests.unit.pki import Pki, openssl
from tests.unit.web_serving import MTLS, TLS, WebConfigDir, hashed

# exporter-toolkit's documented example hash (a valid bcrypt hash; the password is irrelevant).
HASH_TAIL = "X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG"
EXAMPLE = Path(__file__).parents[2] / "config" / "web-config.yml"


# --- the file: valid -----------------------------------------------------------------------


def test_an_empty_file_serves_plain_http_without_auth(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("# nothing configured\n")

    settings = load_web_config(path)

    assert settings.tls is None
    assert settings.users == {}
    assert settings.headers == ()
    assert settings.rate_limit is None


def test_every_key_of_the_format_is_read(web_dir: WebConfigDir) -> None:
    alice = hashed("alice-password")
    path = web_dir.write(
        f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: clients-ca.crt
  client_allowed_sans: [prometheus.example, "2001:DB8:0:0:0:0:0:1"]
  min_version: TLS13
  max_version: TLS13
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256]
  prefer_server_cipher_suites: false
  curve_preferences: [X25519]
http_server_config:
  http2: false
  headers:
    X-Frame-Options: sameorigin
    X-Content-Type-Options: nosniff
    X-XSS-Protection: ""
    Strict-Transport-Security: max-age=60
    Content-Security-Policy: default-src 'none'
rate_limit:
  interval: 1m30s
  burst: 5
basic_auth_users:
  alice: {alice}
"""
    )

    settings = load_web_config(path)

    tls = settings.tls
    assert tls is not None
    assert tls.verify_mode == ssl.CERT_REQUIRED
    assert (tls.minimum_version, tls.maximum_version) == (ssl.TLSVersion.TLSv1_3,) * 2
    # Go's names become OpenSSL's; the TLS 1.3 suite cannot be configured, as in Go.
    assert tls.ciphers == "ECDHE-ECDSA-AES256-GCM-SHA384"
    assert tls.prefer_server_ciphers is False
    assert tls.curve == "X25519"
    assert tls.allowed_sans == frozenset({"prometheus.example", "2001:db8::1"})
    assert tls.client_ca_pem == web_dir.pki.ca.cert.read_text()
    assert settings.users == {"alice": alice.encode()}
    # An empty value leaves the header out, as in exporter-toolkit.
    assert dict(settings.headers) == {
        "X-Frame-Options": "sameorigin",
        "X-Content-Type-Options": "nosniff",
        "Strict-Transport-Security": "max-age=60",
        "Content-Security-Policy": "default-src 'none'",
    }
    assert settings.rate_limit == RateLimit(interval=90.0, burst=5)
    assert settings.http2 is False
    # Secrets stay out of reprs, and with them out of logs.
    assert alice not in repr(settings)
    assert "PRIVATE KEY" not in repr(settings)


def test_certificate_and_key_inline(web_dir: WebConfigDir) -> None:
    cert, key = web_dir.pki.server.pem()
    indent = "\n    "
    path = web_dir.write(
        "tls_server_config:\n"
        f"  cert: |{indent}{indent.join(cert.splitlines())}\n"
        f"  key: |{indent}{indent.join(key.splitlines())}\n"
    )

    tls = load_web_config(path).tls

    assert tls is not None
    assert (tls.cert_key, tls.key_key) == ("cert", "key")


def test_null_sections_and_empty_strings_are_unset(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text('tls_server_config:\n  cert_file: ""\nhttp_server_config:\nbasic_auth_users:\n')

    settings = load_web_config(path)

    assert (settings.tls, settings.users) == (None, {})


def test_shipped_example_is_valid_and_documents_every_key(tmp_path: Path, pki: Pki) -> None:
    text = EXAMPLE.read_text()
    # The example names /etc/poolwatch/tls/...; here those files are the test certificates.
    shutil.copyfile(pki.server.cert, tmp_path / "poolwatch.crt")
    shutil.copyfile(pki.server.key, tmp_path / "poolwatch.key")
    path = tmp_path / "web-config.yml"
    path.write_text(text.replace("/etc/poolwatch/tls/", f"{tmp_path}/"))

    settings = load_web_config(path)

    assert settings.tls is not None
    assert settings.tls.minimum_version == ssl.TLSVersion.TLSv1_2
    assert list(settings.users) == ["prometheus"]
    assert dict(settings.headers)["X-Frame-Options"] == "deny"
    keys = [
        "cert_file",
        "key_file",
        "cert:",
        "key:",
        "client_ca:",
        "client_auth_type",
        "client_ca_file",
        "client_allowed_sans",
        "min_version",
        "max_version",
        "cipher_suites",
        "prefer_server_cipher_suites",
        "curve_preferences",
        "http2",
        "headers",
        "rate_limit",
        "interval",
        "burst",
        "basic_auth_users",
    ]
    for key in keys:
        assert key in text, f"{key} undocumented"


# --- the file: invalid ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "tls_server_config:\n  min_version: TLS99\n",
            'tls_server_config.min_version: unknown TLS version "TLS99" '
            "(use TLS10, TLS11, TLS12 or TLS13)",
        ),
        ("tls_server_config:\n  bogus: 1\n", "tls_server_config.bogus: unknown key"),
        ("bogus: 1\n", "bogus: unknown key"),
        ("tls_server_config: [1]\n", "tls_server_config: must be a mapping (key: value lines)"),
        (
            "tls_server_config:\n  client_auth_type: RequireAnyClientCert\n",
            "tls_server_config.client_auth_type: RequireAnyClientCert is not supported",
        ),
        (
            "tls_server_config:\n  client_auth_type: Sometimes\n",
            'tls_server_config.client_auth_type: unknown client_auth_type "Sometimes"',
        ),
        (
            "tls_server_config:\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, RC4]\n",
            'tls_server_config.cipher_suites[1]: unknown cipher suite "RC4"',
        ),
        (
            "tls_server_config:\n  curve_preferences: [X25519, CurveP256]\n",
            "tls_server_config.curve_preferences: lists 2 curves, but Python's ssl can restrict "
            "the key exchange only to a single curve",
        ),
        (
            "tls_server_config:\n  curve_preferences: [CurveP999]\n",
            'tls_server_config.curve_preferences[0]: unknown curve "CurveP999"',
        ),
        (
            "tls_server_config:\n  prefer_server_cipher_suites: maybe\n",
            "tls_server_config.prefer_server_cipher_suites: must be true or false",
        ),
        (
            "tls_server_config:\n  min_version: TLS13\n",
            "tls_server_config: needs cert_file (or cert, the PEM inline) to serve TLS",
        ),
        (
            "http_server_config:\n  headers:\n    X-Powered-By: poolwatch\n",
            "http_server_config.headers.X-Powered-By: this header cannot be configured",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow-from\n",
            'http_server_config.headers.X-Frame-Options: must be "deny" or "sameorigin" '
            '(got "allow-from")',
        ),
        (
            "http_server_config:\n  http2: 1\n",
            "http_server_config.http2: must be true or false",
        ),
        (
            "rate_limit:\n  interval: 10\n  burst: -1\n",
            "rate_limit.burst: must be at least 0",
        ),
        (
            "rate_limit:\n  interval: 1s\n",
            "rate_limit.burst: must be at least 1 when rate_limit.interval is set",
        ),
        (
            "rate_limit:\n  interval: 1 second\n  burst: 1\n",
            'rate_limit.interval: invalid duration "1 second"',
        ),
        (
            "basic_auth_users:\n  alice: plain-text-password\n",
            "basic_auth_users.alice: is not a bcrypt hash (generate one with: htpasswd -nBC 10",
        ),
        (
            f"basic_auth_users:\n  al:ice: $2y$10${HASH_TAIL}\n",
            'basic_auth_users.al:ice: user names cannot contain ":"',
        ),
        (
            f"basic_auth_users:\n  1234: $2y$99${HASH_TAIL}\n",
            "basic_auth_users.1234: has a bcrypt cost outside 4 to 31",
        ),
        (
            f"basic_auth_users:\n  alice: $2y$10${HASH_TAIL}\n  alice: $2y$10${HASH_TAIL}\n",
            'YAML syntax error at line 3, column 3: duplicate key "alice"',
        ),
        ("tls_server_config: {\n", "YAML syntax error at line 2, column 1"),
        ("- a list\n", "must be a mapping of keys such as tls_server_config"),
    ],
)
def test_invalid_files_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text)

    with pytest.raises(WebConfigError) as info:
        load_web_config(path)

    assert info.value.source == str(path)
    assert any(error.startswith(expected) for error in info.value.errors), info.value.errors
    assert str(info.value).startswith(f"invalid web config file {path} (")


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(
        "tls_server_config:\n  min_version: TLS99\n  bogus: 1\nbasic_auth_users:\n  bob: x\n"
    )

    with pytest.raises(WebConfigError) as info:
        load_web_config(path)

    assert [error.split(":")[0] for error in info.value.errors] == [
        "tls_server_config.min_version",
        "tls_server_config.bogus",
        "basic_auth_users.bob",
    ]


def test_certificate_problems_name_the_key(web_dir: WebConfigDir) -> None:
    def errors(text: str) -> list[str]:
        with pytest.raises(WebConfigError) as info:
            load_web_config(web_dir.write(text))
        return info.value.errors

    assert errors("tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n") == [
        f"tls_server_config.cert_file: cannot read {web_dir.directory}/missing.crt: "
        "No such file or directory"
    ]
    assert errors("tls_server_config:\n  cert_file: server.crt\n") == [
        "tls_server_config: needs key_file (or key, the PEM inline) to serve TLS"
    ]
    web_dir.install(web_dir.pki.renewed, "renewed")
    assert errors("tls_server_config:\n  cert_file: server.crt\n  key_file: renewed.key\n") == [
        "tls_server_config: the key in key_file does not belong to the certificate in cert_file"
    ]
    assert errors("tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n") == [
        "tls_server_config.cert_file: contains no PEM certificate"
    ]
    assert errors(TLS + "  cert: inline\n") == [
        "tls_server_config.cert_file: set either cert (the PEM inline) or cert_file, not both"
    ]
    assert errors(TLS + "  client_ca_file: clients-ca.crt\n") == [
        "tls_server_config.client_ca_file: has no effect without client_auth_type; to check "
        "client certificates, set client_auth_type: RequireAndVerifyClientCert"
    ]
    assert errors(TLS + "  client_auth_type: VerifyClientCertIfGiven\n") == [
        "tls_server_config.client_auth_type: VerifyClientCertIfGiven needs client_ca_file (or "
        "client_ca): the CA that signs client certificates (poolwatch does not trust the "
        "system's CAs for clients)"
    ]
    assert errors(TLS + "  client_allowed_sans: [a.example]\n") == [
        "tls_server_config.client_allowed_sans: needs client_auth_type: "
        "RequireAndVerifyClientCert (other types let a client connect without a certificate "
        "to match)"
    ]
    assert errors(TLS + "  min_version: TLS13\n  max_version: TLS12\n") == [
        "tls_server_config.max_version: must not be below min_version (TLS12 < TLS13)"
    ]
    assert errors(MTLS.replace("clients-ca.crt", "server.key")) == [
        "tls_server_config.client_ca_file: contains no PEM certificate"
    ]


def test_encrypted_keys_are_refused_without_prompting(web_dir: WebConfigDir) -> None:
    key = web_dir.directory / "encrypted.key"
    openssl(
        web_dir.directory,
        *("pkey", "-in", str(web_dir.pki.server.key), "-out", str(key), "-aes256"),
        *("-passout", "pass:secret"),
    )

    with pytest.raises(WebConfigError) as info:
        load_web_config(web_dir.write(TLS.replace("server.key", "encrypted.key")))

    assert info.value.errors == [
        "tls_server_config.key_file: the key is encrypted; poolwatch, like exporter-toolkit, "
        "needs an unencrypted key"
    ]


def test_errors_never_show_secrets(tmp_path: Path) -> None:
    # 52 characters after the cost, one short of a hash: invalid, and never to be shown.
    secret_hash = "$2y$10$" + "SECRET" * 8 + "SECR"
    cases = [
        f"basic_auth_users:\n  alice: {secret_hash}\n",
        "tls_server_config:\n  cert_file: /dev/null\n  key: SECRET-KEY-MATERIAL\n",
        f"basic_auth_users:\n  alice: {secret_hash}\n  bob: [\n",
        f"basic_auth_users:\n  alice: [{secret_hash}]\n",
    ]
    for text in cases:
        path = tmp_path / "web.yml"
        path.write_text(text)
        with pytest.raises(WebConfigError) as info:
            load_web_config(path)
        assert "SECRET" not in str(info.value), text


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError) as info:
        load_web_config(tmp_path / "absent.yml")

    assert info.value.errors == ["cannot read the file: No such file or directory"]
