"""Secrets in libvirt URIs: user info and credential-like query parameters (`?password=`) are
shown nowhere: not in the `uri` label, /readyz, the API, the landing page or the logs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.reliability.faults_common import poolwatch

Figure = Callable[[str, str, str], None]

SECRETS = {"password": "hunter3", "token": "tok3n-9f2", "api_key": "k3y-77aa", "user": "s3cr3tpw"}
PAGES = ("/metrics", "/readyz", "/api/v1/pools", "/api/v1/events", "/")


async def test_uri_query_secrets_are_shown_nowhere(tmp_path: Path, figure: Figure) -> None:
    # No names: the connections' keys (in /readyz and the logs) are their URIs.
    config = tmp_path / "poolwatch.toml"
    config.write_text(
        f'[[connection]]\nuri = "test:///default?password={SECRETS["password"]}&socket=/run/x"\n'
        f'[[connection]]\nuri = "qemu+ssh://operator:{SECRETS["user"]}@127.0.0.1:1/system'
        f'?no_tty=1&token={SECRETS["token"]}&api_key={SECRETS["api_key"]}&keyfile=/nonexistent"\n'
        '[poll]\ninterval = "1s"\ncall_timeout = "2s"\n'
    )
    with poolwatch(config, "--log.level", "debug") as process:
        for _ in range(200):
            if process.events("libvirt_connect_failed"):
                break
            await asyncio.sleep(0.05)
        pages = {}
        async with aiohttp.ClientSession() as session:
            for path in PAGES:
                async with session.get(process.url + path) as response:
                    pages[path] = await response.text()
    assert process.events("libvirt_connect_failed")
    pages["logs"] = "\n".join(str(entry) for entry in process.logs)
    leaks = [
        (where, name) for where, text in pages.items() for name, s in SECRETS.items() if s in text
    ]
    assert not leaks, leaks
    # What an operator needs to tell connections apart stays.
    assert "socket=/run/x" in pages["/metrics"]
    assert "password=<secret>" in pages["/metrics"]
    assert "keyfile=/nonexistent" in pages["/readyz"]
    figure(
        "two connections whose URIs hold a password (user info), ?password=, ?token= and "
        "?api_key=; /metrics, /readyz, /api/v1/pools, /api/v1/events, the landing page and "
        "the debug logs read",
        "no secret anywhere; secret values shown as <secret>, other parameters (socket=, "
        "keyfile=, no_tty=) as written",
        f"0 of {len(SECRETS)} secrets in {len(PAGES)} pages and {len(process.logs)} log lines",
    )
