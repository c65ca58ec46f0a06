"""Fixtures for the integration tier: a private real libvirtd, loop-device filesystems, pools that
are gone after the test (test_events_during_long_call has a `pools` of its own) and half-full
filesystems for the threshold policies.
"""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.commands import MiB
from tests.harness.libvirtd import Libvirtd
from tests.helpers import private_libvirtd


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[Libvirtd]:
    """A private libvirtd for the whole session; tests must leave it running and clean up pools."""
    with private_libvirtd() as daemon:
        yield daemon


@pytest.fixture
def loop_fs(request: pytest.FixtureRequest, make_loop_fs: Callable[..., str]) -> str:
    """An ext4 loop device (64 MiB, or `request.param` bytes with indirect parametrization)."""
    return make_loop_fs(getattr(request, "param", 64 * MiB))


@pytest.fixture
def pools(libvirtd: Libvirtd) -> Iterator[list[str]]:
    """Names appended here are destroyed and undefined after the test, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        libvirtd.virsh("pool-destroy", name, check=False)
        libvirtd.virsh("pool-undefine", name, check=False)


@pytest.fixture
def half_full(libvirtd: Libvirtd) -> Iterator[Callable[[Path], None]]:
    """Mounts a 4 MiB tmpfs, half filled, on a directory in libvirtd's mount namespace.

    The threshold tests need a pool that is already past "1%": they must not count on whatever
    holds tmp_path being that full (a tmpfs /tmp is all but empty). Only libvirtd, which measures
    the pool, sees the mount; the unmount on the way out is lazy, as the pool may still be running.
    """
    mounted: list[Path] = []

    def mount(target: Path) -> None:
        target.mkdir(exist_ok=True)
        libvirtd.nsenter(
            "mount", "-n", "-t", "tmpfs", "-o", "size=4m", "poolwatch-full", str(target)
        )
        mounted.append(target)
        fill = target / "fill"
        libvirtd.nsenter("dd", "if=/dev/zero", f"of={fill}", "bs=1M", "count=2", "status=none")

    yield mount
    for target in mounted:
        libvirtd.nsenter("umount", "-n", "-l", str(target), check=False)
