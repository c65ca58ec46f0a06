"""Fast-path volume scans and the sweep's correction counting (fastpath/volumes.py)."""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from poolwatch.fastpath.volumes import VolumeFollower
from poolwatch.model import VolumeSnapshot
from poolwatch.source import VolumeDescription


class FakeLibvirt:
    """Describes the pool's files as libvirt 9.0 would, unless told a figure of its own."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.described: list[str] = []
        self.capacity: dict[str, int] = {}  # libvirt's own capacity for a volume, if set
        self.while_reading: Callable[[], None] = lambda: None

    async def list_volume_names(self, name: str) -> list[str]:
        return sorted(os.listdir(self.target))

    async def describe_volumes(
        self, name: str, volumes: Sequence[str] | None = None
    ) -> list[VolumeDescription]:
        self.while_reading()
        out = []
        for volume in volumes if volumes is not None else await self.list_volume_names(name):
            self.described.append(volume)
            st = os.stat(self.target / volume)
            capacity = self.capacity.get(volume, st.st_size)
            snapshot = VolumeSnapshot(volume, 0, capacity, st.st_blocks * 512, st.st_size or None)
            out.append(VolumeDescription(snapshot, str(self.target / volume), "raw"))
        return out


@pytest.fixture
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield pool


def follower(source: FakeLibvirt, executor: concurrent.futures.Executor) -> VolumeFollower:
    return VolumeFollower(source, executor, timeout=lambda: 5.0)  # type: ignore[arg-type]


async def scanned_pool(
    target: Path, executor: concurrent.futures.Executor
) -> tuple[FakeLibvirt, VolumeFollower]:
    """Pool "p" (uuid "u") with three 4 KiB raw volumes, scanned once."""
    for name in ("a.img", "b.img", "c.img"):
        (target / name).write_bytes(b"x" * 4096)
    source = FakeLibvirt(target)
    volumes = follower(source, executor)
    await volumes.scan("p", "u", str(target), limit=10)
    return source, volumes


async def test_libvirt_is_asked_only_about_new_volumes(
    tmp_path: Path, executor: concurrent.futures.Executor
) -> None:
    (tmp_path / "a.img").write_bytes(b"x" * 4096)
    source = FakeLibvirt(tmp_path)
    volumes = follower(source, executor)
    first = await volumes.scan("p", "u", str(tmp_path), limit=10)
    (tmp_path / "a.img").write_bytes(b"x" * 8192)
    (tmp_path / "b.img").write_bytes(b"y")
    second = await volumes.scan("p", "u", str(tmp_path), limit=10)
    assert source.described == ["a.img", "b.img"]
    assert (first.scan.count, second.scan.count) == (1, 2)
    assert second.scan.volumes[0].capacity == 8192  # from stat(): a raw file is its size


async def test_the_sweep_counts_where_libvirt_disagrees(
    tmp_path: Path, executor: concurrent.futures.Executor
) -> None:
    source, volumes = await scanned_pool(tmp_path, executor)
    source.capacity["a.img"] = 1  # libvirt sees something stat() cannot
    source.capacity["b.img"] = 2  # ... and so for b, but b is written while libvirt reads
    source.while_reading = lambda: (tmp_path / "b.img").write_bytes(b"z" * 9000)
    scan, corrections = await volumes.sweep("p", "u", str(tmp_path), limit=10)
    assert [(c.volume, c.field, c.fast_path, c.libvirt) for c in corrections] == [
        ("a.img", "volume_capacity", 4096, 1)
    ]
    assert scan.volumes[0].capacity == 1  # libvirt's value stands


async def test_a_restarted_pool_asks_libvirt_only_about_files_that_changed_while_it_was_down(
    tmp_path: Path, executor: concurrent.futures.Executor
) -> None:
    source, volumes = await scanned_pool(tmp_path, executor)
    volumes.pause("p")  # the pool stopped
    assert volumes.known("p", "u") is None  # its volumes must be listed again before a restat
    os.utime(tmp_path / "b.img", ns=(1, 1))  # b is another file now, as far as stat() can tell
    (tmp_path / "c.img").unlink()
    (tmp_path / "d.img").write_bytes(b"y")
    source.described.clear()
    again = await volumes.scan("p", "u", str(tmp_path), limit=10)
    assert source.described == ["b.img", "d.img"]
    assert [v.name for v in again.scan.volumes] == ["a.img", "b.img", "d.img"]
    assert volumes.known("p", "u") == 3
    # Another pool under the same name (a new UUID) is described afresh.
    volumes.pause("p")
    source.described.clear()
    await volumes.scan("p", "other", str(tmp_path), limit=10)
    assert source.described == ["a.img", "b.img", "d.img"]
