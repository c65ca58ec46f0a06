"""The last resort when a finalizer did not run: harness objects still open are closed at exit.

Libvirtds go first (rank 0): their mount namespaces may hold mounts of the loop devices.
"""

import atexit
import contextlib
from typing import Protocol


class Closable(Protocol):
    def close(self) -> None: ...


class Leftovers:
    """Objects to close when Python exits, lowest rank first; each removes itself on close."""

    def __init__(self) -> None:
        self._ranks: dict[Closable, int] = {}

    def add(self, item: Closable, *, rank: int = 1) -> None:
        self._ranks[item] = rank

    def discard(self, item: Closable) -> None:
        self._ranks.pop(item, None)

    def close_all(self) -> None:
        for item in sorted(self._ranks, key=lambda i: self._ranks.get(i, 1)):
            with contextlib.suppress(Exception):
                item.close()


LEFTOVERS = Leftovers()
atexit.register(LEFTOVERS.close_all)
