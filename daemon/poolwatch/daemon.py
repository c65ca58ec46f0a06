"""The daemon's one lifecycle: start the HTTP server and one watcher per connection, reload on
SIGHUP, stop everything on SIGTERM/SIGINT, and leave nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import random
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry

from poolwatch import __version__
from poolwatch.actuator import Actuator, PolicyRules
from poolwatch.adapter.connection import LibvirtSource, library_version
from poolwatch.addresses import without_credentials
from poolwatch.config import Config, ConnectionConfig
from poolwatch.demo import DEMO_HOST
from poolwatch.errors import ConfigError
from poolwatch.exporter.collector import InventoryCollector
from poolwatch.exporter.exposition import Exposition
from poolwatch.filesystem import is_local_uri
from poolwatch.heap import Heap, reuse_freed_blocks
from poolwatch.hooks import HookRunner
from poolwatch.inventory import Inventory
from poolwatch.logsetup import LogOutput, configure_logging
from poolwatch.sdnotify import Notifier, keep_alive
from poolwatch.telemetry import Telemetry
from poolwatch.watcher import Watcher
from poolwatch.web.app import HttpServer, create_app, start_http_server

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class DemoPace:
    """How fast ``poolwatch demo`` moves: the filler's steps, and the polls that follow them."""

    step: float = 2.0  # seconds between two steps of the demo filler
    # The demo fills and drains pools quickly, so it polls quickly too.
    poll_interval: float = 2.0
    volumes_interval: float = 5.0
    refresh_interval: float = 20.0
    seed: int | None = None  # the filler's random seed; None: a different demo each run


@dataclass
class _Running:
    config: ConnectionConfig
    watcher: Watcher
    task: asyncio.Task[None]


