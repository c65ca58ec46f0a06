"""The volumes of fast-path pools: stat() for the figures, libvirt only for what stat cannot tell.

Per pool, each volume's last description by libvirt is kept with its file's stat() from just
before that description. A scan lists the pool's volume names (one call), stat()s every file in
one pass in a worker thread, and asks libvirt (XMLDesc) only for volumes that are new or whose
file changed in a way stat cannot account for (see ``files.figures``). A restat does the same for
the named volumes only (those inotify saw change, and always those whose writes inotify on the
pool's directory cannot see: ``files.unseen_files``, resolved once when a volume is described)
and returns the pool's last scan itself when their figures did not move. The sweep asks libvirt
for every volume, stat()s every file, and counts where the two disagree.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from poolwatch.fastpath.corrections import Correction, volume_corrections
from poolwatch.fastpath.files import FileFacts, TrackedVolume, figures, stat_files, unseen_files
from poolwatch.model import VolumeScan, VolumeSnapshot, volume_scan
from poolwatch.source import StorageSource

T = TypeVar("T")


class FastPathUnavailable(Exception):
    """The pool's files cannot be read this round (I/O error, hung mount): ask libvirt."""


@dataclass
class _PoolFiles:
    uuid: str
    target: str
    tracked: dict[str, TrackedVolume] = field(default_factory=dict)  # by volume name
    latest: dict[str, VolumeSnapshot] = field(default_factory=dict)  # figures of the last scan
    unseen: set[str] = field(default_factory=set)  # tracked volumes restated every time
    # Stopped since the volumes were described: until a listed scan, only a file stat() finds
    # exactly as it was then keeps its description (see ``VolumeFollower.pause``).
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class FastScan:
    scan: VolumeScan
    vanished: tuple[str, ...]  # volumes libvirt still lists whose file is gone
    described: int  # volumes libvirt was asked about


