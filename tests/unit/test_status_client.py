"""`poolwatch status`: how it reads the API's answer and the daemon URL, and the command
against real servers, including how it fails."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from poolwatch.cli import ExitCode, main
from poolwatch.documents import pools_document
from poolwatch.exporter.exposition import Exposition
from poolwatch.status import InvalidAnswer, daemon_url, parse_pools, render_table
from poolwatch.web.app import create_app, start_http_server
from tests.unit.factories import GIB, FakeClock, policy_inventory, policy_telemetry
from tests.unit.pki import Pki
from tests.unit.test_status import THEN, columns_of

# --- reading the answer -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ([], "the document: expected an object"),
        ({}, "the document.hosts: expected a list"),
        ({"hosts": [1]}, "hosts[0]: expected an object"),
        ({"hosts": [{"name": "a", "up": 1, "pools": []}]}, "hosts[0].up: expected true or false"),
        ({"hosts": [{"name": "a", "up": True}]}, "hosts[0].pools: expected a list"),
    ],
)
def test_invalid_documents(document: object, where: str) -> None:
    with pytest.raises(InvalidAnswer) as raised:
        parse_pools(document, url="http://x")
    assert str(raised.value) == f"invalid answer from http://x: {where}"


def _sample_pool_doc() -> dict[str, object]:
    document = pools_document(policy_inventory())
    default: dict[str, object] = json.loads(json.dumps(document["hosts"][0]["pools"][1]))
    assert default["name"] == "default"
    return default


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"capacity": True}, "pool 'default'.capacity: expected an integer"),
        ({"capacity": 1.5}, "pool 'default'.capacity: expected an integer"),
        ({"fill_ratio": float("nan")}, "pool 'default'.fill_ratio: expected a number"),
        ({"fill_ratio": "40%"}, "pool 'default'.fill_ratio: expected a number"),
        ({"name": None}, "pool None.name: expected a string"),
        ({"policy": []}, "pool 'default'.policy: expected an object"),
        (
            {"policy": {"autostart": {"mode": "boot", "failures": "2", "gave_up": False}}},
            "pool 'default'.policy.autostart.failures: expected an integer",
        ),
        (
            {"policy": {"time_to_full_seconds": float("inf")}},
            "pool 'default'.policy.time_to_full_seconds: expected a number",
        ),
    ],
)
def test_invalid_pools(change: dict[str, object], where: str) -> None:
    document = {"hosts": [{"name": "a", "up": True, "pools": [{**_sample_pool_doc(), **change}]}]}
    with pytest.raises(InvalidAnswer) as raised:
        parse_pools(document)
    assert str(raised.value) == f"invalid answer from /api/v1/pools: {where}"


def test_a_stopped_pool_is_read_without_figures() -> None:
    document = json.loads(json.dumps(pools_document(policy_inventory())))
    [backup] = [p for p in document["hosts"][0]["pools"] if p["name"] == "backup"]
    assert backup["active"] is False
    assert (backup["capacity"], backup["allocation"], backup["available"]) == (None, None, None)
    # A daemon from before sends libvirt's stale figures instead: they are not taken either.
    stale = {**backup, "capacity": 500 * GIB, "allocation": 499 * GIB, "available": GIB}
    for pool_doc in (backup, stale):
        [row] = parse_pools({"hosts": [{"name": "a", "up": True, "pools": [pool_doc]}]})
        assert (row.pool, row.active) == ("backup", False)
        assert (row.fill_ratio, row.allocation, row.capacity) == (None, None, None)
        header, line = render_table([row], now=THEN).splitlines()
        cells = columns_of(line, header)
        assert (cells["STATE"], cells["USAGE"], cells["USED/SIZE"]) == ("inactive", "-", "-")


def test_unknown_fields_are_ignored() -> None:
    pool_doc = {**_sample_pool_doc(), "added_in_a_later_version": {"x": 1}}
    [row] = parse_pools({"hosts": [{"name": "a", "up": True, "pools": [pool_doc], "new": 1}]})
    assert (row.pool, row.level, row.time_to_full) == ("default", "critical", 12000.0)


@pytest.mark.parametrize(
    ("text", "api_url"),
    [
        ("http://127.0.0.1:9479", "http://127.0.0.1:9479/api/v1/pools"),
        ("http://127.0.0.1:9479/", "http://127.0.0.1:9479/api/v1/pools"),
        ("localhost:9479", "http://localhost:9479/api/v1/pools"),
        ("https://[::1]:9479/poolwatch/", "https://[::1]:9479/poolwatch/api/v1/pools"),
        ("http://kvm01:9479/api/v1/pools", "http://kvm01:9479/api/v1/pools"),
        ("http://kvm01:9479/?x=1#y", "http://kvm01:9479/api/v1/pools"),
    ],
)
def test_daemon_url(text: str, api_url: str) -> None:
    url = daemon_url(text)
    assert (url.api_url, url.authorization, str(url)) == (api_url, None, api_url)


def test_daemon_url_with_credentials_keeps_them_out_of_messages() -> None:
    url = daemon_url("http://ops:s%40cret@kvm01:9479")
    assert url.api_url == "http://kvm01:9479/api/v1/pools"
    assert url.authorization == "Basic b3BzOnNAY3JldA=="  # ops:s@cret


@pytest.mark.parametrize(
    "text", ["ftp://kvm01/", "file:///etc/passwd", "http://", "http://h:99999"]
)
def test_daemon_url_refuses_what_cannot_be_poolwatch(text: str) -> None:
    with pytest.raises(ValueError, match="invalid URL"):
        daemon_url(text)


# --- the command against real servers ---------------------------------------------------------


@asynccontextmanager
async def served_app(
    app: web.Application, web_config_file: Path | None = None
) -> AsyncIterator[str]:
    server = await start_http_server(
        app=app, listen=["127.0.0.1:0"], web_config_file=web_config_file
    )
    try:
        host, port = server.addresses[0]
        yield f"{server.scheme}://{host}:{port}"
    finally:
        await server.close()


def fake_daemon(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.Application:
    app = web.Application()
    app.router.add_get("/api/v1/pools", handler)
    return app


async def status(*argv: str) -> int:
    # main() blocks in urllib; the server it asks runs on this test's event loop.
    return await asyncio.to_thread(main, ["status", *argv])


async def test_status_reads_a_running_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    inventory = policy_inventory()
    exposition = Exposition(CollectorRegistry(), lambda: inventory.generation)
    app = create_app(
        inventory=inventory,
        telemetry=policy_telemetry(),
        exposition=exposition,
        clock=FakeClock(THEN),
    )
    async with served_app(app) as url:
        assert await status("--web.url", url) == ExitCode.OK

    out, err = capsys.readouterr()
    assert err == ""
    header, *lines = out.splitlines()
    assert header.startswith("HOST")
    assert len(lines) == 5
    default = columns_of(lines[1], header)
    assert (default["POOL"], default["USAGE"], default["LEVEL"], default["FORECAST"]) == (
        "default",
        "[####------]  40%",
        "CRITICAL",
        "3h20m",
    )
    assert columns_of(lines[4], header)["HOST"] == "beta (down)"


async def test_status_sends_basic_auth_from_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"generation": 1, "hosts": []})

    async with served_app(fake_daemon(handler)) as url:
        authed = url.replace("http://", "http://ops:secret@")
        assert await status("--web.url", authed) == ExitCode.OK

    assert seen == ["Basic b3BzOnNlY3JldA=="]
    assert capsys.readouterr().out == "The daemon watches no libvirt connections.\n"


def tls_web_config(tmp_path: Path, pki: Pki, *, client_certificates: bool) -> Path:
    """An exporter-toolkit web config serving the test CA's server certificate."""
    lines = [
        "tls_server_config:",
        f"  cert_file: {pki.server.cert}",
        f"  key_file: {pki.server.key}",
    ]
    if client_certificates:
        lines += [
            "  client_auth_type: RequireAndVerifyClientCert",
            f"  client_ca_file: {pki.ca.cert}",
        ]
    path = tmp_path / "web-config.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def no_hosts(request: web.Request) -> web.Response:
    return web.json_response({"generation": 1, "hosts": []})


