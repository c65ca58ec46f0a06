"""A pool's figures from statvfs by libvirt's formula (fastpath/space.py)."""

from __future__ import annotations

from poolwatch.fastpath.space import PoolSpace, TargetDevices, pool_space
from poolwatch.model import FilesystemStat


def test_the_formula_gives_what_libvirt_reported_after_a_refresh() -> None:
    # Recorded on a 64 MiB ext4 `fs` pool of libvirt 9.0 after 5 MiB written and a refresh:
    # stat -f said frsize=1024 blocks=56037 bfree=50903 bavail=46317, and `virsh pool-info
    # --bytes` Capacity 57381888, Allocation 5257216, Available 52124672.
    filesystem = FilesystemStat(
        avail_bytes=46317 * 1024, size_bytes=56037 * 1024, device="7:0", free_bytes=50903 * 1024
    )
    assert pool_space(filesystem) == PoolSpace(
        capacity=57381888, allocation=5257216, available=52124672
    )


def test_a_target_that_moved_to_another_filesystem_is_not_trusted_until_a_restart() -> None:
    devices = TargetDevices()
    assert devices.same("p", "uuid-1", "7:0")
    assert not devices.same("p", "uuid-1", "8:1")  # the mount under a dir pool vanished
    assert not devices.same("p", "uuid-1", "8:1")
    devices.forget("p")  # the pool stopped
    assert devices.same("p", "uuid-1", "8:1")
    assert devices.same("q", "uuid-2", "8:1")
