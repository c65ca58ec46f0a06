"""poolwatch's HTTP side: the aiohttp application, its handlers, and the listening server.

Handlers only read memory (the inventory, the telemetry and the cached /metrics page), so every
path answers promptly even while libvirt hangs. State lives on the application under typed keys;
there are no module globals.

With a web config file (`poolwatch.web.webconfig`), the server speaks TLS, and a middleware
applies client_allowed_sans, the rate limit and basic auth to every path but /healthz, which
systemd and load balancers probe without credentials; the configured headers go on every
response, /healthz and error pages included.

Overload and hostile clients: at most `MAX_IN_FLIGHT` requests are handled at once; one more
gets 503 with Retry-After at once instead of queueing behind the others (/healthz is exempt, so
a busy server is not restarted as a dead one). Connections are accepted by
`poolwatch.web.listener` and bounded by `poolwatch.web.connections`: a bounded number open, a
request head due within seconds of connecting or of a request's first byte (slowloris), the
TLS handshake bounded as well; an idle keep-alive connection stays open for
`KEEPALIVE_TIMEOUT`, minutes, so a scraper does not reconnect for every scrape. A request line
longer than `MAX_LINE_SIZE`, a header field longer than `MAX_FIELD_SIZE` or more than
`MAX_HEADERS` headers get 400 or 431 from aiohttp's parser, before any handler runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import structlog
from aiohttp import hdrs, web

from poolwatch.addresses import parse_listen_address
from poolwatch.documents import events_document
from poolwatch.errors import StartupError
from poolwatch.exporter.exposition import Exposition
from poolwatch.inventory import Inventory
from poolwatch.telemetry import Telemetry
from poolwatch.web.api import parse_flag, parse_limit
from poolwatch.web.auth import BasicAuth, Verdict
from poolwatch.web.connections import (
    REQUEST_HEAD_TIMEOUT,
    Connections,
    connection_limit,
    track_requests,
)
from poolwatch.web.documents_cache import PoolsDocumentCache
from poolwatch.web.landing_cache import LandingPageCache
from poolwatch.web.listener import GuardedSite, descriptor_limit
from poolwatch.web.reload import CHECK_INTERVAL, WebSecurity
from poolwatch.web.settle import ScrapeSettle
from poolwatch.web.webconfig import WebConfigError

log = structlog.get_logger()

INVENTORY = web.AppKey("inventory", Inventory)
TELEMETRY = web.AppKey("telemetry", Telemetry)
EXPOSITION = web.AppKey("exposition", Exposition)
SECURITY = web.AppKey("web_security", WebSecurity)
POOLS_DOCUMENTS = web.AppKey("pools_documents", PoolsDocumentCache)
LANDING = web.AppKey("landing", LandingPageCache)
SETTLE = web.AppKey("settle", ScrapeSettle)

# The route the web config's protection leaves open. Matched by route, not by path text, so an
# unknown path (a 404) still needs credentials and reveals nothing.
HEALTHZ_ROUTE = "healthz"
REALM = "poolwatch"

# Requests are served from memory in milliseconds; waiting aiohttp's default 60 s for stragglers
# would only hold up a stop behind a stuck client.
SHUTDOWN_TIMEOUT = 5.0

# Requests handled at once; beyond that a request gets 503 at once. Handlers read memory only,
# so even a Prometheus federation of many servers stays far below this.
MAX_IN_FLIGHT = 64
# Idle keep-alive connections are closed after this (aiohttp's keep-alive timer). Longer than
# Prometheus' own idle timeout for its scrape connections (5 minutes), so that the scraper, not
# the server, closes an unused one (a server closing it just as a scrape is sent fails that
# scrape); slow clients are bounded by the request head deadline instead
# (poolwatch.web.connections.REQUEST_HEAD_TIMEOUT), and idle ones by the connection bound.
KEEPALIVE_TIMEOUT = 360.0
# aiohttp's parser limits, spelled out: a longer request line or header field, or more headers,
# is refused with 400/431 before any handler runs.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 128
IN_FLIGHT = web.AppKey("in_flight", list[int])  # [requests being handled]: a mutable cell


def create_app(
    *,
    inventory: Inventory,
    telemetry: Telemetry,
    exposition: Exposition,
    news_in_flight: Callable[[], list[asyncio.Future[None]]] = lambda: [],
    events_unhandled: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """``news_in_flight`` and ``events_unhandled``: the re-reads and the events a scrape waits
    for before /metrics renders (``Watcher.news_in_flight`` and ``Watcher.events_unhandled``
    of every connection; web/settle.py)."""
    app = web.Application(middlewares=[_limit_in_flight])
    app[IN_FLIGHT] = [0]
    app[INVENTORY] = inventory
    app[TELEMETRY] = telemetry
    app[EXPOSITION] = exposition
    app[SETTLE] = ScrapeSettle(news_in_flight, events_unhandled)
    app[POOLS_DOCUMENTS] = PoolsDocumentCache(inventory)
    app[LANDING] = LandingPageCache(inventory, clock)
    app.on_cleanup.append(_close_caches)
    # add_get also answers HEAD, with the same headers and no body.
    app.router.add_get("/", _landing)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz, name=HEALTHZ_ROUTE)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/api/v1/pools", _pools)
    app.router.add_get("/api/v1/events", _events)
    return app


async def _metrics(request: web.Request) -> web.Response:
    await request.app[SETTLE]()
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
    # Built once per inventory generation, not per request (see PoolsDocumentCache).
    body, headers = await request.app[POOLS_DOCUMENTS].answer(
        with_volumes=with_volumes, accept_encoding=request.headers.get(hdrs.ACCEPT_ENCODING)
    )
    response = web.Response(body=body, headers=headers)
    response.headers[hdrs.VARY] = hdrs.ACCEPT_ENCODING
    return response


async def _close_caches(app: web.Application) -> None:
    app[POOLS_DOCUMENTS].close()
    app[LANDING].close()


async def _events(request: web.Request) -> web.Response:
    try:
        limit = parse_limit(request.query.get("limit"))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(events_document(request.app[TELEMETRY].activity(), limit=limit))


async def _landing(request: web.Request) -> web.Response:
    # Rendered at most once a second and shared by every request (see LandingPageCache).
    page = await request.app[LANDING].page()
    return web.Response(body=page, content_type="text/html", charset="utf-8")


@web.middleware
async def _limit_in_flight(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The outermost middleware: refuse a request over MAX_IN_FLIGHT at once (not /healthz)."""
    in_flight = request.app[IN_FLIGHT]
    if in_flight[0] >= MAX_IN_FLIGHT and request.match_info.route.name != HEALTHZ_ROUTE:
        return web.Response(
            status=503,
            text="Service Unavailable: too many requests in flight\n",
            headers={hdrs.RETRY_AFTER: "1"},
        )
    in_flight[0] += 1
    try:
        return await handler(request)
    finally:
        in_flight[0] -= 1