def _policy_rules(config: Config) -> PolicyRules:
    return PolicyRules(
        thresholds=config.threshold_rules(),
        autostart=config.autostart_rules(),
        resume=config.resume_rules(),
        hooks=config.hook_definitions(),
    )


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        reload_config: Callable[[], Config] | None,
        demo: bool,
        dry_run: bool = False,
        notifier: Notifier | None = None,
        demo_pace: DemoPace | None = None,
        log_output: LogOutput | None = None,
    ) -> None:
        self._config = config
        self._demo_pace = DemoPace() if demo_pace is None else demo_pace
        self._log_output = log_output  # counts the log lines lost; None: not counted
        self._notifier = Notifier.disabled() if notifier is None else notifier
        self._reload_config = reload_config
        self._demo = demo
        self.inventory = Inventory()
        self.telemetry = Telemetry()
        self._running: dict[str, _Running] = {}
        self._hooks = HookRunner(config.hook_definitions(), dry_run=dry_run)
        self._actuator = Actuator(
            inventory=self.inventory,
            telemetry=self.telemetry,
            connections=self._connection,
            rules=_policy_rules(config),
            hooks=self._hooks,
            dry_run=dry_run,
        )
        self._actuator_task: asyncio.Task[None] | None = None
        self._demo_task: asyncio.Task[None] | None = None
        self._notify_task: asyncio.Task[None] | None = None
        self._server: HttpServer | None = None
        self._exposition: Exposition | None = None
        self._heap = Heap()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound HTTP addresses (the real port where the config asked for port 0)."""
        return [] if self._server is None else self._server.addresses

    async def start(self) -> None:
        """Bind the HTTP listeners, then start watching. Raises StartupError."""
        registry = CollectorRegistry(auto_describe=False)
        collector = InventoryCollector(
            self.inventory,
            self.telemetry,
            version=__version__,
            libvirt_version=library_version(),
            python_version=platform.python_version(),
            max_guests_per_pool=lambda: self._config.poll.max_volumes_per_pool,
            log_lines_dropped=lambda: 0 if self._log_output is None else self._log_output.dropped,
        )
        registry.register(collector)
        self._exposition = Exposition(registry, collector.generation)
        app = create_app(
            inventory=self.inventory,
            telemetry=self.telemetry,
            exposition=self._exposition,
            news_in_flight=self._news_in_flight,
            events_unhandled=self._events_unhandled,
        )
        web_config_file = self._config.web.config_file
        self._server = await start_http_server(
            app=app,
            listen=list(self._config.web.listen),
            web_config_file=None if web_config_file is None else Path(web_config_file),
        )
        scheme = self._server.scheme
        urls = listening_urls(scheme, self.addresses)
        # The URLs of a wildcard bind are loopback ones: the bound addresses say it is more.
        bound = [_bound_address(host, port) for host, port in self.addresses]
        log.info("http_listening", urls=urls, addresses=bound)
        await self._hooks.start()
        self._actuator_task = asyncio.create_task(self._actuator.run(), name="actuator")
        if self._demo:
            # The demo is run by people, from a terminal: tell them where to look.
            print(
                f"poolwatch demo is running: open {urls[0]} (metrics at {urls[0]}metrics)",
                flush=True,  # stdout may be a pipe (tee, systemd): block-buffered until exit
            )
            self._demo_task = self._start_demo()
        else:
            self._apply_connections(self._config)
        # systemd's READY: the port answers from here on, and the watchdog pings begin.
        self._notifier.ready(self.status_line())
        if self._notifier.enabled:
            self._notify_task = asyncio.create_task(
                keep_alive(self._notifier, self.status_line), name="sd_notify"
            )

    def status_line(self) -> str:
        """One line for `systemctl status`: what is watched, and how many connections are up."""
        hosts = self.inventory.hosts.values()
        pools = sum(len(h.pools) for h in hosts)
        up = sum(1 for h in hosts if h.up)
        return f"pools: {pools}, libvirt connections up: {up}/{len(hosts)}"

    def _news_in_flight(self) -> list[asyncio.Future[None]]:
        return [f for running in self._running.values() for f in running.watcher.news_in_flight()]

    def _events_unhandled(self) -> bool:
        return any(running.watcher.events_unhandled() for running in self._running.values())

    def _connection(self, key: str) -> Watcher | None:
        running = self._running.get(key)
        return None if running is None else running.watcher

    async def stop(self) -> None:
        self._notifier.stopping()
        tasks = [r.task for r in self._running.values()]
        for task in (self._demo_task, self._actuator_task, self._notify_task):
            if task is not None:
                tasks.append(task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
        await self._hooks.close()
        if self._server is not None:
            await self._server.close()
        if self._exposition is not None:
            self._exposition.close()

    async def run(self) -> int:
        """Run until SIGTERM or SIGINT; SIGHUP reloads the configuration."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        reuse_freed_blocks()  # heap.py
        await self.start()
        # What exists now (modules, classes, functions, the config: ~60,000 objects) lives as
        # long as the process: out of the collector's reach, a full collection scans only what
        # polls and renders allocate (heap.py). Measured on 50 pools x 200 volumes under load
        # (the /metrics tail of tests/reliability/test_pools_document_load.py): full
        # collections, which hold the GIL, went from 37-115 ms to 6 ms.
        self._heap.freeze()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await stop.wait()
            log.info("shutting_down")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.stop()
        return 0

    # -- connections -----------------------------------------------------------------------

    def _start(self, connection: ConnectionConfig, config: Config) -> LibvirtSource:
        source = LibvirtSource(
            uri=connection.uri,
            read_only=connection.wants_read_only(config),
            call_timeout=config.poll.call_timeout,
        )
        watcher = Watcher(
            key=connection.key,
            uri=connection.uri,
            name=connection.name,
            source=source,
            inventory=self.inventory,
            telemetry=self.telemetry,
            poll=config.poll,
            stat_filesystems=is_local_uri(connection.uri),
            volumes_polled=self._heap.polled,
        )
        task = asyncio.create_task(watcher.run(), name=f"watch {connection.key}")
        self._running[connection.key] = _Running(connection, watcher, task)
        return source

    def _apply_connections(self, config: Config) -> None:
        wanted = {c.key: c for c in config.connections}
        for key, running in list(self._running.items()):
            if wanted.get(key) != running.config or running.watcher.poll.call_timeout != (
                config.poll.call_timeout
            ):
                running.watcher.detach()  # a poll finishing after this is dropped quietly
                running.task.cancel()
                del self._running[key]
                self.inventory.remove_host(key)
                self.telemetry.remove_connection(key)
                log.info("connection_removed", connection=key)
        for key, connection in wanted.items():
            if key in self._running:
                self._running[key].watcher.poll = config.poll
            else:
                self._start(connection, config)
                log.info(
                    "connection_added", connection=key, uri=without_credentials(connection.uri)
                )

    # -- reload ----------------------------------------------------------------------------

    def reload(self) -> None:
        # RELOADING=1 ... READY=1 brackets every outcome, or systemd would show "reloading" forever.
        self._notifier.reloading()
        try:
            self._reload()
            # Also without a config file: the web config file may come from the flag. It logs
            # its own outcome, and a failed one keeps the running TLS and users.
            if self._server is not None:
                self._server.reload_web_config()
        finally:
            self._notifier.ready(self.status_line())

    def _reload(self) -> None:
        if self._reload_config is None:
            log.info("config_reload_skipped", reason="no configuration file")
            return
        try:
            config = self._reload_config()
        except ConfigError as exc:
            # The running configuration stays; the gauge tells the operator's alerting.
            log.error("config_reload_failed", errors=exc.errors)
            self.telemetry.record_reload(ok=False)
            return
        except Exception as exc:
            # A loading bug must not escape into the signal handler (a raw traceback, and the
            # gauge left at 1): it fails the reload like an invalid file.
            log.error(
                "config_reload_failed", errors=[f"{type(exc).__name__}: {exc}"], exc_info=True
            )
            self.telemetry.record_reload(ok=False)
            return
        if config.web != self._config.web:
            log.warning("config_reload_needs_restart", section="web")
        output = configure_logging(
            level=config.log.level, fmt=config.log.format, stream=self._log_output
        )
        if self._log_output is not None:
            self._log_output = output
        if not self._demo:
            self._apply_connections(config)
        self._actuator.update_rules(_policy_rules(config))
        self._config = config
        self.telemetry.record_reload(ok=True)
        log.info("config_reloaded")

    # -- demo ------------------------------------------------------------------------------

    def _start_demo(self) -> asyncio.Task[None]:
        from poolwatch.adapter.demo_filler import DemoFiller

        pace = self._demo_pace
        connection = ConnectionConfig(name="demo", uri=f"test://{DEMO_HOST.resolve()}")
        config = self._config.model_copy(
            update={
                "poll": self._config.poll.model_copy(
                    update={
                        "interval": pace.poll_interval,
                        "volumes_interval": pace.volumes_interval,
                        "refresh_interval": pace.refresh_interval,
                    }
                )
            }
        )
        source = self._start(connection, config)
        filler = DemoFiller(random.Random(pace.seed))  # noqa: S311 - a demo, not cryptography

        async def fill() -> None:
            while True:
                await asyncio.sleep(pace.step)
                with contextlib.suppress(Exception):
                    for line in await source.execute(filler.step):
                        log.info("demo_step", action=line)

        return asyncio.create_task(fill(), name="demo filler")


