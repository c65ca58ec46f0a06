"""The web config file: exporter-toolkit's format, TLS, basic auth, headers and reloads.

Certificates are made at test time with the openssl command (a CA, two server certificates,
client certificates from two CAs), and the real server is started on 127.0.0.1 port 0 and
reached with real TLS clients: aiohttp for requests, asyncio SSL streams where the handshake
itself is under test.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import statistics
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import structlog
from prometheus_client import CollectorRegistry

from poolwatch import cli
from poolwatch.cli import ExitCode, main
from poolwatch.config import Config, parse_config
from poolwatch.errors import ConfigError, StartupError
from poolwatch.exporter.collector import InventoryCollector
from poolwatch.exporter.exposition import Exposition
from poolwatch.web.app import HttpServer, create_app, start_http_server
from poolwatch.web.security import (
    BasicAuth,
    RateLimit,
    TokenBucket,
    Verdict,
    WebConfigError,
    load_web_config,
    parse_basic_authorization,
)
from tests.unit.factories import FakeClock, sample_inventory, sample_telemetry
from tests.unit.pki import KeyPair, Pki, openssl

# exporter-toolkit's documented example hash (a valid bcrypt hash; the password is irrelevant).
HASH_TAIL = "X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG"
EXAMPLE = Path(__file__).parents[2] / "config" / "web-config.yml"
# Checks for changed files this often in tests, instead of every 5 s.
FAST_CHECKS = 0.02


def hashed(password: str, cost: int = 4) -> str:
    # Cost 4 keeps the functional tests fast; the timing test uses a realistic cost.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()


# --- serving ----------------------------------------------------------------------------------


class WebConfigDir:
    """A directory holding a web config file and copies of the certificates it names, so tests
    can replace them as an operator (or certbot) would."""

    def __init__(self, directory: Path, pki: Pki) -> None:
        self.directory = directory
        self.pki = pki
        self.path = directory / "web-config.yml"
        self.install(pki.server, "server")
        self.install(pki.ca, "clients-ca")

    def install(self, pair: KeyPair, name: str) -> None:
        """Atomically put `pair` at name.crt/name.key (new inodes, like a renewal)."""
        for source, suffix in ((pair.cert, "crt"), (pair.key, "key")):
            temporary = self.directory / f".{name}.{suffix}.new"
            shutil.copyfile(source, temporary)
            temporary.replace(self.directory / f"{name}.{suffix}")

    def write(self, text: str) -> Path:
        temporary = self.directory / ".web-config.yml.new"
        temporary.write_text(text)
        temporary.replace(self.path)
        return self.path


TLS = """
tls_server_config:
  cert_file: server.crt
  key_file: server.key
