"""Which pools of one connection take the fast path, and what it reads for them.

The watcher makes every reading of a pool a snapshot here: with the figures of ``space``, a
``PoolSpace`` where the pool is on the fast path (its directory then watched for files that come,
go or change), or libvirt's where it is not. ``scan`` and ``sweep`` read its volumes; the sweep
also compares the pool's figures with libvirt's own after a refresh. Files that come or go set
off a refresh; files whose content changed are only noted (``dirty``), so that the info poll's
restat stat()s those alone where inotify sees every write (``mounts``), and all of them elsewhere.

A pool whose every change inotify sees (``covered``) needs no volume poll of its own: files that
come or go set off a refresh and a scan, files written are noted. The watcher's volume poll then
makes the info poll's restat instead, and the full stat() of every file (the safety net for
writes inotify cannot see: through a shared mmap) is left to the sweep.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from poolwatch.fastpath.corrections import Correction, pool_corrections
from poolwatch.fastpath.dirty import DirtyFiles
from poolwatch.fastpath.inotify import Batch, DirectoryChanges
from poolwatch.fastpath.mounts import MOUNTINFO, filesystem_type, writes_seen
from poolwatch.fastpath.refresher import PoolRefresher
from poolwatch.fastpath.space import PoolSpace, TargetDevices, pool_space
from poolwatch.fastpath.volumes import FastPathUnavailable, VolumeFollower
from poolwatch.filesystem import FILESYSTEM_POOL_TYPES, stat_target
from poolwatch.model import FilesystemStat, PoolSnapshot, VolumeScan
from poolwatch.source import PoolReading, StorageSource

log = structlog.get_logger()

# After the kernel's inotify queue overflowed, files may have come or gone unseen in any pool:
# every watched pool is refreshed, but at most once per this many seconds. Guests writing hard
# in many pools at once can overflow the queue again and again (their write events merge only
# when consecutive), and a refresh of every pool each time would load libvirtd for nothing.
OVERFLOW_REFRESH_GAP = 30.0


@dataclass(frozen=True, slots=True)
class Sweep:
    """One pool read through libvirt alone, and where the fast path disagreed with it."""

    reading: PoolReading | None  # None: the pool's figures were not compared (read-only)
    scan: VolumeScan | None  # None: the volumes could not be compared (files unreadable)
    corrections: list[Correction]


class LocalPools:
    def __init__(
        self,
        source: StorageSource,
        executor: concurrent.futures.Executor,
        *,
        enabled: bool,
        timeout: Callable[[], float],
        rescan: Callable[[str], None],
        mountinfo: str = MOUNTINFO,
    ) -> None:
        self._source = source
        self._mountinfo = mountinfo
        self._executor = executor
        self._enabled = enabled
        self._timeout = timeout
        self._devices = TargetDevices()
        self._volumes = VolumeFollower(source, executor, timeout=timeout)
        self._refresher = PoolRefresher(self._refresh, rescan)
        self._changes = DirectoryChanges(self._changed)
        self._dirty = DirtyFiles()
        self._seen: dict[str, bool] = {}  # pool -> inotify sees every write to its files
        self._on: set[str] = set()  # pools on the fast path as of their last reading
        self._overflow_refresh: asyncio.TimerHandle | None = None  # refresh of all, when due
        self._overflow_refreshed = float("-inf")  # loop time of the last one

    def snapshot(
        self,
        host: str,
        reading: PoolReading,
        target: tuple[FilesystemStat | None, bool | None],
        scan: VolumeScan | None,
        last_refresh: float | None,
        now: float,
        *,
        follow: bool = True,
    ) -> PoolSnapshot:
        """The pool as the inventory keeps it: ``target`` is its filesystem and whether it is
        mounted, ``scan`` its volumes (dropped if it is not running). ``follow``: see
        ``space``."""
        filesystem, mounted = target
        space = self.space(reading, filesystem, follow=follow)
        return PoolSnapshot(
            host=host,
            name=reading.name,
            uuid=reading.uuid,
            type=reading.type,
            target_path=reading.target_path,
            source=reading.source,
            state=reading.state,
            active=reading.active,
            persistent=reading.persistent,
            autostart=reading.autostart,
            capacity=reading.capacity if space is None else space.capacity,
            allocation=reading.allocation if space is None else space.allocation,
            available=reading.available if space is None else space.available,
            filesystem=filesystem,
            volumes=scan if reading.active else None,
            last_refresh=last_refresh,
            target_mounted=mounted,
            read_at=now,
            fast_path=space is not None,
        )

    def space(
        self, reading: PoolReading, filesystem: FilesystemStat | None, *, follow: bool = True
    ) -> PoolSpace | None:
        """The pool's figures from statvfs, or None where they must come from libvirt.
        ``follow=False`` leaves the watch of a pool's directory to its next reading: a start
        shows from a statvfs before its re-read returns, and its first inotify and mountinfo
        calls (~1 ms on a busy host: each gives up the GIL and waits to get it back) would
        come first. Until then the pool's files are read as if inotify saw nothing."""
        name = reading.name
        if not self._enabled or reading.type not in FILESYSTEM_POOL_TYPES:
            self.forget(name)
            return None
        if not reading.active:
            self.pause(name)
            return None
        if filesystem is None:  # not visible here: not mounted in our namespace, or gone
            self._leave(name, reason="target not visible")
            self._devices.forget(name)
            return None
        if not self._devices.same(name, reading.uuid, filesystem.device):
            # Kept off until the pool restarts: the pin stays.
            self._leave(name, reason="target moved to another filesystem")
            return None
        self._on.add(name)
        if not follow:
            return pool_space(filesystem)
        if self._changes.watch(name, reading.target_path) and self._writes_seen(
            reading, filesystem
        ):
            self._dirty.follow(name)
        else:
            self._dirty.forget(name)  # every info poll stat()s all its volumes
        return pool_space(filesystem)

    def forget(self, pool: str) -> None:
        """The pool went away: nothing of it is kept."""
        self.pause(pool)
        self._volumes.forget(pool)

    def pause(self, pool: str) -> None:
        """The pool stopped: nothing of its run is kept but its volumes' descriptions, which a
        restart reuses where the files did not change (``VolumeFollower.pause``)."""
        self._devices.forget(pool)
        self._volumes.pause(pool)
        self._changes.unwatch(pool)
        self._dirty.forget(pool)
        self._seen.pop(pool, None)
        self._on.discard(pool)

    def covered(self, pool: PoolSnapshot) -> bool:
        """Whether inotify saw every change to the pool's files since they were last all read:
        then a restat brings its volumes up to date without listing them. Not on a read-only
        connection, where another client's changes reach libvirt only through a listing."""
        return (
            pool.fast_path
            and pool.volumes is not None
            and not self._source.read_only
            and self._dirty.covered(pool.name)
            and self._volumes.known(pool.name, pool.uuid) is not None
        )

    def can_restat(self, pool: PoolSnapshot, volume_count: int | None) -> bool:
        """Whether the pool's known volumes are all it has: stat() alone brings them up to date."""
        known = self._volumes.known(pool.name, pool.uuid)
        return pool.fast_path and known is not None and known == volume_count

    async def scan(
        self, pool: PoolSnapshot, *, limit: int, listed: bool = True
    ) -> VolumeScan | None:
        """The pool's volumes from their files; None where libvirt must be asked instead.
        ``listed``: ask libvirt for their names first, else only stat() the volumes known, and
        of a pool whose writes inotify sees only those whose files changed since the last time:
        ``pool.volumes`` itself when no figure moved."""
        changed = None
        if listed:
            self._dirty.reading_all(pool.name)
        else:
            self._changes.catch_up()
            changed = self._dirty.take(pool.name)
        try:
            if not listed and pool.volumes is not None:
                found = await self._volumes.restat(
                    pool.name, pool.uuid, pool.target_path, changed, pool.volumes, limit=limit
                )
            else:
                found = await self._volumes.scan(
                    pool.name, pool.uuid, pool.target_path, limit=limit, listed=listed
                )
        except FastPathUnavailable as exc:
            log.warning("fastpath_volumes_unavailable", pool=pool.name, error=str(exc))
            self._volumes.forget(pool.name)
            self._dirty.lost(pool.name)
            return None
        except BaseException:
            self._dirty.lost(pool.name)  # what was taken is not read: read it all next time
            raise
        if found.vanished and not self._source.read_only:
            self._refresher.changed(pool.name)  # files gone behind libvirt's back
        return found.scan

    async def sweep(self, pool: PoolSnapshot, *, limit: int, log: Any) -> Sweep:
        """Read the pool through libvirt alone; count where the fast path disagreed."""
        corrections: list[Correction] = []
        reading = None
        if not self._source.read_only:
            # Counted only if the filesystem did not change around the refresh: a guest
            # writing meanwhile is not a disagreement.
            before = await self._statvfs(pool)
            await self._source.refresh_pool(pool.name)
            reading = await self._source.read_pool(pool.name)
            after = await self._statvfs(pool)
            if before is not None and before == after and reading.active:
                libvirt = PoolSpace(reading.capacity, reading.allocation, reading.available)
                corrections += pool_corrections(pool.name, pool_space(before), libvirt)
        scan = None
        self._dirty.reading_all(pool.name)
        try:
            scan, found = await self._volumes.sweep(
                pool.name, pool.uuid, pool.target_path, limit=limit
            )
            corrections += found
        except FastPathUnavailable as exc:
            log.warning("fastpath_volumes_unavailable", pool=pool.name, error=str(exc))
            self._dirty.lost(pool.name)
        except BaseException:
            self._dirty.lost(pool.name)
            raise
        for fix in corrections:
            log.warning(
                "fastpath_correction",
                pool=fix.pool,
                field=fix.field,
                volume=fix.volume,
                fast_path=fix.fast_path,
                libvirt=fix.libvirt,
            )
        return Sweep(reading, scan, corrections)

    async def close(self) -> None:
        if self._overflow_refresh is not None:
            self._overflow_refresh.cancel()
        await self._refresher.close()
        self._changes.close()

    def _leave(self, name: str, *, reason: str) -> None:
        if name in self._on:
            log.warning("fastpath_left", pool=name, reason=reason)
            self._on.discard(name)
        self._volumes.forget(name)
        self._changes.unwatch(name)
        self._dirty.forget(name)
        self._seen.pop(name, None)

    def _writes_seen(self, reading: PoolReading, filesystem: FilesystemStat) -> bool:
        """Whether inotify sees every write to the pool's files; decided once per run."""
        seen = self._seen.get(reading.name)
        if seen is None:
            fstype = filesystem_type(filesystem.device, reading.target_path, self._mountinfo)
            seen = self._seen[reading.name] = writes_seen(reading.type, fstype)
            if not seen:
                log.info(
                    "fastpath_full_restat",
                    pool=reading.name,
                    filesystem=fstype,
                    reason="inotify does not see every write there",
                )
        return seen

    def _changed(self, batch: Batch) -> None:
        for name in batch.lost:
            self._dirty.lost(name)
        for name, files in batch.files.items():
            self._dirty.changed(name, files)
        # Another client's changes reach libvirt only through its refresh, which a read-only
        # connection cannot make: there the volume poll's listing catches up.
        if self._source.read_only:
            return
        for name in sorted(batch.entries):
            self._refresher.changed(name)
        if batch.overflow and self._overflow_refresh is None:
            loop = asyncio.get_running_loop()
            due = self._overflow_refreshed + OVERFLOW_REFRESH_GAP - loop.time()
            self._overflow_refresh = loop.call_later(max(0.0, due), self._refresh_watched)

    def _refresh_watched(self) -> None:
        self._overflow_refresh = None
        self._overflow_refreshed = asyncio.get_running_loop().time()
        for name in sorted(self._changes.watched):
            self._refresher.changed(name)

    async def _refresh(self, name: str) -> None:
        try:
            await self._source.refresh_pool(name, urgent=True)
        except BaseException:
            # Files came or went, and no scan follows: the next volume poll must list the pool.
            self._dirty.lost(name)
            raise

    async def _statvfs(self, pool: PoolSnapshot) -> FilesystemStat | None:
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, stat_target, pool.type, pool.target_path
        )
        try:
            async with asyncio.timeout(self._timeout()):
                return await asyncio.shield(future)
        except TimeoutError:
            return None
