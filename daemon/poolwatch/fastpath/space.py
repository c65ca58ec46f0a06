"""A pool's capacity, allocation and available from statvfs, by libvirt's own formula.

libvirt's refresh of ``dir``, ``fs`` and ``netfs`` pools (virStorageBackendRefreshLocal, in
src/storage/storage_util.c of libvirt 9.0) sets::

    capacity   = f_frsize * f_blocks
    available  = f_frsize * f_bfree      (root-reserved blocks included)
    allocation = capacity - available

so the same arithmetic on our own statvfs gives what libvirt would report after a refresh,
without asking libvirtd or taking the pool's lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from poolwatch.model import FilesystemStat


@dataclass(frozen=True, slots=True)
class PoolSpace:
    capacity: int
    allocation: int
    available: int


def pool_space(filesystem: FilesystemStat) -> PoolSpace:
    """What libvirt's refresh would report for a pool on this filesystem."""
    capacity = filesystem.size_bytes
    available = filesystem.free_bytes
    return PoolSpace(capacity=capacity, allocation=capacity - available, available=available)


class TargetDevices:
    """The filesystem each running pool's target was on when first measured.

    A ``dir`` pool on a mount point whose mount vanished still has a directory, now on the
    filesystem below: its statvfs would be the wrong filesystem's. A target that moved to
    another device is trusted again only after the pool restarts (a new run, a new pin).
    """

    def __init__(self) -> None:
        self._pinned: dict[str, tuple[str, str]] = {}  # pool name -> (uuid, device)

    def same(self, pool: str, uuid: str, device: str) -> bool:
        pinned = self._pinned.get(pool)
        if pinned is None or pinned[0] != uuid:
            self._pinned[pool] = (uuid, device)
            return True
        return pinned[1] == device

    def forget(self, pool: str) -> None:
        """The pool stopped or went away: its next run pins afresh."""
        self._pinned.pop(pool, None)
