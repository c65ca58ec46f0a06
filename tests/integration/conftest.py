"""Fixtures for the integration tier: a private real libvirtd and loop-device filesystems."""

from collections.abc import Callable, Iterator

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
