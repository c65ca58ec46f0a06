"""The open HTTP connections of a server: how many there may be, how long a client may take to
send a request, and which connection goes first when the bound is reached.

Every accepted socket is a `Connection` from accept to close, TLS handshake included, in one of
four phases: the handshake, waiting for a request head, handling a request, idle between
requests. Two clocks apply:

- a client must deliver a complete request line and headers within `REQUEST_HEAD_TIMEOUT` of
  connecting (the TLS handshake counts), and within as long of the first byte of each further
  request: a slowloris client dribbling its headers is cut there;
- an idle keep-alive connection stays open for aiohttp's keep-alive timeout (`KEEPALIVE_TIMEOUT`
  in poolwatch.web.app, minutes), so a scraper reuses its connection from scrape to scrape.

At most `limit` connections are open; one more makes room by closing the connection that has
been quiet longest among those not handling a request (idle ones and those still waiting for a
head), or is refused when every connection is busy. A newcomer is always the most recent, so a
scraper's fresh connection is served while a flood of idle ones churns. Each connection closed
this way, or at its deadline, is counted by reason.
"""

from __future__ import annotations

import asyncio
import enum
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web

from poolwatch.telemetry import HTTP_CLOSE_REASONS

# Seconds from connecting (TLS handshake included), or from the first byte of a further request,
# to the end of the request's headers. Prometheus sends a whole request at once.
REQUEST_HEAD_TIMEOUT = 10.0
# Open connections at most, below half the descriptor limit (see `connection_limit`). A
# Prometheus server keeps one connection per target; a few hundred is far above any real use.
MAX_CONNECTIONS = 512
# The bound never shrinks below this when descriptors run out anyway (see `Connections.shrink`).
MIN_CONNECTIONS = 16

# Why a connection was closed by this bound, as counted in poolwatch_http_connections_closed_total:
# to make room for a newer one; refused as every connection was handling a request; no complete
# request head within REQUEST_HEAD_TIMEOUT.
LIMIT, REFUSED, TIMEOUT = HTTP_CLOSE_REASONS


