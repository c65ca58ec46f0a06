"""poolwatch's HTTP side: the aiohttp application, its handlers, and the listening server.

Handlers only read memory (the inventory and the cached /metrics page), so every path answers
promptly even while libvirt hangs. State lives on the application under typed keys; there are
no module globals.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from poolwatch.config import parse_listen_address
from poolwatch.errors import StartupError
from poolwatch.exporter.exposition import Exposition
from poolwatch.inventory import Inventory
from poolwatch.web.api import events_document, parse_flag, parse_limit, pools_document
from poolwatch.web.landing import render_landing

INVENTORY = web.AppKey("inventory", Inventory)
EXPOSITION = web.AppKey("exposition", Exposition)
CLOCK = web.AppKey[Callable[[], float]]("clock")

# Requests are served from memory in milliseconds; waiting aiohttp's default 60 s for stragglers
# would only hold up a stop behind a stuck client.
SHUTDOWN_TIMEOUT = 5.0


def create_app(
    *, inventory: Inventory, exposition: Exposition, clock: Callable[[], float] = time.time
) -> web.Application:
    app = web.Application()
    app[INVENTORY] = inventory
    app[EXPOSITION] = exposition
    app[CLOCK] = clock
    # add_get also answers HEAD, with the same headers and no body.
    app.router.add_get("/", _landing)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/api/v1/pools", _pools)
    app.router.add_get("/api/v1/events", _events)
    return app


async def _metrics(request: web.Request) -> web.Response:
    body, headers = await request.app[EXPOSITION].render(
        request.headers.get("Accept"), request.headers.get("Accept-Encoding")
    )
    # The body is already encoded (and compressed when negotiated); aiohttp sends it as is.
    response = web.Response(body=body, headers=headers)
    response.headers["Vary"] = "Accept, Accept-Encoding"
    return response


async def _healthz(request: web.Request) -> web.Response:
    # Answering at all proves the event loop runs; nothing else is checked on purpose, so a
    # libvirt outage does not get poolwatch restarted.
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    inventory = request.app[INVENTORY]
    if inventory.ready:
        return web.Response(text="ready\n")
    if not inventory.hosts:
        return web.Response(status=503, text="not ready: no libvirt connections\n")
    lines = ["not ready; waiting for the first complete poll of:"]
    for key, host in inventory.hosts.items():
        if host.synced:
            continue
        uri = "" if key == host.uri else f" ({host.uri})"
        why = "polling" if host.up else "not connected"
        lines.append(f"{key}{uri}: {why}")
    return web.Response(status=503, text="\n".join(lines) + "\n")


async def _pools(request: web.Request) -> web.Response:
    with_volumes = parse_flag(request.query.get("volumes"))
    return web.json_response(pools_document(request.app[INVENTORY], with_volumes=with_volumes))


async def _events(request: web.Request) -> web.Response:
    try:
        limit = parse_limit(request.query.get("limit"))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(events_document(request.app[INVENTORY].activity(), limit=limit))


async def _landing(request: web.Request) -> web.Response:
    page = render_landing(request.app[INVENTORY], now=request.app[CLOCK]())
    return web.Response(text=page, content_type="text/html", charset="utf-8")


class HttpServer:
    """A running server; ``addresses`` are the host/port pairs actually bound."""

    def __init__(self, runner: web.AppRunner, addresses: list[tuple[str, int]]) -> None:
        self._runner = runner
        self._closed = False
        self.addresses = addresses

    async def close(self) -> None:
        """Stop listening, finish in-flight requests, and run the app's cleanup. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._runner.cleanup()


async def start_http_server(*, app: web.Application, listen: list[str]) -> HttpServer:
    """Serve ``app`` on every address in ``listen`` ("host:port", "[::1]:port", ":port").

    Raises StartupError naming the address when one is malformed or cannot be bound; then
    nothing is left listening.
    """
    if not listen:
        raise StartupError("no listen address given")
    binds = []
    for address in listen:
        try:
            binds.append((address, *parse_listen_address(address)))
        except ValueError as exc:
            raise StartupError(f"cannot listen on {address}: {exc}") from None
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        for address, host, port in binds:
            site = web.TCPSite(runner, host, port)
            try:
                await site.start()
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise StartupError(f"cannot listen on {address}: {reason}") from exc
    except BaseException:
        await runner.cleanup()
        raise
    # getsockname() gives (host, port) for IPv4 and (host, port, flowinfo, scope_id) for IPv6.
    addresses = [(str(sockname[0]), int(sockname[1])) for sockname in runner.addresses]
    return HttpServer(runner, addresses)
