"""Serving a web config file in tests: `WebConfigDir` (a config file and the certificates it
names, replaced as an operator would), a real server on 127.0.0.1 port 0 (`serve`), and clients
that reach it over TLS: aiohttp for requests (`get`), asyncio SSL streams where the handshake
itself is under test (`raw_get`, `refused`).

Certificates come from tests/unit/pki.py (the `pki` fixture in conftest.py).
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
from prometheus_client import CollectorRegistry

from poolwatch.exporter.collector import InventoryCollector
from poolwatch.exporter.exposition import Exposition
from poolwatch.web.app import HttpServer, create_app, start_http_server
from tests.unit.factories import sample_inventory, sample_telemetry
from tests.unit.pki import KeyPair, Pki

# Checks for changed files this often in tests, instead of every 5 s.
FAST_CHECKS = 0.02


def hashed(password: str, cost: int = 4) -> str:
    # Cost 4 keeps the functional tests fast; the timing test uses a realistic cost.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()


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


def authorization(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"