def connection_limit(descriptors: int) -> int:
    """The bound for a process allowed ``descriptors`` open files: half of them at most, so
    libvirt, hooks, webhooks and the log keep theirs."""
    return max(1, min(MAX_CONNECTIONS, descriptors // 2))


class Phase(enum.Enum):
    HANDSHAKE = "handshake"  # accepted; no byte yet, or TLS not done yet
    HEAD = "head"  # waiting for a complete request head
    BUSY = "busy"  # a request is being handled
    IDLE = "idle"  # between requests (keep-alive)


class Connection(asyncio.Protocol):
    """One accepted socket, wrapped around the aiohttp protocol that serves it.

    Passes every protocol call on unchanged once the first byte has arrived, and only watches:
    bytes arriving, and requests starting and finishing (told by `track_requests`).
    """

    def __init__(
        self, connections: Connections, serve: Callable[[], asyncio.Protocol], now: float
    ) -> None:
        self._connections = connections
        self._serve = serve
        self._inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.phase = Phase.HANDSHAKE
        # Until its first byte, the accepted socket alone: no transport, no TLS state yet.
        self._waiting: socket.socket | None = None
        # The TLS handshake, while it runs: cancelled to close a connection without a transport.
        self.handshake: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._arm(now)

    def await_first_byte(
        self, sock: socket.socket, start: Callable[[socket.socket, Connection], None]
    ) -> None:
        """Hold the accepted ``sock`` until it is readable, then ``start`` serving it: a client
        that connects and sends nothing costs a selector entry, not a transport (nor, with TLS,
        the state of a handshake)."""
        self._waiting = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable, start)

    def _readable(self, start: Callable[[socket.socket, Connection], None]) -> None:
        sock = self._stop_waiting()
        if sock is not None:
            start(sock, self)

    def _stop_waiting(self) -> socket.socket | None:
        sock, self._waiting = self._waiting, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
        return sock

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.phase = Phase.HEAD

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            # aiohttp's protocol is made on the first byte: a connection that never sends one
            # (most of a flood) costs no request handler, task or timer of aiohttp's.
            assert self.transport is not None
            self._inner = self._serve()
            self._inner.connection_made(self.transport)
        elif self.phase is Phase.IDLE:
            self.phase = Phase.HEAD
            self._arm(asyncio.get_running_loop().time())
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        # Before the first byte, there is nothing to answer: close.
        return None if self._inner is None else self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._connections.forget(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    @property
    def served(self) -> bool:
        """Whether aiohttp serves this connection (from its first byte on)."""
        return self._inner is not None

    # --- requests -------------------------------------------------------------------------------

    def request_started(self) -> None:
        self.phase = Phase.BUSY
        self._disarm()

    def request_finished(self) -> None:
        if self.phase is Phase.BUSY:
            self.phase = Phase.IDLE
            self._connections.touch(self)

    def close(self, reason: str | None) -> None:
        """Close at once (nothing is owed to the client), counted under ``reason`` if any."""
        self._disarm()
        self._connections.forget(self)
        if reason is not None:
            self._connections.closed(reason)
        if self.transport is not None:
            # abort, not close: a TLS close waits for the client's close_notify, and a client
            # that never answers would keep the descriptor.
            self.transport.abort()
        elif self.handshake is not None:
            self.handshake.cancel()  # asyncio closes the socket of a cancelled handshake
        else:
            waiting = self._stop_waiting()
            if waiting is not None:
                waiting.close()

    def _arm(self, now: float) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_at(now + self._connections.head_timeout, self._late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _late(self) -> None:
        self._deadline = None
        if self.phase in (Phase.HANDSHAKE, Phase.HEAD):
            self.close(TIMEOUT)


class Connections:
    """The bound on open connections of one server, and the connections under it, the one
    quiet longest first."""

    def __init__(
        self,
        *,
        limit: int,
        head_timeout: float = REQUEST_HEAD_TIMEOUT,
        on_closed: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.limit = limit
        self.head_timeout = head_timeout
        self._on_closed = on_closed
        self._open: OrderedDict[Connection, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, serve: Callable[[], asyncio.Protocol]) -> Connection | None:
        """A new connection, or None when it must be refused (then the caller closes it)."""
        if len(self._open) >= self.limit and not self.make_room():
            self.closed(REFUSED)
            return None
        connection = Connection(self, serve, asyncio.get_running_loop().time())
        self._open[connection] = None
        return connection

    def make_room(self) -> bool:
        """Close the connection quiet longest that is not handling a request; False if none."""
        for connection in self._open:
            if connection.phase is not Phase.BUSY:
                connection.close(LIMIT)
                return True
        return False

    def shrink(self) -> int:
        """The process ran out of descriptors with this many connections open (something else
        holds the rest): lower the bound to three quarters of them and close the quietest, at
        least one, so that new connections get in by pushing out old ones instead of failing.
        Returns the new bound, which stays until a restart."""
        self.limit = max(MIN_CONNECTIONS, min(self.limit, len(self._open) * 3 // 4))
        self.make_room()
        while len(self._open) > self.limit and self.make_room():
            pass
        return self.limit

    def touch(self, connection: Connection) -> None:
        if connection in self._open:
            self._open.move_to_end(connection)

    def forget(self, connection: Connection) -> None:
        self._open.pop(connection, None)

    def closed(self, reason: str) -> None:
        self._on_closed(reason)

    def close_all(self) -> None:
        """On shutdown: close the connections aiohttp does not know yet (still in the TLS
        handshake, or without a byte received); aiohttp closes the rest."""
        for connection in list(self._open):
            if not connection.served:
                connection.close(None)


@web.middleware
async def track_requests(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The outermost middleware: tells the request's Connection when it starts and finishes."""
    transport = request.transport
    connection = None if transport is None else transport.get_protocol()
    if not isinstance(connection, Connection):
        return await handler(request)
    connection.request_started()
    try:
        return await handler(request)
    finally:
        connection.request_finished()