async def test_status_over_https_trusts_the_ca_it_is_given(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tls_web_config(tmp_path, pki, client_certificates=False)
    async with served_app(fake_daemon(no_hosts), config) as url:
        assert url.startswith("https://")
        # The test CA is in no trust store: without it, the daemon cannot be verified.
        assert await status("--web.url", url) == ExitCode.UNREACHABLE
        assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err
        assert await status("--web.url", url, "--tls.ca-file", str(pki.ca.cert)) == ExitCode.OK
    assert capsys.readouterr().out == "The daemon watches no libvirt connections.\n"


async def test_status_presents_a_client_certificate_where_the_daemon_requires_one(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tls_web_config(tmp_path, pki, client_certificates=True)
    ca = ("--tls.ca-file", str(pki.ca.cert))
    async with served_app(fake_daemon(no_hosts), config) as url:
        assert await status("--web.url", url, *ca) == ExitCode.UNREACHABLE
        client = ("--tls.cert-file", str(pki.client.cert), "--tls.key-file", str(pki.client.key))
        assert await status("--web.url", url, *ca, *client) == ExitCode.OK
        # A client certificate from another CA is refused like none at all.
        other = ("--tls.cert-file", str(pki.client2.cert), "--tls.key-file", str(pki.client2.key))
        assert await status("--web.url", url, *ca, *other) == ExitCode.UNREACHABLE


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (("--tls.key-file", "/nonexistent.key"), "--tls.key-file needs --tls.cert-file"),
        (("--tls.ca-file", "/nonexistent/ca.crt"), "cannot use the TLS files given"),
        (("--tls.cert-file", "/nonexistent/client.crt"), "cannot use the TLS files given"),
    ],
)
async def test_unusable_tls_files_are_a_usage_error(
    flags: tuple[str, ...], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await status("--web.url", "https://127.0.0.1:9", *flags) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"poolwatch status: {problem}")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port  # closed again on return: nothing listens there


