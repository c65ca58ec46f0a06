"""statvfs of pool targets on this host: the space a non-root writer such as QEMU can use.

libvirt's ``available`` counts root-reserved blocks, so a pool can look half empty while QEMU
already gets ENOSPC. Where the target is a local filesystem we read it ourselves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from poolwatch.model import FilesystemStat

# Pool types whose target path is a filesystem on the libvirt host.
FILESYSTEM_POOL_TYPES = frozenset({"dir", "fs", "netfs"})


def is_local_uri(uri: str) -> bool:
    """A connection to the libvirtd of this very host, whose pool paths we can stat."""
    parts = urlsplit(uri)
    driver, _, transport = parts.scheme.partition("+")
    if driver == "test":  # the test driver's pools are simulated: their paths mean nothing
        return False
    return parts.hostname in (None, "", "localhost") and transport in ("", "unix")


def stat_target(pool_type: str, path: str) -> FilesystemStat | None:
    """Blocking (a hung NFS mount blocks it): call from a worker thread with a timeout."""
    if pool_type not in FILESYSTEM_POOL_TYPES or not path:
        return None
    try:
        # An fs/netfs target that is not a mount point in our view (libvirtd in another mount
        # namespace, or the mount went away) would report the wrong filesystem: say nothing.
        if pool_type != "dir" and not os.path.ismount(path):
            return None
        st = os.statvfs(path)
        device = os.stat(path).st_dev
    except OSError:
        return None
    return FilesystemStat(
        avail_bytes=st.f_bavail * st.f_frsize,
        size_bytes=st.f_blocks * st.f_frsize,
        free_bytes=st.f_bfree * st.f_frsize,
        device=f"{os.major(device)}:{os.minor(device)}",
    )


def inspect_target(
    pool_type: str, path: str, *, active: bool
) -> tuple[FilesystemStat | None, bool | None]:
    """Blocking: the filesystem of an active pool's target, and for dir pools whether the
    target is a mount point (the require_mount guard needs that for inactive pools too).
    """
    mounted = os.path.ismount(path) if pool_type == "dir" and path else None
    return (stat_target(pool_type, path) if active else None), mounted


@dataclass(frozen=True, slots=True)
class Target:
    """A pool's target to inspect."""

    pool: str
    type: str
    path: str
    active: bool


Inspected = tuple[FilesystemStat | None, bool | None]

# How long a target may have been in another call's job and still be measured again by
# `TargetInspector.inspect_soon`: a healthy statvfs takes microseconds, and a job of every
# pool's target (the info poll) some milliseconds at 500 pools.
IN_FLIGHT_GRACE = 0.05


class _Job:
    """Targets inspected in turn in one worker job; what it found so far can be read while it
    runs, and it stops before the next target once abandoned."""

    def __init__(self, targets: list[Target]) -> None:
        self.targets = targets
        self.found: dict[int, Inspected] = {}
        self.current = 0
        self.abandoned = threading.Event()

    def run(self) -> None:
        for index, target in enumerate(self.targets):
            if self.abandoned.is_set():
                return
            self.current = index
            self.found[index] = inspect_target(target.type, target.path, active=target.active)


class TargetInspector:
    """`inspect_target` off the event loop, bounded: a hung mount (a dead NFS server) blocks a
    worker thread, so a target still stuck from an earlier call is not asked again, and a call
    that outlives ``timeout()`` seconds is given up as not measurable."""

    def __init__(
        self,
        executor: concurrent.futures.Executor,
        *,
        enabled: bool,
        timeout: Callable[[], float],
        log: Callable[[], Any],
    ) -> None:
        """``log()``: the logger to warn on, bound to the connection's context."""
        self._executor = executor
        self._log = log
        self._enabled = enabled
        self._timeout = timeout
        # Targets in a job that has not returned, with the loop time the job was submitted.
        self._pending: dict[str, float] = {}

    async def inspect(self, pool_type: str, path: str, *, active: bool, pool: str) -> Inspected:
        """The target's filesystem and mount status; (None, None) where not measurable."""
        return (await self.inspect_all([Target(pool, pool_type, path, active)]))[0]

    async def inspect_all(self, targets: Sequence[Target]) -> list[Inspected]:
        """``inspect`` of every target, in one worker job rather than a job per pool: at 500
        pools the 500 hand-overs between the loop and a worker cost more than the statvfs calls.

        A target that hangs holds up the job: it is given up after ``timeout()`` (and left out
        until its call returns), and the targets after it go on in a new job.
        """
        results: list[Inspected] = [(None, None)] * len(targets)
        todo = [
            i
            for i, t in enumerate(targets)
            if self._enabled and t.type in FILESYSTEM_POOL_TYPES and t.path not in self._pending
        ]
        loop = asyncio.get_running_loop()
        while todo:
            job = _Job([targets[i] for i in todo])
            held = {t.path for t in job.targets}  # in _pending for this job, until it returns
            self._pending.update(dict.fromkeys(held, loop.time()))
            future = loop.run_in_executor(self._executor, job.run)
            future.add_done_callback(functools.partial(self._release, held))
            try:
                # never wait_for: see LibvirtSource._call
                async with asyncio.timeout(self._timeout()):
                    await asyncio.shield(future)
            except TimeoutError:
                job.abandoned.set()
            except asyncio.CancelledError:
                job.abandoned.set()
                raise
            for index, found in job.found.items():
                results[todo[index]] = found
            if future.done():
                break
            stuck = job.current
            if stuck not in job.found:
                target = job.targets[stuck]
                self._log().warning("filesystem_stat_timeout", pool=target.pool, path=target.path)
                # Only the stuck target stays out of later calls until its call returns.
                self._forget(held - {target.path})
                held.intersection_update({target.path})
            else:
                self._forget(held)
                held.clear()
            todo = [todo[j] for j in range(stuck + 1, len(todo)) if j not in job.found]
        return results

    def inspect_soon(self, target: Target, then: Callable[[Inspected], None]) -> None:
        """``inspect`` of one target, handed to ``then`` on the loop as soon as its call
        returns: one hand-over between the worker and the loop, where awaiting ``inspect``
        takes four (each a turn of the loop, ~1 ms when scrapes keep it busy). Nothing is
        handed over for a target that is not measurable now, nor when the call hangs: nobody
        waits for it. A target that another call has had in flight for a moment is measured
        again (a start right after a stop, whose re-read's statvfs has not come back yet); one
        in flight longer than `IN_FLIGHT_GRACE` is not, as it may hang (a dead NFS server), and
        a second call would hold a second worker."""
        loop = asyncio.get_running_loop()
        if (
            not self._enabled
            or target.type not in FILESYSTEM_POOL_TYPES
            or (
                target.path in self._pending
                and loop.time() - self._pending[target.path] > IN_FLIGHT_GRACE
            )
        ):
            return

        def run() -> None:
            found = inspect_target(target.type, target.path, active=target.active)
            # RuntimeError: the loop closed meanwhile, shutting down.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(then, found)

        # RuntimeError: the executor shut down, the connection is being closed.
        with contextlib.suppress(RuntimeError):
            self._executor.submit(run)

    def _release(self, held: set[str], _future: object) -> None:
        self._forget(held)

    def _forget(self, paths: set[str]) -> None:
        for path in paths:
            self._pending.pop(path, None)
