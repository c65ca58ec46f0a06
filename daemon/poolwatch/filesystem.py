"""statvfs of pool targets on this host: the space a non-root writer such as QEMU can use.

libvirt's ``available`` counts root-reserved blocks, so a pool can look half empty while QEMU
already gets ENOSPC. Where the target is a local filesystem we read it ourselves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
from collections.abc import Callable
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
        self._pending: set[str] = set()

    async def inspect(
        self, pool_type: str, path: str, *, active: bool, pool: str
    ) -> tuple[FilesystemStat | None, bool | None]:
        """The target's filesystem and mount status; (None, None) where not measurable."""
        if not self._enabled or pool_type not in FILESYSTEM_POOL_TYPES or path in self._pending:
            return None, None
        self._pending.add(path)
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(inspect_target, pool_type, path, active=active)
        )
        future.add_done_callback(lambda _f: self._pending.discard(path))
        try:
            async with asyncio.timeout(self._timeout()):  # never wait_for: see LibvirtSource._call
                return await asyncio.shield(future)
        except TimeoutError:
            self._log().warning("filesystem_stat_timeout", pool=pool, path=path)
            return None, None
