"""What poolwatch freezes out of the garbage collector's reach, and that nothing stays there
for good (heap.py)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref

from poolwatch.heap import FREEZE_GAP, THAW_EVERY, Heap
from tests.unit.factories import FakeClock


class Node:
    """A reference cycle: freed by the collector only, never by reference counting."""

    def __init__(self) -> None:
        self.me = self


def test_a_poll_freezes_what_it_read_at_most_once_a_minute() -> None:
    clock = FakeClock(0.0)
    heap = Heap(clock)
    gc.unfreeze()
    heap.polled()  # the first full read: frozen at once
    frozen = gc.get_freeze_count()
    assert frozen > 0
    read = [Node() for _ in range(1000)]
    clock.now = FREEZE_GAP - 1
    heap.polled()
    assert gc.get_freeze_count() == frozen  # too soon
    clock.now = FREEZE_GAP
    heap.polled()
    assert gc.get_freeze_count() >= frozen + len(read)
    del read


def test_a_cycle_frozen_while_in_use_is_freed_by_the_hourly_pass() -> None:
    clock = FakeClock(0.0)
    heap = Heap(clock)
    node = Node()
    gone = weakref.ref(node)
    heap.polled()  # frozen while in use
    del node
    gc.collect()
    assert gone() is not None  # out of the collector's reach
    clock.now = FREEZE_GAP
    heap.polled()
    assert gone() is not None  # a freeze alone frees nothing of what was frozen
    clock.now = THAW_EVERY
    heap.polled()
    assert gone() is None


def test_garbage_is_collected_before_it_could_be_frozen() -> None:
    heap = Heap(FakeClock())
    node = Node()
    gone = weakref.ref(node)
    del node  # garbage already when the poll ends
    heap.polled()
    assert gone() is None


# A change shown to scrapers, 40 times: a page of /metrics and two copies of it (aiohttp's,
# behind the headers of two answers), freed once sent; the minor page faults of the last 20
# changes, per change; then how much of the memory they freed a freeze gives back to the
# kernel. In a process of its own: malloc's settings are the process's.
PAGES = r"""
import resource, sys
from poolwatch.heap import Heap, reuse_freed_blocks
if sys.argv[1] == "reuse":
    assert reuse_freed_blocks()

def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

for change in range(40):
    if change == 20:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [b"x" * (4 << 20) for _ in range(3)]
    del blocks
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
held = rss()
Heap().freeze()
print(faults, held - rss())
"""


def changes(mode: str) -> tuple[float, int]:
    """Page faults per change, and the KiB a freeze gave back after the last one, under
    glibc's defaults (no malloc tuning from the environment)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("MALLOC_") and name != "GLIBC_TUNABLES"
    }
    out = subprocess.run(
        [sys.executable, "-c", PAGES, mode], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return float(out[0]), int(out[1])


def test_large_blocks_freed_are_reused_without_faulting_their_pages_in_again() -> None:
    default, _ = changes("default")
    reused, given_back = changes("reuse")
    assert default >= 1024  # glibc gives them back: a 4 MiB block's pages (at least) anew
    assert reused < 64
    # What they left free at the heap's top (up to TRIM_THRESHOLD) goes back at a freeze.
    assert given_back >= 4 << 10
