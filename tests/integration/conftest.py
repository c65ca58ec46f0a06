"""Fixtures for the integration tier: a private real libvirtd and loop-device filesystems."""

from collections.abc import Callable, Iterator

import pytest

from tests.helpers import private_libvirtd, unavailable
from tests.integration.libvirtd import CommandError, Libvirtd, LoopDevice, MiB, loop_problem


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[Libvirtd]:
    """A private libvirtd for the whole session; tests must leave it running and clean up pools."""
    with private_libvirtd() as daemon:
        yield daemon


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


@pytest.fixture
def loop_fs(request: pytest.FixtureRequest, make_loop_fs: Callable[..., str]) -> str:
    """An ext4 loop device (64 MiB, or `request.param` bytes with indirect parametrization)."""
    return make_loop_fs(getattr(request, "param", 64 * MiB))
