"""The listening sockets: binding them, accepting connections under the bound of
poolwatch.web.connections, the TLS handshake, and what happens when the process runs out of
file descriptors.

poolwatch accepts connections itself instead of leaving it to ``loop.create_server``, so that a
connection counts from the moment it is accepted, while its TLS handshake still runs (asyncio
hands a server's protocol nothing before the handshake is done, so a flood of clients that never
send a ClientHello would be invisible until descriptors run out), and so that running out is
handled here: an `accept()` that fails for lack of descriptors or memory pauses this listener
for `ACCEPT_RETRY_DELAY`, lowers the connection bound to what the process can hold (closing the
connections quiet longest), and is logged once per `ACCEPT_ERROR_LOG_INTERVAL` as one JSON
line with the number of failures (asyncio 3.11 logs a traceback per failed accept, up to the
backlog per loop iteration). Accepted sockets become
transports through ``loop.connect_accepted_socket``, asyncio's public hook for exactly this.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
import ssl
import time
from collections.abc import Callable

import structlog
from aiohttp import web

from poolwatch.web.connections import Connection, Connections

log = structlog.get_logger()

# The TLS handshake must be done within this, as the request head must (it counts towards the
# head's deadline too); asyncio's own default is 60 s. Also bounds the TLS shutdown of a closing
# connection, whose default is 30 s.
TLS_HANDSHAKE_TIMEOUT = 10.0
# A listener that ran out of descriptors tries again after this.
ACCEPT_RETRY_DELAY = 0.25
# Failed accepts are logged at most once per this many seconds.
ACCEPT_ERROR_LOG_INTERVAL = 10.0
# Connections accepted per wake-up of a listener at most, as a share of the connection bound: a
# new connection takes a few loop iterations (TLS: more) to deliver its request head, and must
# not be pushed out by the bound meanwhile by a burst of newer ones.
ACCEPT_BATCH_SHARE = 16
# Connections the kernel completes and queues for accept(). A burst of connections beyond the
# queue makes the kernel drop SYNs, a scraper's among them, which then retries only after a
# second; a deep queue absorbs a burst (it holds no descriptors; Linux caps it at somaxconn).
LISTEN_BACKLOG = 4096
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def descriptor_limit() -> int:
    """The soft limit on open files of this process (LimitNOFILE= in the unit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


class _Throttle:
    """Lets an event through at most once per interval, counting the ones held back."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._next = float("-inf")
        self.held_back = 0

    def ready(self) -> bool:
        now = self._clock()
        if now < self._next:
            self.held_back += 1
            return False
        self._next = now + self._interval
        return True


class _Listener:
    """One listening socket, accepting into ``connections``."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        connections: Connections,
        serve: Callable[[], asyncio.Protocol],
        ssl_context: ssl.SSLContext | None,
        throttle: _Throttle,
    ) -> None:
        self.sock = sock
        self._connections = connections
        self._serve = serve
        self._ssl = ssl_context
        self._throttle = throttle
        self._loop = asyncio.get_running_loop()
        self._retry: asyncio.TimerHandle | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._serving = False

    def start(self) -> None:
        self._serving = True
        self._loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        if self._serving:
            self._serving = False
            self._loop.remove_reader(self.sock.fileno())
        if self._retry is not None:
            self._retry.cancel()
        for task in self._handshakes:
            task.cancel()
        self.sock.close()

    def _accept(self) -> None:
        for _ in range(max(1, self._connections.limit // ACCEPT_BATCH_SHARE)):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._failed(exc)
                return
            sock.setblocking(False)
            connection = self._connections.admit(self._serve)
            if connection is None:
                sock.close()
                continue
            connection.await_first_byte(sock, self._start)

    def _start(self, sock: socket.socket, connection: Connection) -> None:
        """The connection's first bytes arrived: make it a transport, with TLS if configured."""
        task = self._loop.create_task(self._connect(sock, connection))
        if self._ssl is not None:
            connection.handshake = task
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _connect(self, sock: socket.socket, connection: Connection) -> None:
        try:
            if self._ssl is None:
                await self._loop.connect_accepted_socket(lambda: connection, sock)
            else:
                await self._loop.connect_accepted_socket(
                    lambda: connection,
                    sock,
                    ssl=self._ssl,
                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                    ssl_shutdown_timeout=TLS_HANDSHAKE_TIMEOUT,
                )
        except (OSError, asyncio.CancelledError):
            # A failed or timed-out handshake, a client that hung up, or a connection closed to
            # make room: asyncio has closed the socket. Nothing to log per connection.
            pass
        finally:
            if connection.transport is None:
                self._connections.forget(connection)

    def _failed(self, exc: OSError) -> None:
        """accept() failed: pause; for lack of resources, lower the bound to what fits; log."""
        if self._serving:
            self._serving = False
            self._loop.remove_reader(self.sock.fileno())
            self._retry = self._loop.call_later(ACCEPT_RETRY_DELAY, self.start)
        if exc.errno in _OUT_OF_RESOURCES:
            self._connections.shrink()
        if self._throttle.ready():
            log.error(
                "http_accept_failed",
                error=exc.strerror or str(exc),
                errno=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
                open_connections=len(self._connections),
                connection_limit=self._connections.limit,
                failures_not_logged=self._throttle.held_back,
                retry_after_seconds=ACCEPT_RETRY_DELAY,
            )
            self._throttle.held_back = 0


class _Listening(asyncio.AbstractServer):
    """What an aiohttp site keeps: the listeners of one address (one per address family)."""

    def __init__(self, listeners: list[_Listener], connections: Connections) -> None:
        self._listeners = listeners
        self._connections = connections
        self._loop = asyncio.get_running_loop()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(listener.sock for listener in self._listeners)

    def close(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners = []
        self._connections.close_all()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return bool(self._listeners)

    async def start_serving(self) -> None:
        pass  # serving from creation

    async def serve_forever(self) -> None:
        raise NotImplementedError

    async def wait_closed(self) -> None:
        pass


class GuardedSite(web.BaseSite):
    """An aiohttp site on host:port whose connections are bounded by ``connections``."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        *,
        connections: Connections,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=LISTEN_BACKLOG)
        self._host = host
        self._port = port
        self._connections = connections

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host or '*'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        sockets = await _bind(self._host, self._port)
        throttle = _Throttle(ACCEPT_ERROR_LOG_INTERVAL)
        listeners = [
            _Listener(
                sock,
                connections=self._connections,
                serve=server,
                ssl_context=self._ssl_context,
                throttle=throttle,
            )
            for sock in sockets
        ]
        for listener in listeners:
            listener.start()
        self._server = _Listening(listeners, self._connections)


async def _bind(host: str | None, port: int) -> list[socket.socket]:
    """Listening sockets for host:port, one per address the host resolves to (every interface
    for no host), as ``loop.create_server`` binds them. Raises OSError."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # One socket per family, as asyncio does: no dual-stack v4-mapped addresses.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"error while attempting to bind on address {address!r}: "
                    f"{(exc.strerror or '').lower()}",
                ) from None
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
