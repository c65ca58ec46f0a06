"""The volumes of fast-path pools: stat() for the figures, libvirt only for what stat cannot tell.

Per pool, each volume's last description by libvirt is kept with its file's stat() from just
before that description. A scan lists the pool's volume names (one call), stat()s every file in
one pass in a worker thread, and asks libvirt (XMLDesc) only for volumes that are new or whose
file changed in a way stat cannot account for (see ``files.figures``). The sweep asks libvirt
for every volume and counts where the two disagree.
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
from poolwatch.fastpath.files import FileFacts, TrackedVolume, figures, stat_files
from poolwatch.model import VolumeScan, VolumeSnapshot, volume_scan
from poolwatch.source import StorageSource

T = TypeVar("T")


class FastPathUnavailable(Exception):
    """The pool's files cannot be read this round (I/O error, hung mount): ask libvirt."""


@dataclass
class _PoolFiles:
    uuid: str
    tracked: dict[str, TrackedVolume] = field(default_factory=dict)  # by volume name


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
        """The pool stopped, left the fast path or went away."""
        self._pools.pop(pool, None)

    def known(self, pool: str, uuid: str) -> int | None:
        """How many volumes of the pool's current run are followed; None: not scanned yet."""
        files = self._pools.get(pool)
        return None if files is None or files.uuid != uuid else len(files.tracked)

    async def scan(
        self, pool: str, uuid: str, target: str, *, limit: int, listed: bool = True
    ) -> FastScan:
        """``listed``: ask libvirt for the volume names (else follow the volumes known)."""
        scanned_at = time.time()
        tracked = self._files(pool, uuid).tracked
        names = await self._source.list_volume_names(pool) if listed else sorted(tracked)
        for gone in tracked.keys() - set(names):
            del tracked[gone]
        # A new volume's file is most likely <target>/<name>, as libvirt names them in these
        # pools: stat()ed before it is described, like the others.
        paths = {
            name: tracked[name].description.path if name in tracked else os.path.join(target, name)
            for name in names
        }
        facts = await self._blocking(stat_files, list(paths.values()))
        volumes: list[VolumeSnapshot] = []
        ask: list[str] = []
        vanished: list[str] = []
        for name in names:
            now = facts[paths[name]]
            known = tracked.get(name)
            if now is None:
                if known is not None:
                    vanished.append(name)  # removed behind libvirt's back: its refresh follows
                else:
                    ask.append(name)
                continue
            current = None if known is None else figures(known, now)
            if current is None:
                ask.append(name)
            else:
                volumes.append(current)
        if ask:
            for described in await self._source.describe_volumes(pool, ask):
                before = (
                    facts.get(described.path)
                    if described.path == paths.get(described.volume.name)
                    else None
                )
                tracked[described.volume.name] = TrackedVolume(described, before)
                volumes.append(described.volume)
        return FastScan(volume_scan(volumes, limit, scanned_at), tuple(vanished), len(ask))

    async def sweep(
        self, pool: str, uuid: str, *, limit: int
    ) -> tuple[VolumeScan, list[Correction]]:
        """Every volume through libvirt; the fast path's figures where they differ are counted.

        A volume counts only if its file did not change while libvirt read it (stat() before
        and after agree): a guest writing meanwhile is not a disagreement.
        """
        scanned_at = time.time()
        known = dict(self._files(pool, uuid).tracked)
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
        self._pools[pool] = _PoolFiles(uuid, tracked)
        return volume_scan([d.volume for d in described], limit, scanned_at), corrections

    def _files(self, pool: str, uuid: str) -> _PoolFiles:
        files = self._pools.get(pool)
        if files is None or files.uuid != uuid:
            files = self._pools[pool] = _PoolFiles(uuid)
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