"""
MTLS = """
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: clients-ca.crt
"""


def users(**passwords: str) -> str:
    lines = "".join(f"  {user}: {hashed(password)}\n" for user, password in passwords.items())
    return "basic_auth_users:\n" + lines


@pytest.fixture
def web_dir(tmp_path: Path, pki: Pki) -> WebConfigDir:
    return WebConfigDir(tmp_path, pki)


@asynccontextmanager
async def serve(config: Path, *, check_interval: float = FAST_CHECKS) -> AsyncIterator[HttpServer]:
    inventory = sample_inventory()
    registry = CollectorRegistry()
    telemetry = sample_telemetry()
    collector = InventoryCollector(
        inventory, telemetry, version="0.1.0", libvirt_version="10.0.0", python_version="3"
    )
    registry.register(collector)
    exposition = Exposition(registry, collector.generation)
    app = create_app(inventory=inventory, telemetry=telemetry, exposition=exposition)
    server = await start_http_server(
        app=app,
        listen=["127.0.0.1:0"],
        web_config_file=config,
        check_interval=check_interval,
    )
    try:
        yield server
    finally:
        await server.close()


def url(server: HttpServer, path: str) -> str:
    host, port = server.addresses[0]
    return f"{server.scheme}://{host}:{port}{path}"


def trusting(pki: Pki, client: KeyPair | None = None) -> ssl.SSLContext:
    """A client context that trusts the test CA, optionally with a client certificate."""
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]


async def get(
    server: HttpServer,
    path: str,
    *,
    context: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> Answer:
    headers = {} if auth is None else {"Authorization": authorization(*auth)}
    ssl_arg: ssl.SSLContext | bool = True if context is None else context
    if session is None:
        async with aiohttp.ClientSession() as own:
            return await get(server, path, context=context, auth=auth, session=own)
    async with session.get(url(server, path), ssl=ssl_arg, headers=headers) as response:
        await response.read()
        return Answer(response.status, dict(response.headers))


async def raw_get(
    server: HttpServer, context: ssl.SSLContext, path: str = "/healthz"
) -> tuple[bytes, dict[str, Any]]:
    """The status line of a request over one new TLS connection, and the server certificate
    as the client saw it. Raises ssl.SSLError when the handshake fails."""
    host, port = server.addresses[0]
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        peercert = writer.get_extra_info("peercert") or {}
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = await reader.read()
    finally:
        writer.close()
        # The server may already have dropped a refused connection.
        with _suppress_connection_errors():
            await writer.wait_closed()
    return answer.split(b"\r\n", 1)[0], peercert


class _suppress_connection_errors:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, ConnectionError | ssl.SSLError)


def listening_context(server: HttpServer) -> ssl.SSLContext:
    # What the sockets hold is internal on purpose; tests look anyway.
    security = server._security
    assert security is not None
    context = security.ssl_context
    assert context is not None
    return context


async def serial_seen(server: HttpServer, pki: Pki) -> str:
    _, peercert = await raw_get(server, trusting(pki))
    return str(peercert["serialNumber"])


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(FAST_CHECKS)


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


# --- the TOML key and the flag ----------------------------------------------------------------


def test_config_file_key_names_the_web_config(
    web_dir: WebConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    path = web_dir.write(TLS)
    toml = web_dir.directory / "poolwatch.toml"
    toml.write_text(f'[web]\nconfig_file = "{path}"\n')

    assert main(["check-config", str(toml)]) == ExitCode.OK
    assert parse_config(toml.read_text(), source="x").web.config_file == str(path)

    web_dir.write(TLS + "  min_version: TLS99\n")
    assert main(["check-config", str(toml)]) == ExitCode.CONFIG_INVALID
    assert capsys.readouterr().err == (
        f"invalid configuration in {toml} (1 error):\n"
        f'  web.config_file: {path}: tls_server_config.min_version: unknown TLS version "TLS99" '
        "(use TLS10, TLS11, TLS12 or TLS13)\n"
    )


def test_config_file_key_must_be_absolute() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[web]\nconfig_file = "web.yml"\n', source="poolwatch.toml")

    assert info.value.errors == [
        "web.config_file: must be an absolute path, e.g. /etc/poolwatch/web-config.yml "
        '(got "web.yml")'
    ]


@pytest.fixture
def fake_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Config]:
    calls: list[Config] = []

    def run(config: Config, **_: object) -> int:
        calls.append(config)
        return 0

    monkeypatch.setattr(cli, "_run_daemon", run)
    monkeypatch.setattr(cli, "DEFAULT_CONFIG_PATH", tmp_path / "absent" / "poolwatch.toml")
    monkeypatch.chdir(tmp_path)
    return calls


@pytest.fixture
def _reset_structlog() -> Iterator[None]:
    # The CLI configures logging onto pytest's captured stderr, which is closed after the test.
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("_reset_structlog")
def test_flag_sets_the_web_config_file(web_dir: WebConfigDir, fake_daemon: list[Config]) -> None:
    web_dir.write(TLS)

    # Relative to the working directory, as for other flags; stored absolute.
    assert main(["--web.config.file", "web-config.yml", "--log.format", "json"]) == ExitCode.OK

    assert fake_daemon[0].web.config_file == str(web_dir.path)


@pytest.mark.usefixtures("_reset_structlog")
def test_empty_flag_removes_the_files_web_config(
    web_dir: WebConfigDir, fake_daemon: list[Config]
) -> None:
    toml = web_dir.directory / "poolwatch.toml"
    toml.write_text(f'[web]\nconfig_file = "{web_dir.write(TLS)}"\n')

    argv = ["--config.file", str(toml), "--web.config.file", "", "--log.format", "json"]
    assert main(argv) == ExitCode.OK

    assert fake_daemon[0].web.config_file is None


def test_invalid_web_config_exits_with_the_config_code(
    web_dir: WebConfigDir, fake_daemon: list[Config], capsys: pytest.CaptureFixture[str]
) -> None:
    web_dir.write("tls_server_config:\n  min_version: TLS99\n")

    assert main(["--web.config.file", "web-config.yml"]) == ExitCode.CONFIG_INVALID

    assert fake_daemon == []
    assert capsys.readouterr().err == (
        "invalid configuration in command-line flags (1 error):\n"
        f"  --web.config.file: {web_dir.path}: tls_server_config.min_version: unknown TLS version "
        '"TLS99" (use TLS10, TLS11, TLS12 or TLS13)\n'
    )


def test_check_config_checks_the_web_config(
    web_dir: WebConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    web_dir.write("basic_auth_users:\n  alice: nope\n")
    toml = web_dir.directory / "poolwatch.toml"
    toml.write_text(f'[web]\nconfig_file = "{web_dir.path}"\n')

    assert main(["check-config", str(toml)]) == ExitCode.CONFIG_INVALID

    assert f"web.config_file: {web_dir.path}: basic_auth_users.alice: is not a bcrypt hash" in (
        capsys.readouterr().err
    )


# --- serving: basic auth ----------------------------------------------------------------------


async def test_basic_auth_over_tls(web_dir: WebConfigDir) -> None:
    path = web_dir.write(TLS + users(alice="right password", bob="bobs password"))
    context = trusting(web_dir.pki)

    async with serve(path) as server:
        assert server.scheme == "https"
        ok = await get(server, "/api/v1/pools", context=context, auth=("alice", "right password"))
        wrong = await get(server, "/api/v1/pools", context=context, auth=("alice", "wrong"))
        unknown = await get(server, "/api/v1/pools", context=context, auth=("eve", "x"))
        bobs = await get(server, "/metrics", context=context, auth=("alice", "bobs password"))
        missing = await get(server, "/metrics", context=context)
        health = await get(server, "/healthz", context=context)
        # An unknown path reveals nothing without credentials, and is a 404 with them.
        lost = await get(server, "/nowhere", context=context)
        found_lost = await get(server, "/nowhere", context=context, auth=("bob", "bobs password"))

    assert ok.status == 200
    for answer in (wrong, unknown, bobs, missing, lost):
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="poolwatch"'
    assert health.status == 200
    assert found_lost.status == 404


async def test_basic_auth_without_tls(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(users(alice="pw"))

    async with serve(path) as server:
        assert server.scheme == "http"
        assert (await get(server, "/readyz", auth=("alice", "pw"))).status in (200, 503)
        assert (await get(server, "/readyz")).status == 401


async def test_unknown_user_costs_as_much_as_a_wrong_password(web_dir: WebConfigDir) -> None:
    # Real bcrypt at the cost htpasswd -B uses by default: a user name must not be guessable by
    # timing. Ten tries each, interleaved, compared by median; both must take about one bcrypt
    # check, so neither skips it.
    cost = 10
    path = web_dir.write(
        TLS + f"basic_auth_users:\n  alice: {hashed('right', cost)}\n  bob: {hashed('b', cost)}\n"
    )
    secret = bcrypt.hashpw(b"x", bcrypt.gensalt(cost))
    one_check = statistics.median(_timed(lambda: bcrypt.checkpw(b"y", secret)) for _ in range(3))

    wrong: list[float] = []
    unknown: list[float] = []
    async with serve(path) as server, aiohttp.ClientSession() as session:
        context = trusting(web_dir.pki)
        # The connection is set up once, so the figures are the requests' alone.
        await get(server, "/healthz", context=context, session=session)
        for attempt in range(10):
            for user, times in (("alice", wrong), ("mallory", unknown)):
                started = time.perf_counter()
                answer = await get(
                    server, "/metrics", context=context, session=session, auth=(user, f"g{attempt}")
                )
                times.append(time.perf_counter() - started)
                assert answer.status == 401

    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.5 < ratio < 2.0, (statistics.median(unknown), statistics.median(wrong))
    assert statistics.median(wrong) > 0.5 * one_check
    assert statistics.median(unknown) > 0.5 * one_check


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


async def test_rate_limit_spares_healthz(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("rate_limit:\n  interval: 1h\n  burst: 2\n")

    async with serve(path) as server:
        statuses = [(await get(server, "/readyz")).status for _ in range(3)]
        health = await get(server, "/healthz")
        limited = await get(server, "/metrics")

    assert statuses[2] == 429
    assert 429 not in statuses[:2]
    assert health.status == 200
    assert (limited.status, limited.headers["Retry-After"]) == (429, "1")


async def test_configured_headers_on_every_response(web_dir: WebConfigDir) -> None:
    path = web_dir.write(
        TLS
        + users(alice="pw")
        + "http_server_config:\n  headers:\n"
        + "    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=60\n"
    )
    context = trusting(web_dir.pki)

    async with serve(path) as server:
        answers = [
            await get(server, "/", context=context, auth=("alice", "pw")),
            await get(server, "/metrics", context=context),
            await get(server, "/healthz", context=context),
            await get(server, "/nowhere", context=context, auth=("alice", "pw")),
        ]

    assert [answer.status for answer in answers] == [200, 401, 200, 404]
    for answer in answers:
        assert answer.headers["X-Frame-Options"] == "deny"
        assert answer.headers["Strict-Transport-Security"] == "max-age=60"


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


async def refused(server: HttpServer, context: ssl.SSLContext, path: str = "/healthz") -> bool:
    """Whether the server refused this TLS client: in the handshake, or by closing the
    connection right after it (TLS 1.3 checks the client certificate after the client is
    done). asyncio's server closes without sending TLS alerts, so the client sees a reset or
    an end of file, never the reason."""
    try:
        status, _ = await raw_get(server, context, path)
    except (ssl.SSLError, ConnectionError) as exc:
        # Not a failure of the client itself: it got as far as sending its hello.
        return "no protocols available" not in str(exc)
    return status == b""


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


async def test_renewed_certificate_applies_to_new_connections(web_dir: WebConfigDir) -> None:
    async with serve(web_dir.write(TLS)) as server:
        listening = listening_context(server)
        assert await serial_seen(server, web_dir.pki) == "1001"

        web_dir.install(web_dir.pki.renewed, "server")

        async def renewed() -> bool:
            return await serial_seen(server, web_dir.pki) == "2002"

        await eventually(renewed)
        # The listening sockets kept their context; new connections switched.
        assert listening_context(server) is listening


async def test_changed_client_ca_applies_without_accumulating(web_dir: WebConfigDir) -> None:
    pki = web_dir.pki

    async with serve(web_dir.write(MTLS)) as server:
        assert (await raw_get(server, trusting(pki, pki.client)))[0] == b"HTTP/1.1 200 OK"

        web_dir.install(pki.ca2, "clients-ca")

        async def switched() -> bool:
            return await refused(server, trusting(pki, pki.client))

        # The old CA is no longer trusted (loading into the same context would add, not replace).
        await eventually(switched)
        assert (await raw_get(server, trusting(pki, pki.client2)))[0] == b"HTTP/1.1 200 OK"


async def test_client_certificates_can_be_required_by_a_reload(web_dir: WebConfigDir) -> None:
    # The verify mode is one of the settings OpenSSL copies from the listening context when a
    # connection starts, so it must change there, in place.
    pki = web_dir.pki

    async with serve(web_dir.write(TLS)) as server:
        assert not await refused(server, trusting(pki))

        web_dir.write(MTLS)

        async def required() -> bool:
            return await refused(server, trusting(pki))

        await eventually(required)
        status, _ = await raw_get(server, trusting(pki, pki.client))

    assert status == b"HTTP/1.1 200 OK"


async def test_invalid_reload_keeps_serving_the_old_settings(web_dir: WebConfigDir) -> None:
    pki = web_dir.pki
    context = trusting(pki)

    with structlog.testing.capture_logs() as logs:
        async with serve(web_dir.write(TLS + users(alice="old"))) as server:
            web_dir.write(TLS + users(alice="new") + "  bob: not-a-hash\n")

            async def failed() -> bool:
                return any(log["event"] == "web_config_reload_failed" for log in logs)

            await eventually(failed)
            old = await get(server, "/metrics", context=context, auth=("alice", "old"))
            assert await serial_seen(server, pki) == "1001"

            # A renewal with a key that does not match fails too, and changes nothing.
            shutil.copyfile(pki.renewed.cert, web_dir.directory / "server.crt")
            web_dir.write(TLS + users(alice="new"))

            async def second_failure() -> bool:
                return [log["event"] for log in logs].count("web_config_reload_failed") == 2

            await eventually(second_failure)
            assert await serial_seen(server, pki) == "1001"
            still_old = await get(server, "/metrics", context=context, auth=("alice", "old"))

            # Once the key arrives, the new settings apply.
            shutil.copyfile(pki.renewed.key, web_dir.directory / "server.key")

            async def reloaded() -> bool:
                return any(log["event"] == "web_config_reloaded" for log in logs)

            await eventually(reloaded)
            new = await get(server, "/metrics", context=context, auth=("alice", "new"))
            gone = await get(server, "/metrics", context=context, auth=("alice", "old"))
            assert await serial_seen(server, pki) == "2002"

    assert (old.status, still_old.status, new.status, gone.status) == (200, 200, 200, 401)
    failures = [log for log in logs if log["event"] == "web_config_reload_failed"]
    assert failures[0]["log_level"] == "error"
    assert failures[0]["errors"] == [
        'basic_auth_users.bob: is not a bcrypt hash (generate one with: htpasswd -nBC 10 "" '
        "| tr -d ':\\n')"
    ]
    assert failures[1]["errors"] == [
        "tls_server_config: the key in key_file does not belong to the certificate in cert_file"
    ]
    # No hash reaches the log.
    assert "$2b$" not in repr(logs)


async def test_sighup_reloads_at_once(web_dir: WebConfigDir) -> None:
    context = trusting(web_dir.pki)

    async with serve(web_dir.write(TLS + users(alice="old")), check_interval=3600) as server:
        web_dir.write(TLS + users(alice="new"))
        assert server.reload_web_config() is True
        new = await get(server, "/metrics", context=context, auth=("alice", "new"))

        web_dir.write("tls_server_config: {\n")
        with structlog.testing.capture_logs() as logs:
            assert server.reload_web_config() is False
        still_new = await get(server, "/metrics", context=context, auth=("alice", "new"))

    assert (new.status, still_new.status) == (200, 200)
    assert [log["event"] for log in logs] == ["web_config_reload_failed"]


async def test_turning_tls_off_needs_a_restart(web_dir: WebConfigDir) -> None:
    async with serve(web_dir.write(TLS), check_interval=3600) as server:
        web_dir.write(users(alice="pw"))
        with structlog.testing.capture_logs() as logs:
            assert server.reload_web_config() is True
        # Still TLS, now with the file's users.
        answer = await get(server, "/metrics", context=trusting(web_dir.pki))

    assert answer.status == 401
    assert logs[0]["event"] == "web_config_reload_needs_restart"
    assert "TLS turned off" in logs[0]["reason"]


async def test_invalid_web_config_at_start(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  min_version: TLS99\n")
    app = create_app(
        inventory=sample_inventory(),
        telemetry=sample_telemetry(),
        exposition=Exposition(CollectorRegistry(), int),
    )

    with pytest.raises(StartupError) as info:
        await start_http_server(app=app, listen=["127.0.0.1:0"], web_config_file=path)

    assert str(info.value) == (
        f"invalid web config file {path}: tls_server_config.min_version: unknown TLS version "
        '"TLS99" (use TLS10, TLS11, TLS12 or TLS13)'
    )


# --- basic auth, without a server -------------------------------------------------------------


def authorization(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


class CountingCheck:
    """Stands in for bcrypt.checkpw: counts calls, optionally waits for a go-ahead."""

    def __init__(self, *, block: bool = False) -> None:
        self.calls: list[bytes] = []
        self.running = 0
        self.most_running = 0
        self.go = threading.Event()
        if not block:
            self.go.set()
        self._lock = threading.Lock()

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        with self._lock:
            self.calls.append(hashed)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.go.wait(5)
        with self._lock:
            self.running -= 1
        return bcrypt.checkpw(password, hashed)


@pytest.fixture(scope="module")
def alice_hash() -> bytes:
    return hashed("secret", cost=5).encode()


async def test_successful_logins_are_cached_for_a_while(alice_hash: bytes) -> None:
    check = CountingCheck()
    clock = FakeClock(0.0)
    auth = BasicAuth({"alice": alice_hash}, check=check, cache_ttl=60.0, clock=clock)
    right = authorization("alice", "secret")
    try:
        assert await auth.check(right) is Verdict.ALLOWED
        assert await auth.check(right) is Verdict.ALLOWED
        assert len(check.calls) == 1

        clock.now += 61
        assert await auth.check(right) is Verdict.ALLOWED
        assert len(check.calls) == 2

        # Failures are never cached: each costs a full check.
        for _ in range(2):
            assert await auth.check(authorization("alice", "guess")) is Verdict.DENIED
        assert len(check.calls) == 4

        # A reload forgets every login.
        auth.update({"alice": alice_hash})
        assert await auth.check(right) is Verdict.ALLOWED
        assert len(check.calls) == 5
    finally:
        await auth.close()


async def test_unknown_users_are_checked_against_a_hash_of_the_users_cost(
    alice_hash: bytes,
) -> None:
    check = CountingCheck()
    auth = BasicAuth({"alice": alice_hash, "bob": hashed("b", cost=5).encode()}, check=check)
    try:
        assert await auth.check(authorization("mallory", "secret")) is Verdict.DENIED
        assert await auth.check(authorization("mallory", "secret")) is Verdict.DENIED
    finally:
        await auth.close()

    assert len(check.calls) == 2
    assert all(call.startswith(b"$2b$05$") for call in check.calls)


async def test_malformed_credentials_are_denied_without_a_check(alice_hash: bytes) -> None:
    check = CountingCheck()
    auth = BasicAuth({"alice": alice_hash}, check=check)
    try:
        for header in (None, "Bearer x", "Basic !!!", "Basic " + "YWxpY2U=", "Basic"):
            assert await auth.check(header) is Verdict.DENIED, header
        assert await auth.check(authorization("alice", "x" * 73)) is Verdict.DENIED
    finally:
        await auth.close()

    assert check.calls == []


def test_parse_basic_authorization() -> None:
    assert parse_basic_authorization(authorization("alice", "pa:ss")) == ("alice", b"pa:ss")
    assert parse_basic_authorization("basic  " + "YTpi") == ("a", b"b")
    assert parse_basic_authorization("Basic /w==") is None  # no colon
    user, _ = parse_basic_authorization("Basic " + "/zpi") or ("", b"")
    assert user == "\udcff"  # not UTF-8: matches no configured user


async def test_pending_checks_are_bounded(alice_hash: bytes) -> None:
    check = CountingCheck(block=True)
    auth = BasicAuth({"alice": alice_hash}, check=check, workers=2, max_pending=4)
    try:
        # Four distinct wrong passwords fill the queue; their clients then hang up.
        waiting = [
            asyncio.create_task(auth.check(authorization("alice", f"guess{n}"))) for n in range(4)
        ]
        await asyncio.sleep(0.05)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)

        # Hanging up does not free a slot before bcrypt is done: no unbounded queue.
        assert await auth.check(authorization("alice", "secret")) is Verdict.BUSY
        assert check.most_running == 2

        check.go.set()

        async def drained() -> bool:
            return await auth.check(authorization("alice", "secret")) is Verdict.ALLOWED

        await eventually(drained)
    finally:
        check.go.set()
        await auth.close()

    assert check.most_running == 2
    assert len(check.calls) == 5


async def test_identical_concurrent_checks_share_one(alice_hash: bytes) -> None:
    check = CountingCheck()
    auth = BasicAuth({"alice": alice_hash}, check=check)
    try:
        verdicts = await asyncio.gather(
            *(auth.check(authorization("alice", "secret")) for _ in range(10))
        )
    finally:
        await auth.close()

    assert verdicts == [Verdict.ALLOWED] * 10
    assert len(check.calls) == 1


def test_token_bucket() -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(RateLimit(interval=2.0, burst=2), clock=clock)

    assert [bucket.allow() for _ in range(3)] == [True, True, False]
    clock.now += 1.0
    assert bucket.allow() is False
    clock.now += 1.0
    assert [bucket.allow() for _ in range(2)] == [True, False]
