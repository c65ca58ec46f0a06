"""One libvirt connection, kept open: executor, timeouts, keepalive, events and reconnect.

Blocking libvirt calls never run on the event loop thread. They run in a small executor of
their own, one job at a time per worker, never two at once on one connection (see
``serialized``), each bounded by ``call_timeout``. A call that outlives its timeout (a frozen
libvirtd) or fails with a transport error marks the connection lost: the watcher sees
``Disconnected`` at once, the old connection is torn down in the background and a new one is
opened with exponential backoff and jitter. Keepalive, derived from the timeout,
catches a frozen daemon while no call is in flight.

Urgent calls (an event's re-read, a policy's action) have a connection and a worker of their
own where the URI has a transport (every driver but the in-process test driver, whose every
open() is a host of its own): they never wait behind a routine call in flight, such as the
listing of a pool of 6,000 volumes (measured: a start shown 70 ms late behind one, under load).
Both connections are opened, lost and reopened together.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import random
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import libvirt
import structlog

from poolwatch.adapter import domain_events, domains, reader
from poolwatch.adapter.coalesce import Coalesced
from poolwatch.adapter.eventloop import LoopEvents, ensure_event_loop
from poolwatch.adapter.turns import Turn, serialized
from poolwatch.addresses import without_credentials
from poolwatch.model import GuestSnapshot, PoolEventKind, VolumeScan, volume_scan
from poolwatch.poolxml import PoolDescription
from poolwatch.source import (
    Connected,
    Disconnected,
    GuestNotFound,
    PoolChanged,
    PoolNotFound,
    PoolReading,
    SourceError,
    SourceEvent,
    SourceUnavailable,
    VolumeDescription,
)

T = TypeVar("T")

log = structlog.get_logger()

_LIFECYCLE = {
    libvirt.VIR_STORAGE_POOL_EVENT_DEFINED: PoolEventKind.DEFINED,
    libvirt.VIR_STORAGE_POOL_EVENT_UNDEFINED: PoolEventKind.UNDEFINED,
    libvirt.VIR_STORAGE_POOL_EVENT_STARTED: PoolEventKind.STARTED,
    libvirt.VIR_STORAGE_POOL_EVENT_STOPPED: PoolEventKind.STOPPED,
    libvirt.VIR_STORAGE_POOL_EVENT_CREATED: PoolEventKind.CREATED,
    libvirt.VIR_STORAGE_POOL_EVENT_DELETED: PoolEventKind.DELETED,
}

# Callback ids of one connection: (a domain event?, the id libvirt returned).
_CallbackIds = list[tuple[bool, int]]


@dataclass(frozen=True, slots=True)
class _Opened:
    """What one connect opened: the routine calls' connection, the urgent calls' and the one
    libvirt's events come on (`_arm`), and the ids of the event callbacks. The in-process test
    driver has only ``conn`` (another connection would be another host): ``urgent`` and
    ``events`` are None, and the callbacks are on ``conn``."""

    conn: Any
    urgent: Any
    events: Any
    callback_ids: _CallbackIds
    hostname: str

    def with_callbacks(self) -> list[tuple[Any, _CallbackIds]]:
        """Each connection, with the callbacks registered on it: ``conn`` first, then the
        urgent calls' and the events' where there are."""
        if self.events is None:
            return [(self.conn, self.callback_ids)]
        return [(self.conn, []), (self.urgent, []), (self.events, self.callback_ids)]


# Reconnect backoff: short enough that events flow again within a few seconds of libvirtd's
# return however long it was gone; a refused connect on a unix socket costs next to nothing.
BACKOFF_INITIAL = 0.25
BACKOFF_MAX = 4.0

# Volumes per executor job: a pool with thousands of volumes is read in several short jobs, so
# no single job comes near call_timeout (an urgent call ends a job early: see adapter/turns.py).
VOLUME_CHUNK = 200
# Pools per executor job of the info poll's listing (two or three RPCs each), for the same reason;
# like a volume-scan job, it ends early when an event's re-read waits.
POOL_CHUNK = 100


def _is_transport_error(exc: libvirt.libvirtError) -> bool:
    """The connection itself failed (as opposed to one call being refused)."""
    code = exc.get_error_code()
    domain = exc.get_error_domain()
    if code == libvirt.VIR_ERR_SYSTEM_ERROR:  # 38
        # EOF, connection refused or reset come from the client's RPC layer. The daemon's own
        # system errors arrive with code 38 too but another domain (measured: 0 for "cannot
        # open directory" from a dir pool's create()): a failed call, not a lost connection.
        return domain in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE)
    # 1 from the RPC layer: "client socket is closed", keepalive timeout
    return bool(code == libvirt.VIR_ERR_INTERNAL_ERROR and domain == libvirt.VIR_FROM_RPC)


def library_version() -> str:
    """The libvirt library poolwatch runs on, as "major.minor.micro"."""
    version = int(libvirt.getVersion())
    return f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"


class LibvirtSource:
    """``poolwatch.source.StorageSource`` on a real libvirt connection."""

    def __init__(self, *, uri: str, read_only: bool, call_timeout: float) -> None:
        self._uri = uri
        self._uri_label = without_credentials(uri)  # the URI may hold a password: never log it
        self._read_only = read_only
        self._call_timeout = call_timeout
        # Set before start (StorageSource.listen): no event comes before.
        self._listener: Callable[[SourceEvent], None] = lambda _event: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        # Calls and connects use separate threads so that a hung open() or close() never takes
        # a worker from the calls, and the calls never starve a reconnect.
        # One worker: calls are serialized anyway (see serialized), and with a single worker a
        # call's timeout measures the call itself, never the wait behind a slow one.
        self._calls = concurrent.futures.ThreadPoolExecutor(1, "libvirt-call")
        self._urgent_calls = concurrent.futures.ThreadPoolExecutor(1, "libvirt-urgent")
        self._connects = concurrent.futures.ThreadPoolExecutor(1, "libvirt-connect")
        self._turn = Turn()
        self._urgent_turn = Turn()  # the urgent calls' worker, where they have one
        self._volume_names = Coalesced(self._list_volume_names)
        self._opened: _Opened | None = None  # all the current connect opened, while connected
        self._conn_lock = threading.Lock()  # held by the thread inside libvirt on _conn
        self._urgent_lock = threading.Lock()
        self._generation = 0  # which connection an event or a failure belongs to
        self._lost: asyncio.Future[str] | None = None
        self._descriptions: dict[str, PoolDescription] = {}  # by uuid, per connection
        # Definition events so far, and the last one per uuid: a listing drops what it parsed
        # of a pool redefined while it ran (see list_pools).
        self._definitions = 0
        self._defined_at: dict[str, int] = {}
        # Events libvirt's callbacks handed to the loop, and those the loop has handed to the
        # listener: each counter has one writer (the thread libvirt calls back on, the loop),
        # so either thread may read both (events_on_the_way).
        self._handed = 0
        self._delivered = 0
        self._events: LoopEvents | None = None  # libvirt's, on the loop (adapter/eventloop.py)

    def listen(self, handler: Callable[[SourceEvent], None]) -> None:
        self._listener = handler

    @property
    def read_only(self) -> bool:
        return self._read_only

    def events_on_the_way(self) -> bool:
        return self._handed > self._delivered or (
            self._events is not None and self._events.input_waiting()
        )

    @property
    def _conn(self) -> Any:
        """The routine calls' libvirt.virConnect while connected."""
        return None if self._opened is None else self._opened.conn

    @property
    def _urgent_conn(self) -> Any:
        """The urgent calls' connection, where there is one."""
        return None if self._opened is None else self._opened.urgent

    @property
    def keepalive(self) -> tuple[int, int]:
        """(interval, count) of the keepalive armed on every connection: it is declared dead
        after interval * (count + 1) seconds of silence, about one call_timeout."""
        return max(1, int(self._call_timeout // 3)), 2

    async def start(self) -> None:
        self._events = ensure_event_loop()
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._keep_connected(), name=f"libvirt {self._uri_label}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._volume_names.close()
        opened, self._opened = self._opened, None
        if opened is not None:
            await self._release_connect(opened)
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._urgent_calls.shutdown(wait=False, cancel_futures=True)
        self._connects.shutdown(wait=False, cancel_futures=True)

    # -- connection lifecycle --------------------------------------------------------------

    async def _keep_connected(self) -> None:
        loop = asyncio.get_running_loop()
        delay = BACKOFF_INITIAL
        failures = 0
        pending_open: asyncio.Future[_Opened] | None = None
        while True:
            generation = self._generation + 1
            if pending_open is None:
                pending_open = loop.run_in_executor(self._connects, self._open, generation)
            try:
                async with asyncio.timeout(self._call_timeout):  # see _call
                    opened = await asyncio.shield(pending_open)
            except asyncio.CancelledError:
                # Closed while opening: the open goes on in its thread, so release what it opens.
                pending_open.add_done_callback(self._release_opened)
                raise
            except TimeoutError:
                # open() on a frozen daemon blocks; wait for that attempt rather than
                # piling up new ones behind it.
                failures += 1
                if failures == 1:
                    log.warning("libvirt_connect_failed", uri=self._uri_label, error="timeout")
                continue
            except libvirt.libvirtError as exc:
                pending_open = None
                failures += 1
                # The first failure of a streak is news; the rest would flood the journal.
                (log.warning if failures == 1 else log.debug)(
                    "libvirt_connect_failed", uri=self._uri_label, error=exc.get_error_message()
                )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            pending_open = None
            delay, failures = BACKOFF_INITIAL, 0
            self._generation = generation
            self._opened = opened
            # A call stuck on the old connections must not block us.
            self._conn_lock, self._urgent_lock = threading.Lock(), threading.Lock()
            self._descriptions.clear()
            self._defined_at.clear()
            self._lost = loop.create_future()
            log.info("libvirt_connected", uri=self._uri_label, hostname=opened.hostname)
            self._listener(Connected(hostname=opened.hostname))
            reason = await self._lost
            self._opened = None
            log.warning("libvirt_disconnected", uri=self._uri_label, reason=reason)
            self._listener(Disconnected(reason=reason))
            self._release_connect(opened)  # in the background

    def _open(self, generation: int) -> _Opened:
        """Blocking: open the connections, arm keepalive and callbacks. Runs in the connect
        thread."""
        opened = [self._open_one()]
        try:
            if not self._uri.startswith("test:"):
                opened.append(self._open_one())  # the urgent calls'
                opened.append(self._open_one())  # the events'
            ids = self._arm(opened, generation)
            urgent, events = opened[1:] or (None, None)
            return _Opened(opened[0], urgent, events, ids, str(opened[0].getHostname()))
        except libvirt.libvirtError:
            for conn in opened:
                self._teardown(conn, [])
            raise

    def _open_one(self) -> Any:
        conn = libvirt.openReadOnly(self._uri) if self._read_only else libvirt.open(self._uri)
        # Drivers without keepalive (test:///) have no transport to lose.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(*self.keepalive)
        return conn

    def _arm(self, opened: list[Any], generation: int) -> _CallbackIds:
        """Blocking: a close callback on each connection of a connect (losing one loses all),
        the event callbacks on the last: a connection of their own, where there is more than
        one. On a connection that carries calls, an event that libvirtd sent while a call waited
        there for its reply reached poolwatch only with that reply, up to a millisecond after a
        bare client had it. Measured with back-to-back stop/start cycles and no scrapers, where
        a stop meets the start's volume listing on the routine calls' connection: 44-51% of
        stops showed on the first /metrics read after destroy() returned at 50 x 200 and
        500 x 2, 66-84% with the events on a connection of their own (p50 4.0 -> 2.7 ms at
        50 x 200). On the urgent calls' connection, starts met the stop's re-read instead."""
        for conn in opened:
            with contextlib.suppress(libvirt.libvirtError):
                # Through a weak reference: drivers without close callbacks (the test driver)
                # accept one and never release it, which kept this whole source alive (~30 KB
                # per connection removed by SIGHUP); now only the small trampoline stays.
                conn.registerCloseCallback(_WeakCloseCallback(self), generation)
        conn = opened[-1]
        pool_ids = [
            conn.storagePoolEventRegisterAny(
                None,
                libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE,
                self._on_lifecycle,
                generation,
            ),
            conn.storagePoolEventRegisterAny(
                None, libvirt.VIR_STORAGE_POOL_EVENT_ID_REFRESH, self._on_refresh, generation
            ),
        ]
        # Guests: which of them live in the pools, and which a full pool has paused.
        domain_ids = domain_events.register(conn, generation, self._emit)
        return [(False, i) for i in pool_ids] + [(True, i) for i in domain_ids]

    def _release_opened(self, opened: asyncio.Future[_Opened]) -> None:
        if not opened.cancelled() and opened.exception() is None:
            for connection, callbacks in opened.result().with_callbacks():
                threading.Thread(
                    target=self._teardown,
                    args=(connection, callbacks),
                    name="libvirt-teardown",
                    daemon=True,
                ).start()

    def _release_connect(self, opened: _Opened) -> asyncio.Future[list[None]]:
        """Release what one connect opened (``_release`` in the connect thread): each
        connection with the callbacks on it, once no call runs on it."""
        loop = asyncio.get_running_loop()
        # In with_callbacks' order; no call runs on the events' connection.
        locks = (self._conn_lock, self._urgent_lock, threading.Lock())
        return asyncio.gather(
            *(
                loop.run_in_executor(self._connects, self._release, connection, ids, lock)
                for (connection, ids), lock in zip(opened.with_callbacks(), locks, strict=False)
            )
        )

    def _release(self, conn: Any, callback_ids: _CallbackIds, lock: threading.Lock) -> None:
        """Blocking: tear a connection down once no call runs on it (see ``serialized``)."""
        # Keepalive ends a call stuck in a hung libvirtd within about call_timeout. A call that
        # takes longer on a live daemon must not hold up the reconnect: release the connection
        # after it, from a thread of its own.
        if lock.acquire(timeout=self._call_timeout + 1):
            try:
                self._teardown(conn, callback_ids)
            finally:
                lock.release()
            return
        threading.Thread(
            target=serialized,
            args=(lock, functools.partial(self._teardown, conn, callback_ids)),
            name="libvirt-teardown",
            daemon=True,
        ).start()

    @staticmethod
    def _teardown(conn: Any, callback_ids: _CallbackIds) -> None:
        """Blocking: release a connection that is lost or no longer wanted."""
        # Each step may fail on a dead connection, which forgets its callbacks anyway.
        for is_domain, callback_id in callback_ids:
            with contextlib.suppress(libvirt.libvirtError):
                if is_domain:
                    domain_events.deregister(conn, callback_id)
                else:
                    conn.storagePoolEventDeregisterAny(callback_id)
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()  # breaks the reference cycle through the callback
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    def _mark_lost(self, generation: int, reason: str) -> None:
        """On the loop thread: the connection of ``generation`` is gone."""
        if generation == self._generation and self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)

    # -- libvirt callbacks (on the loop; a close on whichever thread saw it) ---------------

    def _hand_over(self, callback: Callable[..., None], *args: Any) -> bool:
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            return False  # the loop closed between the check and the call, shutting down
        return True

    def _hand_over_event(self, generation: int, event: SourceEvent) -> None:
        # Counted before it is handed over: on its way from the moment the loop can run it.
        self._handed += 1
        if not self._hand_over(self._deliver, generation, event):
            self._handed -= 1

    def _on_close(self, _conn: Any, reason: int, generation: int) -> None:
        names = {
            libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
            libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "eof",
            libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive",
            libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed",
        }
        self._hand_over(self._mark_lost, generation, names.get(reason, "closed"))

    def _on_lifecycle(self, _conn: Any, pool: Any, event: int, _detail: int, gen: int) -> None:
        kind = _LIFECYCLE.get(event)
        if kind is not None:
            # name() and UUIDString() are local to the pool object: no RPC in this thread.
            self._hand_over_event(gen, PoolChanged(pool.name(), pool.UUIDString(), kind))

    def _on_refresh(self, _conn: Any, pool: Any, generation: int) -> None:
        changed = PoolChanged(pool.name(), pool.UUIDString(), PoolEventKind.REFRESHED)
        self._hand_over_event(generation, changed)

    def _emit(self, generation: int, event: SourceEvent) -> None:
        self._hand_over_event(generation, event)

    def _deliver(self, generation: int, event: SourceEvent) -> None:
        self._delivered += 1
        if generation != self._generation:
            return  # from a connection already given up
        # A pool's description changes when it is defined, and may when it stops or starts
        # (libvirt applies a definition made while it ran then): read it again.
        if isinstance(event, PoolChanged) and event.kind in (
            PoolEventKind.DEFINED,
            PoolEventKind.UNDEFINED,
            PoolEventKind.STARTED,
            PoolEventKind.STOPPED,
        ):
            self._descriptions.pop(event.uuid, None)
            self._definitions += 1
            self._defined_at[event.uuid] = self._definitions
        self._listener(event)

    # -- calls -----------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, urgent: bool = False) -> T:
        """Run ``fn(conn, *args)`` in the worker, bounded by call_timeout."""
        result, _ = await self._call_on(None, fn, *args, urgent=urgent)
        return result

    async def _call_on(
        self, expected: int | None, fn: Callable[..., T], *args: Any, urgent: bool = False
    ) -> tuple[T, int]:
        """``_call``, and the generation of the connection it ran on. With ``expected``, only
        on that connection: the pool or volume objects of a listing belong to the connection
        that listed them, and a later job of the same read must not use them on another."""
        lane = urgent and expected is None and self._urgent_conn is not None
        turn = self._urgent_turn if lane else self._turn
        await turn.acquire(urgent=urgent)
        if lane:
            conn, lock, worker = self._urgent_conn, self._urgent_lock, self._urgent_calls
        else:
            conn, lock, worker = self._conn, self._conn_lock, self._calls
        generation = self._generation
        if conn is None or expected not in (None, generation):
            turn.release()
            raise SourceUnavailable("not connected")
        future = worker.submit(serialized, lock, functools.partial(fn, conn, *args))
        # The turn passes on when the thread is done, not when we stop waiting: a thread stuck
        # in a frozen libvirtd still occupies the worker (until keepalive ends the call).
        future.add_done_callback(lambda _f: self._hand_over(turn.release))
        return await self._outcome(future, generation)

    async def _outcome(
        self, future: concurrent.futures.Future[T], generation: int
    ) -> tuple[T, int]:
        """The result of a call submitted to a worker, bounded by call_timeout; a timeout or
        a transport error loses the connection of ``generation``."""
        loop = asyncio.get_running_loop()
        try:
            # Not asyncio.wait_for: before Python 3.12 it returns the result of a call that
            # completes just as the caller is cancelled, and so swallows the cancellation. A
            # poll timer that lost its cancellation that way kept a stopping daemon waiting
            # forever. asyncio.timeout() delivers both.
            async with asyncio.timeout(self._call_timeout):
                return await asyncio.wrap_future(future, loop=loop), generation
        except TimeoutError:
            self._mark_lost(generation, "call_timeout")
            raise SourceUnavailable(f"libvirt call timed out after {self._call_timeout}s") from None
        except libvirt.libvirtError as exc:
            raise self._failure(exc, generation) from None

    def _failure(self, exc: libvirt.libvirtError, generation: int) -> Exception:
        """What a call that failed with ``exc`` raises; a transport error loses the connection."""
        code = exc.get_error_code()
        if _is_transport_error(exc):
            self._mark_lost(generation, "error")
            return SourceUnavailable(exc.get_error_message())
        if code == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return PoolNotFound(exc.get_error_message())
        if code == libvirt.VIR_ERR_NO_DOMAIN:
            return GuestNotFound(exc.get_error_message())
        return SourceError(exc.get_error_message(), code=code)

    async def execute(self, fn: Callable[[Any], T]) -> T:
        """Run a blocking ``fn(conn)`` on this connection, like every other call."""
        return await self._call(fn)

    async def list_pools(self) -> list[PoolReading]:
        # One listing, then the pools chunk after chunk, each job ending early when an urgent
        # call waits: an event's re-read waits for one pool's reading at most, not for the
        # 1,000+ RPCs of a listing of 500 pools. The watcher drops the readings of pools that
        # had an event since the listing began (Watcher._poll_info).
        started = self._definitions
        cached = dict(self._descriptions)
        listing, generation = await self._call_on(None, reader.list_pools)
        readings: list[PoolReading] = []
        kept: dict[str, PoolDescription] = {}
        for start in range(0, len(listing.pools), POOL_CHUNK):
            rest = listing.pools[start : start + POOL_CHUNK]
            while rest:
                (read, described, done), _ = await self._call_on(
                    generation, reader.read_pools, listing, rest, cached, self._turn.give_way
                )
                readings.extend(read)
                kept.update(described)
                rest = rest[done:]
        # A pool redefined meanwhile may have been parsed from its old XML: read it again next
        # time.
        self._descriptions = {
            uuid: description
            for uuid, description in kept.items()
            if self._defined_at.get(uuid, 0) <= started
        }
        return readings

    async def read_pool(
        self, name: str, *, flags: tuple[bool, bool] | None = None, uuid: str | None = None
    ) -> PoolReading:
        description = None if uuid is None else self._descriptions.get(uuid)
        return await self._call(reader.read_pool, name, flags, description, urgent=True)

    async def refresh_pool(self, name: str, *, urgent: bool = False) -> None:
        await self._call(reader.refresh_pool, name, urgent=urgent)

    async def start_flagged_pool(self, name: str) -> bool:
        return await self._call(reader.start_flagged_pool, name, urgent=True)

    async def set_autostart(self, name: str, *, enabled: bool) -> None:
        await self._call(reader.set_autostart, name, enabled, urgent=True)

    async def scan_volumes(self, name: str, *, limit: int) -> VolumeScan:
        scanned_at = time.time()
        described = await self.describe_volumes(name)
        return volume_scan([d.volume for d in described], limit, scanned_at)

    async def list_volume_names(self, name: str) -> list[str]:
        # The pools of a volume poll ask together: one job (per POOL_CHUNK) answers them all.
        return await self._volume_names.get(name)

    async def _list_volume_names(self, names: list[str]) -> dict[str, list[str] | Exception]:
        out: dict[str, list[str] | Exception] = {}
        for start in range(0, len(names), POOL_CHUNK):
            rest = names[start : start + POOL_CHUNK]
            while rest:
                (found, done), generation = await self._call_on(
                    None, reader.list_volume_names, rest, self._turn.give_way
                )
                for name, value in found.items():
                    failed = isinstance(value, libvirt.libvirtError)
                    out[name] = self._failure(value, generation) if failed else value
                rest = rest[done:]
        return out

    async def describe_volumes(
        self, name: str, volumes: Sequence[str] | None = None
    ) -> list[VolumeDescription]:
        if volumes is None:
            found, generation = await self._call_on(None, reader.list_volumes, name)
        else:
            found, generation = await self._call_on(
                None, reader.look_up_volumes, name, list(volumes)
            )
        out: list[VolumeDescription] = []
        # Chunk after chunk, each job ending early when an urgent call waits: an event's
        # re-read waits for one XMLDesc() at most, not for a chunk or a queue of them.
        for start in range(0, len(found), VOLUME_CHUNK):
            rest = found[start : start + VOLUME_CHUNK]
            while rest:
                (described, done), _ = await self._call_on(
                    generation, reader.describe_volumes, rest, self._turn.give_way
                )
                out.extend(described)
                rest = rest[done:]
        return out

    async def list_guests(self) -> list[GuestSnapshot]:
        return await self._call(domains.read_domains)

    async def read_guest(self, uuid: str) -> GuestSnapshot:
        return await self._call(domains.read_guest, uuid, urgent=True)

    async def resume_guest(self, uuid: str) -> None:
        await self._call(domains.resume_guest, uuid, urgent=True)

    async def destroy_guest(self, uuid: str) -> None:
        await self._call(domains.destroy_guest, uuid, urgent=True)


class _WeakCloseCallback:
    """A libvirt close callback that does not keep its `LibvirtSource` alive."""

    __slots__ = ("_source",)

    def __init__(self, source: LibvirtSource) -> None:
        self._source = weakref.ref(source)

    def __call__(self, conn: Any, reason: int, generation: int) -> None:
        source = self._source()
        if source is not None:
            source._on_close(conn, reason, generation)
