"""What poolwatch freezes out of the garbage collector's reach, and that nothing stays there
for good (heap.py)."""

from __future__ import annotations

import gc
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
