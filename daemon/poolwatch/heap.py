"""Short full passes of the garbage collector: what poolwatch read from libvirt is frozen.

A full collection walks every container object the collector tracks, holding the GIL: at 5
pools x 6,000 volumes, ~190,000 objects, 6-15 ms (traced under 10 scrapers), during which no
event is handled and no scrape answered. CPython starts one whenever the objects that survived
into its oldest generation since the last one reach a quarter of those it holds, every few
seconds under load. Nearly all of them are what poolwatch read (pools, volumes, their samples
and encoded lines), which live until they change. ``gc.freeze()`` takes every object tracked
now out of the collector's reach: a full pass then walks only what was made since (0.4-2 ms
there).

Frozen objects are still freed when nothing refers to them; only a reference cycle frozen while
in use outlives its last use, until ``gc.unfreeze()``. So the heap is frozen once started, and
after a volume poll (the read that makes most of those objects) at most once a minute,
collecting what is garbage first; once an hour it is unfrozen first, and that pass walks all.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

FREEZE_GAP = 60.0  # seconds between two freezes after polls, at least
THAW_EVERY = 3600.0  # seconds between two passes that walk every object, at least


class Heap:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._frozen_at: float | None = None  # the last freeze after a poll
        self._thawed_at = clock()

    def freeze(self) -> None:
        """Collect what is garbage now and take the rest out of the collector's reach: called
        once started (modules, the config, the server live as long as the process), then by
        ``polled``."""
        gc.collect()
        gc.freeze()

    def polled(self) -> None:
        """A volume poll ended: what it read lives until it changes. The first one frozen at
        once (the first full read of a host), the others at most once a minute."""
        now = self._clock()
        if self._frozen_at is not None and now - self._frozen_at < FREEZE_GAP:
            return
        self._frozen_at = now
        if now - self._thawed_at >= THAW_EVERY:
            gc.unfreeze()  # cycles frozen while in use are garbage by now: this pass frees them
            self._thawed_at = now
        self.freeze()
