"""Which volume files of each pool changed since its last restat, as inotify tells.

A pool is followed only while its directory is watched and its filesystem is one whose every
write this kernel sees (``mounts``); for any other pool ``take`` answers "everything", and the
info poll stat()s all its volumes as before. So does it for a followed pool whose events may have
been lost (queue overflow, watch dropped) and for its first restat (nothing was recorded before
the watch began).
"""

from __future__ import annotations

from collections.abc import Iterable


class DirtyFiles:
    def __init__(self) -> None:
        # pool -> names changed since the last take; None: everything (unknown, or lost)
        self._pools: dict[str, set[str] | None] = {}

    def follow(self, pool: str) -> None:
        """The pool's writes are seen from now on; until its next take, everything counts."""
        self._pools.setdefault(pool, None)

    def forget(self, pool: str) -> None:
        """The pool is no longer followed: every take answers everything."""
        self._pools.pop(pool, None)

    def followed(self, pool: str) -> bool:
        return pool in self._pools

    def changed(self, pool: str, names: Iterable[str]) -> None:
        found = self._pools.get(pool)
        if found is not None:
            found.update(names)

    def lost(self, pool: str) -> None:
        """Events of the pool may be missing: its next take answers everything."""
        if pool in self._pools:
            self._pools[pool] = None

    def take(self, pool: str) -> frozenset[str] | None:
        """The names changed since the last take (and forget them); None: everything."""
        if pool not in self._pools:
            return None
        found, self._pools[pool] = self._pools[pool], set()
        return None if found is None else frozenset(found)