async def test_status_exits_5_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"

    assert await status("--web.url", url) == 5

    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"poolwatch status: cannot reach {url}/api/v1/pools: Connection refused\n"


async def test_status_exits_5_when_the_daemon_is_too_slow(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.json_response({"hosts": []})

    async with served_app(fake_daemon(handler)) as url:
        assert await status("--web.url", url, "--timeout", "100ms") == ExitCode.UNREACHABLE

    err = capsys.readouterr().err
    assert err == f"poolwatch status: cannot reach {url}/api/v1/pools: no answer within 0.1 s\n"


@pytest.mark.parametrize(
    ("respond", "message"),
    [
        (lambda: web.Response(text="<html>not me</html>"), "not a JSON document"),
        (lambda: web.Response(status=500, text="boom"), "HTTP 500 Internal Server Error"),
        (
            lambda: web.Response(status=401),
            "HTTP 401 Unauthorized (the daemon requires basic auth: use "
            "http://USER:PASSWORD@HOST:PORT)",
        ),
        (lambda: web.json_response({"hosts": "none"}), "the document.hosts: expected a list"),
    ],
)
async def test_status_exits_5_on_an_invalid_answer(
    respond: Callable[[], web.Response], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return respond()

    async with served_app(fake_daemon(handler)) as url:
        assert await status("--web.url", url) == ExitCode.UNREACHABLE

    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"poolwatch status: invalid answer from {url}/api/v1/pools: {message}\n"
