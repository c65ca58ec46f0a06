"""The watcher of one connection: turns libvirt events and poll timers into inventory updates,
and counts them in the telemetry.

Events re-read the pool they name at once (coalesced: a burst of events on one pool costs one
read in flight and at most one after it). Three timers cover what libvirt does not announce:
pool info (cheap), volume scans, and ``pool.refresh()``, without which libvirt never notices
guests writing into their images. After every (re)connect a full resync replaces whatever was
known, because events are lost while disconnected.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog

from poolwatch.addresses import default_host_name, without_credentials
from poolwatch.fastpath.pools import LocalPools
from poolwatch.filesystem import Inspected, Target, TargetInspector
from poolwatch.guests import GuestTracker
from poolwatch.inventory import Inventory
from poolwatch.model import (
    FilesystemStat,
    PoolEvent,
    PoolEventKind,
    PoolSnapshot,
    PoolState,
    VolumeScan,
)
from poolwatch.news import PoolNews
from poolwatch.refreshes import refresh_pools, urgent_refresh_interval
from poolwatch.source import (
    Connected,
    Disconnected,
    GuestChanged,
    GuestIOError,
    PoolChanged,
    PoolNotFound,
    PoolReading,
    SourceError,
    SourceEvent,
    SourceUnavailable,
    StorageSource,
)
from poolwatch.tasks import TaskSet
from poolwatch.telemetry import Telemetry

if TYPE_CHECKING:
    from poolwatch.config import PollConfig

log = structlog.get_logger()

# libvirt's VIR_ERR_OPERATION_INVALID: the pool stopped between listing and reading.
_OPERATION_INVALID = 55


class Watcher:
    def __init__(
        self,
        *,
        key: str,
        uri: str,
        name: str | None,
        source: StorageSource,
        inventory: Inventory,
        telemetry: Telemetry,
        poll: PollConfig,
        stat_filesystems: bool,
        clock: Callable[[], float] = time.time,
        volumes_polled: Callable[[], None] = lambda: None,
    ) -> None:
        self.key = key
        self.poll = poll  # replaced on reload; every loop reads it afresh
        self._configured_name = name
        self._host = name or default_host_name(uri)
        self._uri_label = without_credentials(uri)
        self._source = source
        self._inventory = inventory
        self._telemetry = telemetry
        self._clock = clock
        self._volumes_polled = volumes_polled  # after each volume poll that succeeded
        self._connected = False
        self._tasks = TaskSet()
        self._news = PoolNews()
        self._reading: set[str] = set()
        self._dirty: dict[str, bool] = {}  # pool -> volumes wanted, for a re-read after this one
        self._scanning: set[str] = set()  # pools with an event-driven volume scan in flight
        self._scan_again: set[str] = set()  # ... and those that want another one after it
        self._last_refresh: dict[str, float] = {}
        # Running dir pools: their target path, what its last inspection found and when
        # (monotonic): a quick restart shows from it (_show_started_soon).
        self._measured: dict[str, tuple[str, Inspected, float]] = {}
        self._urgent: frozenset[str] = frozenset()  # pools the policies want refreshed sooner
        # The statvfs of pool targets (a start shows from one) never wait behind the fast
        # path's stat() of every file of a pool (6,000 at 5 pools x 6,000 volumes): when they
        # shared the workers, 14 of 100 starts there waited for their re-read (~5 ms more under
        # scrapers), their statvfs queued behind the file passes of earlier transitions; none
        # since.
        self._statfs = concurrent.futures.ThreadPoolExecutor(2, "statvfs")
        self._file_stats = concurrent.futures.ThreadPoolExecutor(2, "file-stat")
        self._targets = TargetInspector(
            self._statfs,
            enabled=stat_filesystems,
            timeout=lambda: self.poll.call_timeout,
            log=lambda: self._log,
        )
        # Set when a reload removes the connection: whatever is still in flight finds its host
        # gone from the inventory (or another watcher's, under the same key) and is dropped.
        self._detached = False
        self._local = LocalPools(
            source,
            self._file_stats,
            enabled=stat_filesystems,
            timeout=lambda: self.poll.call_timeout,
            rescan=self._request_scan,
        )
        self._guests = GuestTracker(
            key=key,
            source=source,
            inventory=inventory,
            telemetry=telemetry,
            host_name=lambda: self._host,
            clock=clock,
            spawn=self._tasks.spawn,
            pool_errored=self._refresh_soon,
        )

    @property
    def source(self) -> StorageSource:
        return self._source

    def reread(self, pool: str) -> None:
        """Read one pool again now, whole: for changes libvirt sends no event about (an
        autostart flag set)."""
        if self._connected:
            self._news.flags_unknown(pool)
            self._request_reread(pool, volumes=False)

    def detach(self) -> None:
        """The connection is being removed: from now on nothing of this watcher's reaches the
        inventory or the telemetry; its run() task is cancelled next."""
        self._detached = True
        self._guests.detach()
        self._tasks.cancel()

    def news_in_flight(self) -> list[asyncio.Future[None]]:
        """Per pool that an event started or defined, a future done once a reading shows it
        (running, or there at all) or its re-reads end: such a pool shows from a re-read (a
        fast-path start from a statvfs asked for at its event), so a scrape that comes
        meanwhile waits for it (web/settle.py). A stop shows from its event, before its
        re-read, and ends the wait for a start before it (news.py)."""
        return self._news.in_flight()

    def events_unhandled(self) -> bool:
        """Whether libvirt has sent an event this watcher has not handled yet: a scrape waits
        for the loop's next turn (web/settle.py), rather than show what it changed as it was."""
        return self._source.events_on_the_way()

    def set_urgent(self, pools: frozenset[str]) -> None:
        """Pools near a threshold: refreshed every ``urgent_refresh_interval`` instead."""
        self._urgent = pools

    def urgent_refresh_interval(self) -> float:
        return urgent_refresh_interval(self.poll)

    async def run(self) -> None:
        """Watch until cancelled."""
        self._inventory.add_host(self.key, name=self._host, uri=self._uri_label)
        self._telemetry.add_connection(self.key, name=self._host)
        self._source.listen(self._on_event)
        await self._source.start()
        if self._source.read_only and self.poll.refresh_interval > 0:
            self._log.info("pool_refresh_disabled", reason="read-only connection")
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._every(lambda: self.poll.interval, "info", self._poll_info))
                group.create_task(
                    self._every(lambda: self.poll.volumes_interval, "volumes", self._poll_volumes)
                )
                group.create_task(
                    self._every(lambda: self.poll.refresh_interval, "refresh", self._poll_refresh)
                )
                group.create_task(
                    self._every(self.urgent_refresh_interval, "refresh", self._refresh_urgent)
                )
                group.create_task(
                    self._every(lambda: self.poll.sweep_interval, "sweep", self._sweep)
                )
        finally:
            self._source.listen(lambda _event: None)  # nothing is handled once the watch ends
            await self._local.close()
            await self._tasks.close()
            await self._source.close()
            self._statfs.shutdown(wait=False, cancel_futures=True)
            self._file_stats.shutdown(wait=False, cancel_futures=True)

    # -- events ----------------------------------------------------------------------------

    def _on_event(self, event: SourceEvent) -> None:
        """Each event as the loop gets it from libvirt's callback: handled at once, with no
        queue and task between (a loop turn less, 0.1-0.35 ms under 10 scrapers, up to 1.4)."""
        try:
            self._handle(event)
        except Exception:
            # One bad event must not end the watch of a whole host.
            self._log.exception("event_handling_failed", source_event=repr(event))

    def _handle(self, event: SourceEvent) -> None:
        if self._detached:
            return
        if isinstance(event, Connected):
            self._connected = True
            self._host = self._configured_name or self._unique_name(event.hostname)
            self._inventory.set_connected(self.key, name=self._host)
            self._telemetry.record_connect(self.key, name=self._host)
            self._tasks.spawn(self._resync())
        elif isinstance(event, Disconnected):
            self._connected = False
            if self._inventory.set_disconnected(self.key):
                self._telemetry.record_disconnect(self.key, reason=event.reason)
        elif isinstance(event, GuestChanged):
            self._guests.on_changed(event)
        elif isinstance(event, GuestIOError):
            self._guests.on_io_error(event)
        else:
            self._on_pool_changed(event)

    def _unique_name(self, hostname: str) -> str:
        taken = {h.name for key, h in self._inventory.hosts.items() if key != self.key}
        if hostname not in taken:
            return hostname
        # Two connections reporting one hostname would export clashing series.
        log.warning("host_name_conflict", hostname=hostname, connection=self.key)
        return self.key

    def _on_pool_changed(self, event: PoolChanged) -> None:
        self._news.heard(event.pool, event.kind)
        pool_event = PoolEvent(self._host, event.pool, event.uuid, event.kind, self._clock())
        self._telemetry.record_pool_event(self.key, pool_event)
        if event.kind is PoolEventKind.REFRESHED:
            # Every poll refreshes every pool: the journal needs no line for each.
            self._log.debug("pool_refreshed", pool=event.pool)
            self._last_refresh[event.pool] = pool_event.at
        else:
            self._log.info("pool_event", pool=event.pool, kind=event.kind.value)
        if event.kind is PoolEventKind.UNDEFINED:
            self._last_refresh.pop(event.pool, None)
            self._measured.pop(event.pool, None)
            self._local.forget(event.pool)
            self._inventory.drop_pool(self.key, event.pool)
            return
        if event.kind is PoolEventKind.STOPPED:
            self._show_stopped(event.pool)
        elif event.kind is PoolEventKind.STARTED:
            self._show_started_soon(event.pool)
        # A started pool's volumes are news. After a refresh the re-read's volume count tells
        # whether files came or went (then it scans); sizes are the volume poll's business,
        # or every refresh poll would cost a second scan of every volume.
        self._request_reread(event.pool, volumes=event.kind is PoolEventKind.STARTED)

    def _show_stopped(self, name: str) -> None:
        """libvirt's event is its word that the pool stopped: shown at once, before the re-read
        (two to six calls, which may wait behind others on the connection) confirms it."""
        current = self._inventory.pool(self.key, name)
        if current is None or not current.active:
            return
        self._local.pause(name)
        stopped = replace(
            current, state=PoolState.INACTIVE, active=False, volumes=None, fast_path=False
        )
        self._inventory.put_pool(self.key, stopped)

    def _show_started_soon(self, name: str) -> None:
        """libvirt's event is its word that the pool started, and a pool on the fast path takes
        its figures from a statvfs of its target, not from libvirt: such a pool shows running
        once a statvfs asked for at the event is in, before libvirt answers the re-read (four
        calls, which may wait behind others on the connection); a dir pool restarted within an
        info poll of its last statvfs, at once from that one. The reading has the last word."""
        known = self._inventory.pool(self.key, name)
        if known is None:
            return
        if known.active:
            # A reading shows it running already: the re-read of a stop just before, which
            # libvirt answered after the start. Nothing is left to wait for.
            self._news.read(name, active=True)
            return
        seq = self._news.seq  # this event's
        measured = self._measured.get(name)
        if (
            measured is not None
            and known.type == "dir"
            and measured[0] == known.target_path
            and time.monotonic() - measured[2] <= self.poll.interval
        ):
            # Restarted within an info poll of its last statvfs: a dir pool's filesystem does
            # not change with a stop and a start, and the figures of that statvfs are as fresh
            # as an info poll's always are. Shown at once, not after a statvfs in a worker,
            # whose thread waits for a CPU on a busy host (paired at 5 x 6,000 under 10
            # scrapers: start p50 / p90 3.38 / 5.11 -> 2.71 / 3.91 ms).
            self._show_started(name, seq, measured[1], reused=True)
            if not self._news.start_awaited(name):
                return
        target = Target(name, known.type, known.target_path, active=True)
        self._targets.inspect_soon(target, functools.partial(self._show_started, name, seq))

    def _show_started(
        self, name: str, seq: int, inspected: Inspected, *, reused: bool = False
    ) -> None:
        """`_show_started_soon`'s statvfs is in (``reused``: the pool's last one, which keeps
        its date). A pool that an event stopped, undefined or defined again meanwhile, or that
        a reading already shows, waits for the reading."""
        filesystem = inspected[0]
        known = self._inventory.pool(self.key, name)
        if (
            filesystem is None
            or known is None
            or known.active
            or self._detached
            or not self._news.start_awaited(name)
            or self._news.since(seq, name) is not None
        ):
            return
        started = PoolReading(
            name=name,
            uuid=known.uuid,
            type=known.type,
            target_path=known.target_path,
            source=known.source,
            state=PoolState.RUNNING,
            active=True,
            persistent=known.persistent,
            autostart=known.autostart,
            capacity=known.capacity,  # replaced by the statvfs's on the fast path
            allocation=known.allocation,
            available=known.available,
            volume_count=None,
        )
        snapshot = self._snapshot(started, inspected, None, follow=False, measured=not reused)
        if snapshot.fast_path:
            self._inventory.put_pool(self.key, snapshot)
            self._news.read(name, active=True)

    def _request_reread(self, pool: str, *, volumes: bool) -> None:
        if pool in self._reading:
            self._dirty[pool] = self._dirty.get(pool, False) or volumes
            return
        self._reading.add(pool)
        self._tasks.spawn(self._reread(pool, volumes))

    async def _reread(self, pool: str, volumes: bool) -> None:
        try:
            while True:
                await self._timed("info", functools.partial(self._read_one, pool, volumes=volumes))
                if pool not in self._dirty:
                    return
                volumes = self._dirty.pop(pool)
        finally:
            self._reading.discard(pool)
            self._news.shown(pool)

    async def _read_one(self, name: str, *, volumes: bool) -> None:
        seq = self._news.seq
        # The target as last read is inspected while libvirt is asked, so the statvfs does not
        # wait for the reading; again after, only if the reading names another target.
        known = self._inventory.pool(self.key, name)
        ask_flags = self._news.take_flags_unknown(name)
        early = flags = uuid = None
        if known is not None:
            early = asyncio.ensure_future(
                self._targets.inspect(known.type, known.target_path, active=True, pool=name)
            )
            uuid = known.uuid
            if not ask_flags:
                flags = known.persistent, known.autostart
        try:
            reading = await self._source.read_pool(name, flags=flags, uuid=uuid)
        except BaseException as exc:
            if flags is None:
                self._news.flags_unknown(name)  # still to be read
            if early is not None:
                early.cancel()  # its job is abandoned (TargetInspector)
            if not isinstance(exc, PoolNotFound):
                raise
            if self._detached:
                return
            # Gone without an UNDEFINED event: a transient pool that stopped.
            self._inventory.drop_pool(self.key, name)
            self._telemetry.record_pool_gone(self.key, name)
            return
        where = (reading.type, reading.target_path)
        if early is not None and known is not None and (known.type, known.target_path) == where:
            filesystem, mounted = await early
            target = (filesystem if reading.active else None, mounted)
        else:
            if early is not None:
                early.cancel()
            target = await self._targets.inspect(
                reading.type, reading.target_path, active=reading.active, pool=reading.name
            )
        later = self._news.since(seq, name)
        if (
            self._detached
            or later is PoolEventKind.UNDEFINED
            # Asked before a stop or start that it contradicts: it would show the pool as it
            # was until the event's own re-read, queued behind this one, returns.
            or (later is PoolEventKind.STOPPED and reading.active)
            or (later is PoolEventKind.STARTED and not reading.active)
        ):
            return
        scan = _carried_scan(self._inventory.pool(self.key, name), reading)
        # The new state goes out before the volume scan: a stop or start must not wait for it.
        self._inventory.put_pool(self.key, self._snapshot(reading, target, scan))
        self._news.read(name, active=reading.active)
        if reading.active and (volumes or scan is None or scan.count != reading.volume_count):
            # Not awaited here: the pool's next event (a stop right after a start) must not wait
            # behind this scan, which queues behind routine calls (measured: a stop seen after
            # up to 9 s at 10,000 volumes while a start's scan waited behind the volume poll).
            self._request_scan(name)

    def _request_scan(self, pool: str) -> None:
        """Scan the pool's volumes after an event; coalesced like the re-reads."""
        if pool in self._scanning:
            self._scan_again.add(pool)
            return
        self._scanning.add(pool)
        self._tasks.spawn(self._rescan(pool))

    async def _rescan(self, pool: str) -> None:
        try:
            while True:
                await self._timed("info", functools.partial(self._scan_into_inventory, [pool]))
                if pool not in self._scan_again:
                    return
                self._scan_again.discard(pool)
        finally:
            self._scanning.discard(pool)

    # -- timers ----------------------------------------------------------------------------

    async def _every(
        self, interval: Callable[[], float], kind: str, poll: Callable[[], Awaitable[None]]
    ) -> None:
        while True:
            seconds = interval()
            if seconds <= 0:  # disabled; a reload may enable it
                await asyncio.sleep(5)
                continue
            await asyncio.sleep(seconds)
            if self._connected:
                await self._timed(kind, poll)

    async def _timed(self, kind: str, poll: Callable[[], Awaitable[None]]) -> None:
        started = time.monotonic()
        ok = False
        try:
            await poll()
            ok = True
        except SourceUnavailable as exc:
            # The connection is down: logged and counted as a disconnect.
            self._log.debug("poll_skipped", kind=kind, error=str(exc))
        except (SourceError, PoolNotFound) as exc:
            self._log.warning("poll_failed", kind=kind, error=str(exc))
        except Exception:
            self._log.exception("poll_crashed", kind=kind)
        finally:
            if not self._detached:
                self._telemetry.record_poll(self.key, kind, time.monotonic() - started, ok=ok)
        if ok and kind == "volumes" and not self._detached:
            self._volumes_polled()

    async def _resync(self) -> None:
        # The info poll scans the pools it has no current scan for; the volume poll does the
        # rest, so a (re)connect costs one scan of every volume, not two.
        scanned: list[str] = []
        await self._timed("info", functools.partial(self._poll_info, scanned=scanned))
        skip = frozenset(scanned)
        # Guests before volumes: which guests a full pool stopped must not wait for a scan.
        await self._timed("guests", self._guests.resync)
        await self._timed("volumes", functools.partial(self._poll_volumes, skip=skip))

    async def _poll_info(self, *, scanned: list[str] | None = None) -> None:
        seq = self._news.seq
        readings = await self._source.list_pools()
        targets = await self._targets.inspect_all(
            [Target(r.name, r.type, r.target_path, r.active) for r in readings]
        )
        if self._detached:
            return
        current = self._inventory.hosts[self.key].pools
        pools: dict[str, PoolSnapshot] = {}
        stale_scans = []
        restat = []  # fast-path pools: volume figures from stat() of the files that changed
        for reading, target in zip(readings, targets, strict=True):
            if self._news.since(seq, reading.name) is not None:
                continue  # an event's re-read knows better than this listing
            scan = _carried_scan(current.get(reading.name), reading)
            pool = pools[reading.name] = self._snapshot(reading, target, scan)
            if self._local.can_restat(pool, reading.volume_count):
                restat.append(reading.name)
            elif reading.active and (scan is None or scan.count != reading.volume_count):
                stale_scans.append(reading.name)
        for name, pool in current.items():
            kind = self._news.since(seq, name)
            if kind is not None and kind is not PoolEventKind.UNDEFINED and name not in pools:
                pools[name] = pool
        for name in set(self._last_refresh) - set(pools):
            del self._last_refresh[name]
        for name in current.keys() - pools.keys():
            self._telemetry.record_pool_gone(self.key, name)
            self._local.forget(name)
            self._measured.pop(name, None)
        self._inventory.replace_pools(self.key, pools)
        if scanned is not None:  # a resync, whose volume poll lists them: scan once, here
            stale_scans, restat = stale_scans + restat, []
        if restat:
            await self._scan_into_inventory(restat, listed=False)
        if stale_scans:
            await self._scan_into_inventory(stale_scans)
            if scanned is not None:
                scanned.extend(stale_scans)

    async def _poll_volumes(self, skip: frozenset[str] = frozenset()) -> None:
        if self._detached:
            return
        pools = [
            p
            for p in self._inventory.hosts[self.key].pools.values()
            if p.active and p.name not in skip
        ]
        # Pools whose every change inotify sees get the info poll's restat (nothing, if it just
        # ran): their full read is the sweep's, so only while the sweep runs.
        safety_net = self.poll.sweep_interval > 0
        covered = {p.name for p in pools if safety_net and self._local.covered(p)}
        if covered:
            await self._scan_into_inventory(sorted(covered), listed=False)
        await self._scan_into_inventory([p.name for p in pools if p.name not in covered])

    async def _scan_into_inventory(self, names: list[str], *, listed: bool = True) -> None:
        async def one(name: str) -> None:
            before = self._inventory.pool(self.key, name)
            if before is None or not before.active:
                # Stopped since the scan was asked for (its STARTED event asks again): no
                # listing of a pool that has none, nor, if it is started meanwhile, a scan
                # through libvirt of every volume that its fast path would have spared.
                return
            try:
                scan = await self._scan(name, listed=listed)
            except PoolNotFound:
                return  # undefined meanwhile; its event does the rest
            except SourceError as exc:
                if exc.code == _OPERATION_INVALID:
                    return  # stopped meanwhile
                raise
            if self._detached:
                return
            current = self._inventory.pool(self.key, name)
            if current is None or not current.active:
                return
            previous = current.volumes
            if before is not None and scan is before.volumes:
                return  # a restat found nothing moved: nothing new for the exporter either
            if previous is not None and previous.volumes == scan.volumes:
                # Most scans find nothing changed: the same tuple tells the exporter so, and it
                # reuses what it built and encoded from it.
                scan = replace(scan, volumes=previous.volumes)
            self._inventory.put_pool(self.key, replace(current, volumes=scan))

        results = await asyncio.gather(*(one(n) for n in names), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _refresh_soon(self, pool: str) -> None:
        """A guest's write in the pool failed: libvirt's figures of the pool are those of its
        last refresh, from before the guest filled it. Refresh now (its REFRESHED event re-reads
        the pool), so the policies never act on space that is already gone."""
        if not self._connected:
            return
        if self._source.read_only:
            self._request_reread(pool, volumes=False)
            return
        self._tasks.spawn(
            self._timed("refresh", functools.partial(self._poll_refresh, frozenset({pool})))
        )

    async def _refresh_urgent(self) -> None:
        if self._urgent:
            await self._poll_refresh(only=self._urgent)

    async def _poll_refresh(self, only: frozenset[str] | None = None) -> None:
        if self._detached:
            return
        pools = self._inventory.hosts[self.key].pools.values()
        await refresh_pools(
            self._source, pools, only=only, detached=lambda: self._detached, log=self._log
        )

    # -- helpers ---------------------------------------------------------------------------

    @property
    def _log(self) -> Any:
        # Bound afresh for each event: a logger bound once would keep the log level it had
        # then, and a SIGHUP may change it.
        return log.bind(host=self._host)

    async def _scan(self, name: str, *, listed: bool = True) -> VolumeScan:
        limit = self.poll.max_volumes_per_pool
        pool = self._inventory.pool(self.key, name)
        if pool is not None and pool.fast_path:
            scan = await self._local.scan(pool, limit=limit, listed=listed)
            if scan is not None:
                return scan
        return await self._source.scan_volumes(name, limit=limit)

    async def _sweep(self) -> None:
        """libvirt alone reads every fast-path pool; disagreements are counted and logged."""
        for pool in list(self._inventory.hosts[self.key].pools.values()):
            if not pool.fast_path:
                continue
            try:
                limit = self.poll.max_volumes_per_pool
                sweep = await self._local.sweep(pool, limit=limit, log=self._log)
            except PoolNotFound:
                continue
            except SourceError as exc:
                if exc.code == _OPERATION_INVALID:
                    continue  # stopped meanwhile
                raise
            for fix in sweep.corrections:
                self._telemetry.record_fastpath_correction(self.key, fix.pool, fix.field)
            current = self._inventory.pool(self.key, pool.name)
            if sweep.scan is not None and current is not None and current.active:
                self._inventory.put_pool(self.key, replace(current, volumes=sweep.scan))

    def _snapshot(
        self,
        reading: PoolReading,
        target: tuple[FilesystemStat | None, bool | None],
        scan: VolumeScan | None,
        *,
        follow: bool = True,
        measured: bool = True,
    ) -> PoolSnapshot:
        """``measured``: ``target`` was inspected just now (not a quick restart's reuse of the
        last inspection), so a running dir pool's is kept as its last one."""
        last_refresh, now = self._last_refresh.get(reading.name), self._clock()
        if measured and reading.active and reading.type == "dir" and target[0] is not None:
            self._measured[reading.name] = (reading.target_path, target, time.monotonic())
        return self._local.snapshot(
            self._host, reading, target, scan, last_refresh, now, follow=follow
        )


def _carried_scan(previous: PoolSnapshot | None, reading: PoolReading) -> VolumeScan | None:
    """The last volume scan, while it still describes the same running pool."""
    if previous is None or not previous.active or not reading.active:
        return None
    if previous.uuid != reading.uuid:
        return None
    return previous.volumes
