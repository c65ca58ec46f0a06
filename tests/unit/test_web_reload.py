"""Live reload of the web config (poolwatch.web.reload): renewed certificates, changed client CAs
and users apply without a restart; an invalid file keeps the running settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry

from poolwatch.errors import StartupError
from poolwatch.exporter.exposition import Exposition
from poolwatch.web.app import create_app, start_http_server
from poolwatch.web.reload import WebSecurity
from tests.unit.factories import sample_inventory, sample_telemetry
from tests.unit.web_serving import (
    MTLS,
    TLS,
    WebConfigDir,
    eventually,
    get,
    listening_context,
    raw_get,
    refused,
    serial_seen,
    serve,
    trusting,
    users,
)

# --- reloads --------------------------------------------------------------------------------------


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


async def test_every_outcome_is_reported(web_dir: WebConfigDir) -> None:
    """The telemetry hears each load and reload, so a failed renewal shows on /metrics."""
    outcomes: list[bool] = []
    security = WebSecurity(web_dir.write(TLS + users(alice="old")), on_reload=outcomes.append)
    try:
        web_dir.write(TLS + users(alice="new") + "  bob: not-a-hash\n")
        security.reload()
        web_dir.write(TLS + users(alice="new"))
        security.reload()
    finally:
        await security.close()
    assert outcomes == [True, False, True]


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
