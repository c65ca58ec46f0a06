"""Fixtures shared by the tiers that run real components (integration, reliability), and one
that every test gets."""

import gc
from collections.abc import Callable, Iterator

import pytest

from tests.harness.commands import CommandError, MiB
from tests.harness.loopdev import LoopDevice, loop_problem
from tests.helpers import unavailable


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """A daemon run in the test process freezes its heap after a poll (poolwatch/heap.py), as
    does test_heap.py: unfrozen after each test, so that nothing one test left stays out of the
    garbage collector's reach in the next ones."""
    yield
    gc.unfreeze()


@pytest.fixture
def make_loop_fs() -> Iterator[Callable[..., str]]:
    """Factory: `make_loop_fs(size=64 * MiB, fstype="ext4")` returns a fresh /dev/loopN."""
    problem = loop_problem()
    if problem:
        unavailable(problem)
    devices: list[LoopDevice] = []

    def make(size: int = 64 * MiB, fstype: str | None = "ext4") -> str:
        device = LoopDevice(size, fstype)
        devices.append(device)
        try:
            return device.attach()
        except CommandError as exc:
            unavailable(f"cannot set up a loop device: {exc}")

    try:
        yield make
    finally:
        for device in devices:
            device.close()
