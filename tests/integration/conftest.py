"""Fixtures for the integration tier: a private real libvirtd and loop-device filesystems."""

import os
from collections.abc import Callable, Iterator
from typing import NoReturn

import pytest

from tests.integration.libvirtd import (
    CommandError,
    Libvirtd,
    LibvirtdError,
    LoopDevice,
    MiB,
    prerequisites_problem,
    which,
)


def unavailable(reason: str) -> NoReturn:
    """In CI a component that cannot start is a failure; on a workstation a skip with the reason."""
    if os.environ.get("CI", "").lower() in {"true", "1", "yes"}:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[Libvirtd]:
    """A private libvirtd for the whole session; tests must leave it running and clean up pools."""
    problem = prerequisites_problem()
    if problem:
        unavailable(problem)
    daemon = Libvirtd()
    try:
        daemon.start()
    except LibvirtdError as exc:
        daemon.close()
        unavailable(f"cannot start a private libvirtd: {exc}")
    try:
        yield daemon
    finally:
        daemon.close()


def _loop_problem() -> str | None:
    if os.geteuid() != 0:
        return "loop devices need root"
    missing = [t for t in ("losetup", "mkfs.ext4") if not which(t)]
    if missing:
        return f"missing tools: {', '.join(missing)} (run scripts/bootstrap.sh)"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control: this kernel or container has no loop devices"
    return None


@pytest.fixture
def make_loop_fs() -> Iterator[Callable[..., str]]:
    """Factory: `make_loop_fs(size=64 * MiB, fstype="ext4")` returns a fresh /dev/loopN."""
    problem = _loop_problem()
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
