"""`poolwatch status`: the table it prints, how it reads the API, and how it fails."""

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
from poolwatch.inventory import Inventory
from poolwatch.status import (
    BAR_WIDTH,
    COLUMNS,
    InvalidAnswer,
    PoolRow,
    compact_bytes,
    compact_duration,
    daemon_url,
    parse_pools,
    printable,
    render_table,
    text_width,
    usage_bar,
)
from poolwatch.web.app import create_app, start_http_server
from tests.unit.factories import (
    GIB,
    HOST_A,
    HOST_B,
    HOSTILE,
    NOW,
    URI_A,
    FakeClock,
    policy_inventory,
    pool,
)
from tests.unit.pki import Pki

THEN = NOW + 12  # "now" for the rendering: twelve seconds after the sample was read


def sample_table() -> list[str]:
    document = json.loads(json.dumps(pools_document(policy_inventory())))
    return render_table(parse_pools(document), now=THEN).splitlines()


def columns_of(line: str, header: str) -> dict[str, str]:
    """Cut ``line`` at the header's column starts, counted in terminal columns."""
    ends = [header.index(name) for name in COLUMNS[1:]]
    cells: dict[str, str] = {}
    chars, width = iter(line), 0
    for name, end in zip(COLUMNS, [*ends, None], strict=True):
        cell = ""
        for char in chars:
            cell += char
            width += text_width(char)
            if end is not None and width >= end:
                break
        cells[name] = cell.strip()
    return cells


# --- the table --------------------------------------------------------------------------------


def test_table_of_the_sample() -> None:
    header, *lines = sample_table()

    assert header == "  ".join(  # column widths follow the widest cell
        [
            f"{'HOST':<11}",  # "beta (down)"
            f"{'POOL':<{text_width(printable(HOSTILE))}}",
            f"{'TYPE':<7}",
            f"{'STATE':<8}",
            f"{'USAGE':<17}",
            f"{'USED/SIZE':>9}",
            f"{'LEVEL':<8}",
            f"{'FORECAST':<8}",
            f"{'AUTOSTART':<11}",
            "LAST ACTION",
        ]
    )
    # One line per pool, whatever the names hold; sorted by host, then pool.
    rows = [columns_of(line, header) for line in lines]
    assert [(r["HOST"], r["POOL"]) for r in rows] == [
        (f"{HOST_A} (up)", "backup"),
        (f"{HOST_A} (up)", "default"),
        (f"{HOST_A} (up)", printable(HOSTILE)),
        (f"{HOST_A} (up)", "nfs"),
        (f"{HOST_B} (down)", "images"),
    ]
    backup, default, hostile, nfs, images = rows
    assert default == {
        "HOST": "alpha (up)",
        "POOL": "default",
        "TYPE": "dir",
        "STATE": "running",
        "USAGE": "[####------]  40%",
        "USED/SIZE": "40G/100G",
        "LEVEL": "CRITICAL",
        "FORECAST": "3h20m",
        "AUTOSTART": "boot",
        "LAST ACTION": "hook:page enter_critical ok, 1m ago",
    }
    # A stopped pool: libvirt's stale figures are not drawn.
    assert (backup["STATE"], backup["USAGE"], backup["USED/SIZE"]) == ("inactive", "-", "-")
    assert (backup["LEVEL"], backup["AUTOSTART"]) == ("-", "gave up")
    assert backup["LAST ACTION"] == "start_pool failed, 5m ago"
    assert (hostile["AUTOSTART"], hostile["FORECAST"]) == ("not mounted", "-")
    assert (nfs["USAGE"], nfs["LEVEL"], nfs["FORECAST"], nfs["AUTOSTART"]) == (
        "[#########-]  92%",
        "ok",
        "-",  # shrinking: no time to full
        "-",
    )
    assert (images["LEVEL"], images["USED/SIZE"]) == ("WARNING", "85G/100G")


def test_columns_are_aligned_and_sized_to_their_content() -> None:
    header, *lines = sample_table()
    usage_at = header.index("USAGE")
    for line in lines:
        # Every bar starts in the same terminal column, after the widest pool name.
        before = line[: line.index("[")] if "[" in line else None
        if before is not None:
            assert text_width(before) == usage_at
    assert header.index("TYPE") == header.index("POOL") + text_width(printable(HOSTILE)) + 2
    assert all(line == line.rstrip() for line in lines)


def test_used_size_is_right_aligned() -> None:
    header, *lines = sample_table()
    end = header.index("USED/SIZE") + len("USED/SIZE")
    for line in lines:
        if "G/" in line:
            assert line[end - 1] == "G"
            assert line[end] == " "


