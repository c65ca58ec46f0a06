"""Which volume files of each pool changed since its last restat, as inotify tells.

A pool is followed only while its directory is watched and its filesystem is one whose every
write this kernel sees (``mounts``); for any other pool ``take`` answers "everything", and the
info poll stat()s all its volumes as before. So does it for a followed pool whose events may have
been lost (queue overflow, watch dropped) and for its first restat (nothing was recorded before
the watch began).

A followed pool is ``covered`` once a full read (a listing of its volumes through libvirt and a
stat() of every file: a volume poll's scan, or the sweep) began after its watch did, with no
events lost since: every change to it since then is known here, so the volume poll needs no
listing of its own.
"""

from __future__ import annotations

from collections.abc import Iterable


class DirtyFiles:
    def __init__(self) -> None:
        # pool -> names changed since the last take; None: everything (unknown, or lost)
        self._pools: dict[str, set[str] | None] = {}
        self._unread: set[str] = set()  # followed pools not fully read since watched or lost

    def follow(self, pool: str) -> None:
        """The pool's writes are seen from now on; until its next take, everything counts."""
        if pool not in self._pools:
            self._pools[pool] = None
            self._unread.add(pool)

    def forget(self, pool: str) -> None:
        """The pool is no longer followed: every take answers everything."""
        self._pools.pop(pool, None)
        self._unread.discard(pool)

    def followed(self, pool: str) -> bool:
        return pool in self._pools

    def covered(self, pool: str) -> bool:
        """Whether every change to the pool's files since its last full read is known here."""
        return pool in self._pools and pool not in self._unread

    def reading_all(self, pool: str) -> None:
        """A full read of the pool begins: what it notes from now on is all that is new. If the
        read fails, ``lost`` must follow."""
        if pool in self._pools:
            self._pools[pool] = set()
            self._unread.discard(pool)

    def changed(self, pool: str, names: Iterable[str]) -> None:
        found = self._pools.get(pool)
        if found is not None:
            found.update(names)

    def lost(self, pool: str) -> None:
        """Events of the pool may be missing: its next take answers everything."""
        if pool in self._pools:
            self._pools[pool] = None
            self._unread.add(pool)

    def take(self, pool: str) -> frozenset[str] | None:
        """The names changed since the last take (and forget them); None: everything."""
        if pool not in self._pools:
            return None
        found, self._pools[pool] = self._pools[pool], set()
        return None if found is None else frozenset(found)
