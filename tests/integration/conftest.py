"""Fixtures for the integration tier: a private real libvirtd, loop-device filesystems, pools that
are gone after the test (test_events_during_long_call has a `pools` of its own), half-full
filesystems for the threshold policies, and the running dir and fs pools of the daemon tests.
"""

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.commands import MiB
from tests.harness.libvirtd import Libvirtd
from tests.helpers import private_libvirtd
from tests.integration.daemon_helpers import Pool, remove_pool, unique


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
    """Mounts a 4 MiB tmpfs, half filled, on a directory: one in libvirtd's mount namespace and an
    identical one in this process's.

    The threshold tests need a pool that is already past "1%": they must not count on whatever
    holds tmp_path being that full (a tmpfs /tmp is all but empty). libvirtd measures the pool in
    its namespace, and poolwatch, running in this process, measures a `dir` pool's target itself
    (the local fast path): both must see the same filesystem, as they do on a host. The unmounts
    on the way out are lazy, as the pool may still be running.
    """
    mounted: list[Path] = []

    def mount(target: Path) -> None:
        target.mkdir(exist_ok=True)
        fill = target / "fill"
        for run in (libvirtd.nsenter, _here):
            run("mount", "-n", "-t", "tmpfs", "-o", "size=4m", "poolwatch-full", str(target))
            run("dd", "if=/dev/zero", f"of={fill}", "bs=1M", "count=2", "status=none")
        mounted.append(target)

    yield mount
    for target in mounted:
        libvirtd.nsenter("umount", "-n", "-l", str(target), check=False)
        _here("umount", "-n", "-l", str(target), check=False)


def _here(*argv: str, check: bool = True) -> None:
    subprocess.run(argv, check=check, capture_output=True)


@pytest.fixture
def dir_pool(libvirtd: Libvirtd, tmp_path: Path) -> Iterator[Pool]:
    """A persistent, running `dir` pool of its own."""
    name = unique("it-dir")
    target = tmp_path / name
    target.mkdir()
    libvirtd.virsh_xml(
        "pool-define",
        f"<pool type='dir'><name>{name}</name><target><path>{target}</path></target></pool>",
    )
    try:
        libvirtd.virsh("pool-start", name)
        yield Pool(name, "dir", target, "")
    finally:
        remove_pool(libvirtd, name)


@pytest.fixture
def fs_pool(libvirtd: Libvirtd, make_loop_fs: Callable[..., str], tmp_path: Path) -> Iterator[Pool]:
    """A persistent, running `fs` pool on a 64 MiB ext4 loop device (mounted in libvirtd's
    namespace only); destroyed (unmounted) before the loop device is detached."""
    device = make_loop_fs(64 * MiB)
    name = unique("it-fs")
    target = tmp_path / name
    target.mkdir()
    libvirtd.virsh_xml(
        "pool-define",
        f"""<pool type='fs'><name>{name}</name>
              <source><device path='{device}'/><format type='ext4'/></source>
              <target><path>{target}</path></target></pool>""",
    )
    try:
        libvirtd.virsh("pool-start", name)
        yield Pool(name, "fs", target, device)
    finally:
        remove_pool(libvirtd, name)