# --- web config: TLS, basic auth, headers ------------------------------------------------------


def _install_security(app: web.Application, security: WebSecurity, *, interval: float) -> None:
    app[SECURITY] = security
    app.middlewares.append(_guard)
    app.on_response_prepare.append(_add_headers)

    async def watch(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_watch_web_config(security, interval), name="web config")
        yield
        task.cancel()
        # gather, not `await task` under suppress(CancelledError): that would also swallow a
        # cancellation of this cleanup itself.
        await asyncio.gather(task, return_exceptions=True)
        await security.close()

    app.cleanup_ctx.append(watch)


async def _watch_web_config(security: WebSecurity, interval: float) -> None:
    """Reload the web config when the file or a certificate it names changes."""
    while True:
        await asyncio.sleep(interval)
        try:
            security.reload_if_changed()
        except Exception:
            # A bug here must not end the watch: renewed certificates would stop applying.
            log.exception("web_config_check_failed", path=str(security.path))


@web.middleware
async def _guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    security = request.app[SECURITY]
    transport = request.transport
    peercert = None if transport is None else transport.get_extra_info("peercert")
    # Go refuses such a client in the handshake, so this applies to /healthz too.
    if not security.client_allowed(peercert):
        return web.Response(status=403, text="Forbidden: client certificate not allowed\n")
    if request.match_info.route.name == HEALTHZ_ROUTE:
        return await handler(request)
    if not security.allow_request():
        return _too_many_requests()
    if security.auth.enabled:
        verdict = await security.auth.check(
            request.headers.get(hdrs.AUTHORIZATION), client=request.remote or ""
        )
        if verdict is Verdict.BUSY:
            return _too_many_requests()
        if verdict is Verdict.DENIED:
            return web.Response(
                status=401,
                text="Unauthorized\n",
                headers={hdrs.WWW_AUTHENTICATE: f'Basic realm="{REALM}"'},
            )
    return await handler(request)