class VolumeFollower:
    def __init__(
        self,
        source: StorageSource,
        executor: concurrent.futures.Executor,
        *,
        timeout: Callable[[], float],
    ) -> None:
        self._source = source
        self._executor = executor
        self._timeout = timeout
        self._pools: dict[str, _PoolFiles] = {}

    def forget(self, pool: str) -> None:
        """The pool left the fast path or went away."""
        self._pools.pop(pool, None)

    def pause(self, pool: str) -> None:
        """The pool stopped. What libvirt said of its volumes is kept for its next run: a file
        that stat() then finds exactly as it was when described (size, blocks, mtime) is not
        described again, so a restart of a pool of 6,000 volumes costs a listing and a stat()
        of each file instead of 6,000 XMLDesc() calls. Anything else is asked again."""
        files = self._pools.get(pool)
        if files is not None:
            files.latest = {}
            files.resumed = True

    def known(self, pool: str, uuid: str) -> int | None:
        """How many volumes of the pool's current run are followed; None: not scanned yet."""
        files = self._pools.get(pool)
        if files is None or files.uuid != uuid or files.resumed:
            return None
        return len(files.tracked)

    async def scan(
        self, pool: str, uuid: str, target: str, *, limit: int, listed: bool = True
    ) -> FastScan:
        """``listed``: ask libvirt for the volume names (else follow the volumes known)."""
        scanned_at = time.time()
        files = self._files(pool, uuid, target)
        tracked = files.tracked
        names = await self._source.list_volume_names(pool) if listed else sorted(tracked)
        for gone in tracked.keys() - set(names):
            del tracked[gone]
            files.unseen.discard(gone)
        files.latest = {n: v for n, v in files.latest.items() if n in tracked}
        # A new volume's file is most likely <target>/<name>, as libvirt names them in these
        # pools: stat()ed before it is described, like the others.
        paths = {
            name: tracked[name].description.path if name in tracked else os.path.join(target, name)
            for name in names
        }
        vanished, described, _moved = await self._update(pool, files, paths)
        files.resumed = False
        volumes = [files.latest[n] for n in names if n in files.latest]
        return FastScan(volume_scan(volumes, limit, scanned_at), vanished, described)

    async def restat(
        self,
        pool: str,
        uuid: str,
        target: str,
        names: frozenset[str] | None,
        last: VolumeScan,
        *,
        limit: int,
    ) -> FastScan:
        """stat() the known volumes among ``names`` (None: all of them) and those whose writes
        inotify cannot see; ``last`` (the pool's current scan, the very object) again if none of
        their figures moved."""
        scanned_at = time.time()
        files = self._files(pool, uuid, target)
        known = files.tracked.keys()
        chosen = known if names is None else (names | files.unseen) & known
        paths = {n: files.tracked[n].description.path for n in sorted(chosen)}
        if not paths:
            return FastScan(last, (), 0)
        vanished, described, moved = await self._update(pool, files, paths)
        if not moved:
            return FastScan(last, vanished, described)
        scan = volume_scan(list(files.latest.values()), limit, scanned_at)
        return FastScan(scan, vanished, described)

    async def _update(
        self, pool: str, files: _PoolFiles, paths: dict[str, str]
    ) -> tuple[tuple[str, ...], int, bool]:
        """stat() the volumes of ``paths`` (name -> path), ask libvirt what stat cannot tell,
        and keep their figures in ``files.latest``: (vanished, asked, whether figures moved)."""
        tracked, latest = files.tracked, files.latest
        facts = await self._blocking(stat_files, list(paths.values()))
        ask: list[str] = []
        vanished: list[str] = []
        moved = False
        for name, path in paths.items():
            now = facts[path]
            known = tracked.get(name)
            if now is None:
                if known is not None:
                    vanished.append(name)  # removed behind libvirt's back: its refresh follows
                    moved |= latest.pop(name, None) is not None
                else:
                    ask.append(name)
                continue
            if known is None or (files.resumed and now != known.facts):
                current = None
            else:
                current = figures(known, now)
            if current is None:
                ask.append(name)
            elif latest.get(name) != current:
                latest[name] = current
                moved = True
        if ask:
            missing = set(ask)  # those libvirt no longer describes are gone
            descriptions = await self._source.describe_volumes(pool, ask)
            for described in descriptions:
                name = described.volume.name
                missing.discard(name)
                before = facts.get(described.path) if described.path == paths.get(name) else None
                tracked[name] = TrackedVolume(described, before)
                if latest.get(name) != described.volume:
                    latest[name] = described.volume
                    moved = True
            for name in missing:
                moved |= latest.pop(name, None) is not None
                files.unseen.discard(name)
            await self._resolve(files, {d.volume.name: d.path for d in descriptions})
        return tuple(vanished), len(ask), moved

    async def _resolve(self, files: _PoolFiles, paths: dict[str, str]) -> None:
        """Note which of the volumes just described inotify on the directory cannot see."""
        unseen = await self._blocking(unseen_files, files.target, paths)
        files.unseen -= paths.keys()
        files.unseen |= unseen

    async def sweep(
        self, pool: str, uuid: str, target: str, *, limit: int
    ) -> tuple[VolumeScan, list[Correction]]:
        """Every volume through libvirt; the fast path's figures where they differ are counted.

        A volume counts only if its file did not change while libvirt read it (stat() before
        and after agree): a guest writing meanwhile is not a disagreement.
        """
        scanned_at = time.time()
        files = self._files(pool, uuid, target)
        known = dict(files.tracked)
        before = await self._blocking(stat_files, [t.description.path for t in known.values()])
        described = await self._source.describe_volumes(pool)
        after = await self._blocking(stat_files, [d.path for d in described if d.path])
        corrections: list[Correction] = []
        tracked: dict[str, TrackedVolume] = {}
        for description in described:
            name = description.volume.name
            stable = _stable(before.get(description.path), after.get(description.path))
            previous = known.get(name)
            if previous is not None and stable is not None:
                fast = figures(previous, stable)
                if fast is not None:
                    corrections += volume_corrections(pool, fast, description.volume)
            tracked[name] = TrackedVolume(description, stable)
        latest = {d.volume.name: d.volume for d in described}
        # Resolved once per volume: again only where libvirt now names another file.
        new = {
            d.volume.name: d.path
            for d in described
            if d.volume.name not in known or known[d.volume.name].description.path != d.path
        }
        swept = _PoolFiles(uuid, target, tracked, latest, files.unseen & tracked.keys())
        await self._resolve(swept, new)
        self._pools[pool] = swept
        return volume_scan([d.volume for d in described], limit, scanned_at), corrections

    def _files(self, pool: str, uuid: str, target: str) -> _PoolFiles:
        files = self._pools.get(pool)
        if files is None or files.uuid != uuid or files.target != target:
            files = self._pools[pool] = _PoolFiles(uuid, target)
        return files

    async def _blocking(self, fn: Callable[..., T], *args: object) -> T:
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(fn, *args)
        )
        try:
            async with asyncio.timeout(self._timeout()):
                return await asyncio.shield(future)
        except TimeoutError:
            raise FastPathUnavailable("stat() of the volumes timed out") from None
        except OSError as exc:
            raise FastPathUnavailable(str(exc)) from None


def _stable(before: FileFacts | None, after: FileFacts | None) -> FileFacts | None:
    return before if before is not None and before == after else None
