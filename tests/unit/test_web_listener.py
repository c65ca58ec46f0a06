"""Accepting connections (poolwatch.web.listener): running out of descriptors is survived and
logged once per interval; listening on every interface."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from poolwatch.exporter.exposition import Exposition
from poolwatch.telemetry import Telemetry
from poolwatch.web import listener as listener_module
from poolwatch.web.app import create_app, start_http_server
from poolwatch.web.connections import connection_limit
from tests.helpers import captured_logs
from tests.unit.factories import sample_inventory

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


async def _get(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(REQUEST)
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


async def test_running_out_of_descriptors_is_logged_once_and_survived(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listener_module, "ACCEPT_RETRY_DELAY", 0.05)
    telemetry = Telemetry()
    app = create_app(
        inventory=sample_inventory(),
        telemetry=telemetry,
        exposition=Exposition(CollectorRegistry(), lambda: 0),
    )
    server = await start_http_server(app=app, listen=["127.0.0.1:0"], max_connections=8)
    host, port = server.addresses[0]
    real_accept: Callable[[socket.socket], Any] = socket.socket.accept
    failures = [0]
    failed_often = asyncio.Event()

    def out_of_descriptors(self: socket.socket) -> Any:
        failures[0] += 1
        if failures[0] >= 10:
            failed_often.set()
        raise OSError(errno.EMFILE, "Too many open files")

    try:
        idle_reader, idle_writer = await asyncio.open_connection(host, port)
        idle_writer.write(REQUEST)
        assert await idle_reader.readline() == b"HTTP/1.1 200 OK\r\n"
        with captured_logs() as logs:
            monkeypatch.setattr(socket.socket, "accept", out_of_descriptors)
            waiting = asyncio.ensure_future(_get(host, port))
            await asyncio.wait_for(failed_often.wait(), 5)
            monkeypatch.setattr(socket.socket, "accept", real_accept)
            # Once descriptors are back, the connection that waited in the backlog is served.
            assert await waiting == b"HTTP/1.1 200 OK\r\n"
        # The idle connection was closed to free a descriptor: read() returns at its end.
        assert (await asyncio.wait_for(idle_reader.read(), 5)).endswith(b"\r\n\r\nok\n")
        idle_writer.close()
    finally:
        await server.close()
    failed = [entry for entry in logs if entry["event"] == "http_accept_failed"]
    assert len(failed) == 1, failed
    assert failed[0]["errno"] == "EMFILE"
    assert failed[0]["log_level"] == "error"
    assert telemetry.http_connections_closed["limit"] >= 1


def test_the_bound_leaves_half_the_descriptors_to_the_rest() -> None:
    assert connection_limit(1024) == 512
    assert connection_limit(256) == 128
    assert connection_limit(65536) == 512
    assert connection_limit(1) == 1


async def test_no_host_listens_on_every_interface() -> None:
    app = create_app(
        inventory=sample_inventory(),
        telemetry=Telemetry(),
        exposition=Exposition(CollectorRegistry(), lambda: 0),
    )
    server = await start_http_server(app=app, listen=[":0"])
    try:
        families = {
            socket.AF_INET6 if ":" in host else socket.AF_INET for host, _ in server.addresses
        }
        assert socket.AF_INET in families
        port = next(port for host, port in server.addresses if ":" not in host)
        assert await _get("127.0.0.1", port) == b"HTTP/1.1 200 OK\r\n"
    finally:
        await server.close()