def _too_many_requests() -> web.Response:
    return web.Response(status=429, text="Too Many Requests\n", headers={hdrs.RETRY_AFTER: "1"})


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in request.app[SECURITY].headers:
        response.headers[name] = value


# --- the server -------------------------------------------------------------------------------


class HttpServer:
    """A running server; ``addresses`` are the host/port pairs actually bound."""

    def __init__(
        self,
        runner: web.AppRunner,
        addresses: list[tuple[str, int]],
        security: WebSecurity | None = None,
    ) -> None:
        self._runner = runner
        self._closed = False
        self._security = security
        self.addresses = addresses

    @property
    def scheme(self) -> str:
        """ "https" when the web config set up TLS, else "http"."""
        tls = self._security is not None and self._security.ssl_context is not None
        return "https" if tls else "http"

    def reload_web_config(self) -> bool:
        """Re-read the web config file (SIGHUP); False when it is invalid and the running
        settings stay. True without a web config file."""
        return True if self._security is None else self._security.reload()

    async def close(self) -> None:
        """Stop listening, finish in-flight requests, and run the app's cleanup. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._runner.cleanup()


async def start_http_server(
    *,
    app: web.Application,
    listen: list[str],
    web_config_file: Path | None = None,
    check_interval: float = CHECK_INTERVAL,
    auth: Callable[[Mapping[str, bytes]], BasicAuth] = BasicAuth,
    max_connections: int | None = None,
) -> HttpServer:
    """Serve ``app`` on every address in ``listen`` ("host:port", "[::1]:port", ":port").

    With ``web_config_file`` (exporter-toolkit's format), serve TLS and basic auth as it says
    (checked by ``auth``), and check it and the files it names for changes every
    ``check_interval`` seconds. At most ``max_connections`` connections are open at once, by
    default as many as the descriptor limit allows (poolwatch.web.connections).

    Raises StartupError naming the address when one is malformed or cannot be bound, or
    listing the problems of an invalid web config file; then nothing is left listening.
    """
    if not listen:
        raise StartupError("no listen address given")
    binds = []
    for address in listen:
        try:
            binds.append((address, *parse_listen_address(address)))
        except ValueError as exc:
            raise StartupError(f"cannot listen on {address}: {exc}") from None
    security = None
    if web_config_file is not None:
        try:
            telemetry = app.get(TELEMETRY)
            security = WebSecurity(
                web_config_file,
                auth=auth,
                on_reload=None if telemetry is None else telemetry.record_web_config_reload,
            )
        except WebConfigError as exc:
            raise StartupError(exc.one_line()) from None
        _install_security(app, security, interval=check_interval)
        log.info("web_config_loaded", **security.settings.summary())
    ssl_context = None if security is None else security.ssl_context
    telemetry = app.get(TELEMETRY)
    connections = Connections(
        limit=connection_limit(descriptor_limit()) if max_connections is None else max_connections,
        head_timeout=REQUEST_HEAD_TIMEOUT,
        on_closed=(lambda reason: None)
        if telemetry is None
        else telemetry.record_http_connection_closed,
    )
    app.middlewares.insert(0, track_requests)
    runner = web.AppRunner(
        app,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        max_headers=MAX_HEADERS,
    )
    await runner.setup()
    try:
        for address, host, port in binds:
            site = GuardedSite(runner, host, port, connections=connections, ssl_context=ssl_context)
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
    return HttpServer(runner, addresses, security)
