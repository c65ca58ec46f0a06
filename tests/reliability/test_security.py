"""Security: every route but /healthz needs credentials, and secrets never reach the logs.

Timing of an unknown user vs a wrong password (the dummy-hash check) is covered by
tests/unit/test_web_auth.py; TLS settings as configured by tests/unit/test_web_tls.py.
"""

from __future__ import annotations

import asyncio
import base64
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import bcrypt

from poolwatch.web.app import HEALTHZ_ROUTE, create_app, start_http_server
from tests.reliability.faults_common import poolwatch
from tests.unit.factories import sample_inventory, sample_telemetry

Figure = Callable[[str, str, str], None]


def _auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


USER, PASSWORD, WRONG = "admin", "AdminPass-XYZ-7781", "WrongPass-QRS-9912"
URI_PASSWORD, HOOK_URL_PASSWORD, HOOK_TOKEN = "S3cretUriPass", "HookUrlPass42", "SECRET-TOKEN-123"


def _web_config(path: Path) -> str:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    path.write_text(f"basic_auth_users:\n  {USER}: {hashed}\n")
    return hashed


async def test_only_healthz_is_unauthenticated(tmp_path: Path, figure: Figure) -> None:
    from prometheus_client import CollectorRegistry

    from poolwatch.exporter.collector import InventoryCollector
    from poolwatch.exporter.exposition import Exposition

    _web_config(tmp_path / "web.yml")
    inventory = sample_inventory()
    registry = CollectorRegistry()
    telemetry = sample_telemetry()
    registry.register(
        InventoryCollector(
            inventory, telemetry, version="0.1.0", libvirt_version="10.0.0", python_version="3"
        )
    )
    app = create_app(
        inventory=inventory, telemetry=telemetry, exposition=Exposition(registry, lambda: 0)
    )
    server = await start_http_server(
        app=app, listen=["127.0.0.1:0"], web_config_file=tmp_path / "web.yml"
    )
    host, port = server.addresses[0]
    results: dict[str, tuple[int, int, int]] = {}
    try:
        paths = []
        for route in app.router.routes():
            info = route.resource.get_info() if route.resource is not None else {}
            path = info.get("path") or info.get("formatter")
            if route.method in ("GET", "HEAD") and path:
                paths.append((route.method, path, route.name == HEALTHZ_ROUTE))
        paths.append(("GET", "/no-such-path", False))
        async with aiohttp.ClientSession() as session:
            for method, path, open_ in paths:
                url = f"http://{host}:{port}{path}"
                async with session.request(method, url) as anonymous:
                    await anonymous.read()
                bad = _auth(USER, WRONG)
                async with session.request(method, url, headers=bad) as wrong:
                    await wrong.read()
                good = _auth(USER, PASSWORD)
                async with session.request(method, url, headers=good) as right:
                    await right.read()
                results[f"{method} {path}"] = (anonymous.status, wrong.status, right.status)
                if open_:
                    assert anonymous.status == 200, (method, path)
                else:
                    assert anonymous.status == 401, (method, path, anonymous.status)
                    assert wrong.status == 401, (method, path, wrong.status)
                    assert right.status in (200, 404), (method, path, right.status)
    finally:
        await server.close()
    opened = sorted(k for k, v in results.items() if v[0] != 401)
    assert opened == ["GET /healthz", "HEAD /healthz"], opened
    figure(
        f"every route of the app ({len(results) - 1} method/path pairs) plus an unknown path, "
        "without credentials, with a wrong password and with the right one (basic auth)",
        "only /healthz (GET, HEAD) answers without credentials; everything else 401 without or "
        "with a wrong password; the unknown path is 401 too (404 only once authenticated)",
        f"open: {', '.join(opened)}; {len(results) - len(opened)} protected",
    )