@pytest.mark.parametrize(
    ("ratio", "bar"),
    [
        (0.0, "[----------]   0%"),
        (0.004, "[----------]   0%"),
        (0.5, "[#####-----]  50%"),
        (0.875, "[########--]  88%"),
        (0.996, "[#########-]  99%"),  # not full yet: neither bar nor number says so
        (1.0, "[##########] 100%"),
        (1.2, "[##########] 100%"),  # allocation beyond capacity (thin provisioning)
        (-0.1, "[----------]   0%"),
    ],
)
def test_usage_bar(ratio: float, bar: str) -> None:
    assert usage_bar(ratio) == bar
    assert len(bar) == BAR_WIDTH + 7


def test_bars_at_0_50_and_100_percent_in_the_table() -> None:
    rows = [
        PoolRow(
            HOST_A, True, name, "dir", "running", True, ratio, int(ratio * 100 * GIB), 100 * GIB
        )
        for name, ratio in (("empty", 0.0), ("half", 0.5), ("full", 1.0))
    ]
    header, *lines = render_table(rows, now=THEN).splitlines()
    usage = {columns_of(line, header)["POOL"]: columns_of(line, header)["USAGE"] for line in lines}
    assert usage == {
        "empty": "[----------]   0%",
        "full": "[##########] 100%",
        "half": "[#####-----]  50%",
    }
    assert [columns_of(line, header)["USED/SIZE"] for line in lines] == [
        "0B/100G",
        "50G/100G",
        "100G/100G",
    ]


def test_a_down_host_without_pools_still_shows() -> None:
    inventory = Inventory(clock=FakeClock())
    inventory.add_host("kvm02", name="kvm02", uri="qemu+ssh://kvm02/system")
    inventory.add_host(HOST_A, name=HOST_A, uri=URI_A)
    inventory.set_connected(HOST_A, name=HOST_A)
    inventory.replace_pools(HOST_A, {"default": pool("default")})

    header, *lines = render_table(parse_pools(pools_document(inventory)), now=THEN).splitlines()

    rows = [columns_of(line, header) for line in lines]
    assert [(r["HOST"], r["POOL"], r["USAGE"]) for r in rows] == [
        ("alpha (up)", "default", "[####------]  40%"),
        ("kvm02 (down)", "(no pools)", "-"),
    ]
    # Without a "policy" field (an older daemon), or with a null one, no rule applies.
    assert (rows[0]["LEVEL"], rows[0]["FORECAST"], rows[0]["AUTOSTART"]) == ("-", "-", "-")


def test_no_connections() -> None:
    assert render_table([], now=THEN) == "The daemon watches no libvirt connections.\n"


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("a\nb", "a\\nb"),
        ("tab\there\r", "tab\\there\\r"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # no terminal escape sequences
        ("admin\u202egnp.exe", "admin\\u202egnp.exe"),  # no bidi override
        ("line\u2028sep", "line\\u2028sep"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),  # json.loads lets these through
        ("ünïcødé 日本 <b>", "ünïcødé 日本 <b>"),  # printable text stays as it is
    ],
)
def test_printable(name: str, shown: str) -> None:
    assert printable(name) == shown


def test_hostile_names_keep_the_table_intact() -> None:
    names = ["\x1b[2J\x1b[Hgotcha", "two\nlines", "日本語プール", "e\u0301cole"]
    rows = [
        PoolRow(f"h\x07st\n{i}", True, name, "dir\n", "running", False)
        for i, name in enumerate(names)
    ]
    table = render_table(rows, now=THEN)
    header, *lines = table.splitlines()

    assert len(lines) == len(names)
    assert "\x1b" not in table
    assert "\x07" not in table
    cells = [columns_of(line, header) for line in lines]
    assert [c["POOL"] for c in cells] == [
        "\\x1b[2J\\x1b[Hgotcha",
        "two\\nlines",
        "日本語プール",
        "e\u0301cole",
    ]
    assert {c["TYPE"] for c in cells} == {"dir\\n"}
    # Wide characters take two terminal columns, combining marks none: TYPE stays aligned.
    type_at = text_width(header[: header.index("TYPE")])
    for line in lines:
        assert text_width(line[: line.index("dir\\n")]) == type_at


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1.0K"),
        (1536, "1.5K"),
        (10 * 1024, "10K"),
        (40 * GIB, "40G"),
        (int(9.96 * GIB), "10G"),  # not "10.0G"
        (1023 * 1024**2 + 1000 * 1024, "1.0G"),  # not "1024M"
        (3 * 1024**4, "3.0T"),
        (5000 * 1024**6, "5000E"),
    ],
)
def test_compact_bytes(size: int, text: str) -> None:
    assert compact_bytes(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-1, "0s"),
        (45.9, "45s"),
        (60, "1m"),
        (12000, "3h20m"),
        (3 * 3600 + 59, "3h"),
        (2 * 86400 + 5 * 3600 + 7, "2d5h"),
        (3 * 86400, "3d"),
        (400 * 86400 + 3600, "400d"),
    ],
)
def test_compact_duration(seconds: float, text: str) -> None:
    assert compact_duration(seconds) == text


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
    app = create_app(inventory=inventory, exposition=exposition, clock=FakeClock(THEN))
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
