"""Fixtures shared by the tiers that run real components (integration, reliability)."""

from collections.abc import Callable, Iterator

import pytest

from tests.harness.commands import CommandError, MiB
from tests.harness.loopdev import LoopDevice, loop_problem
from tests.helpers import unavailable


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