async def test_no_secrets_in_logs(tmp_path: Path, figure: Figure) -> None:
    hashed = _web_config(tmp_path / "web.yml")
    host = tmp_path / "host.xml"
    host.write_text(
        "<node><pool type='dir'><name>full</name><target><path>/nonexistent</path></target>"
        "<volume type='file'><name>big.img</name><capacity unit='GiB'>90</capacity>"
        "<allocation unit='GiB'>90</allocation></volume></pool></node>"
    )
    config = tmp_path / "poolwatch.toml"
    config.write_text(
        f'[[connection]]\nname = "test"\nuri = "test://{host}"\n'
        f'[[connection]]\nname = "remote"\n'
        f'uri = "qemu+ssh://operator:{URI_PASSWORD}@127.0.0.1:1/system?no_tty=1"\n'
        '[poll]\ninterval = "1s"\ncall_timeout = "2s"\n'
        f'[web]\nconfig_file = "{tmp_path / "web.yml"}"\n'
        '[[threshold]]\npool = "full"\nwarning = "85%"\nfor = "0s"\nhooks = ["alert"]\n'
        f'[hooks.alert]\nwebhook = "http://hook:{HOOK_URL_PASSWORD}@127.0.0.1:1/alert"\n'
        'timeout = "1s"\nretries = 1\n'
        f'headers = {{ Authorization = "Bearer {HOOK_TOKEN}" }}\n'
    )
    # The URI password is checked by test_uri_password_not_logged.
    secrets = {
        "webhook URL password": HOOK_URL_PASSWORD,
        "webhook header": HOOK_TOKEN,
        "basic auth password": PASSWORD,
        "wrong password tried": WRONG,
        "bcrypt hash": hashed,
        "Authorization header": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
        "wrong Authorization": base64.b64encode(f"{USER}:{WRONG}".encode()).decode(),
    }
    with poolwatch(config, "--log.level", "debug") as process:
        url = process.url
        async with aiohttp.ClientSession() as session:
            for auth in (_auth(USER, WRONG), _auth("nobody", WRONG)):
                async with session.get(url + "/metrics", headers=auth) as response:
                    assert response.status == 401
            async with session.get(url + "/metrics", headers=_auth(USER, PASSWORD)) as response:
                assert response.status == 200
        # The webhook fires (and fails: nothing listens on port 1), the ssh connection fails.
        for _ in range(200):
            if [e for e in process.events("policy_action") if e["action"].startswith("hook:")]:
                break
            await asyncio.sleep(0.05)
        process.signal(signal.SIGHUP)
        await asyncio.sleep(1.5)
    text = "\n".join(str(entry) for entry in process.logs) + "".join(process.stdout)
    leaked = [name for name, secret in secrets.items() if secret in text]
    assert not leaked, leaked
    events = sorted({str(e.get("event")) for e in process.logs})
    assert "policy_action" in events, events
    assert any("connect_failed" in e for e in events), events
    figure(
        "a real poolwatch at --log.level debug with a qemu+ssh URI holding a password, a "
        "webhook with a password in its URL and an Authorization header (fired, failing), "
        "basic auth with right/wrong/unknown-user logins and a SIGHUP",
        f"none of {len(secrets)} secrets (passwords, tokens, bcrypt hash, Authorization values) "
        "appears in any log line",
        f"{len(process.logs)} JSON log lines, {len(events)} distinct events, 0 secrets",
    )


async def test_uri_password_not_logged(tmp_path: Path) -> None:
    config = tmp_path / "poolwatch.toml"
    config.write_text(
        '[[connection]]\nname = "remote"\n'
        f'uri = "qemu+ssh://operator:{URI_PASSWORD}@127.0.0.1:1/system?no_tty=1"\n'
        '[poll]\ncall_timeout = "2s"\n'
    )
    with poolwatch(config, "--log.level", "debug") as process:
        for _ in range(100):
            if process.events("libvirt_connect_failed"):
                break
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as session:
            for path in ("/metrics", "/api/v1/pools", "/"):
                async with session.get(process.url + path) as response:
                    assert URI_PASSWORD not in await response.text(), path
    assert process.events("libvirt_connect_failed")
    leaking = sorted({str(e.get("event")) for e in process.logs if URI_PASSWORD in str(e)})
    assert not leaking, f"the URI password is in these log events: {leaking}"
