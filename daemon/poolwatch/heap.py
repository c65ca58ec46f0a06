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

The memory under those objects: glibc's malloc hands a freed block of more than 128 KiB back
to the kernel, and the next such block comes as fresh pages, each faulted in on its first
touch. poolwatch makes such blocks on every change a scrape shows (the page, 1.7 MB at
5 x 6,000 volumes, 3.4 MB at 50 x 200; aiohttp's copy of it behind the headers; the gzip
pieces), on the loop: 0.5-1 ms of faults per page. `reuse_freed_blocks` makes malloc keep
them for the next ones (measured at 50 x 200 under 10 scrapers, paired runs of 800
transitions: pool stop -> /metrics p50 / p99 4.83 / 9.63 -> 4.26 / 8.30 ms, start 5.39 / 10.10
-> 4.51 / 8.75; BENCHMARKS.md), and every freeze gives what is free back to the kernel
(``malloc_trim``): up to TRIM_THRESHOLD more stays resident after a burst of scrapes, until the
next freeze.
"""

from __future__ import annotations

import ctypes
import gc
import time
from collections.abc import Callable

FREEZE_GAP = 60.0  # seconds between two freezes after polls, at least
THAW_EVERY = 3600.0  # seconds between two passes that walk every object, at least

# mallopt(3) parameters, and the values set: blocks below MMAP_THRESHOLD come from the heap
# (32 MiB is the most glibc's own adaptive threshold reaches on 64-bit, where it starts from
# 128 KiB); up to TRIM_THRESHOLD free at the heap's top stays there, several pages' worth.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 16 << 20


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)  # the process's own symbols, libc's among them
    except OSError:
        return None


_LIBC = _libc()


def reuse_freed_blocks() -> bool:
    """Have malloc keep large freed blocks for the next ones (module docstring). False where
    the C library has no mallopt (not glibc): nothing changes there."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def _give_back_free_memory() -> None:
    malloc_trim = getattr(_LIBC, "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)


class Heap:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._frozen_at: float | None = None  # the last freeze after a poll
        self._thawed_at = clock()

    def freeze(self) -> None:
        """Collect what is garbage now and take the rest out of the collector's reach: called
        once started (modules, the config, the server live as long as the process), then by
        ``polled``. The memory that frees goes back to the kernel."""
        gc.collect()
        gc.freeze()
        _give_back_free_memory()

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