def listening_urls(scheme: str, addresses: Iterable[tuple[str, int]]) -> list[str]:
    """URLs an operator can open on this host for the bound addresses, each once, in bind order.

    A wildcard has no URL of its own: it is named by the loopback address of its family, so
    ":9479" (bound on 0.0.0.0 and ::) gives http://127.0.0.1:9479/ and http://[::1]:9479/.
    """
    return list(dict.fromkeys(f"{scheme}://{_url_host(host)}:{port}/" for host, port in addresses))


def _bound_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):  # noqa: S104 - naming the wildcard, not binding it
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    # A link-local address's zone (fe80::1%eth0) is written %25eth0 in a URL (RFC 6874).
    return f"[{host.replace('%', '%25')}]" if ":" in host else host


def run_daemon(
    config: Config,
    *,
    reload_config: Callable[[], Config] | None,
    demo: bool,
    dry_run: bool = False,
) -> int:
    notifier = Notifier.from_environment()
    # Configured again (the command line did so already) to hold the output and its count.
    log_output = configure_logging(level=config.log.level, fmt=config.log.format)
    daemon = Daemon(
        config,
        reload_config=reload_config,
        demo=demo,
        dry_run=dry_run,
        notifier=notifier,
        log_output=log_output,
    )
    try:
        return asyncio.run(daemon.run())
    finally:
        notifier.close()
