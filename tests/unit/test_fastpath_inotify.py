"""What inotify tells about watched directories, as this kernel sends it (fastpath/inotify.py):
entries that come, go or move; every way a guest or a tool changes a volume's blocks or size; one
wake-up for a burst of writes; lost events said to be lost."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import mmap
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from poolwatch.fastpath.inotify import Batch, DirectoryChanges
from tests.helpers import unavailable

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


class Batches:
    """The batches handed over, to wait for."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Batch] = asyncio.Queue()

    async def next(self) -> Batch:
        return await asyncio.wait_for(self.queue.get(), 5)

    async def files_of(self, key: str) -> set[str]:
        """The names changed in the directory of ``key`` in the next batch that names it."""
        while True:
            batch = await self.next()
            if key in batch.files:
                return batch.files[key]


@pytest.fixture
def batches() -> Batches:
    return Batches()


async def test_files_that_come_go_or_move_name_their_directory(
    tmp_path: Path, batches: Batches
) -> None:
    changes = DirectoryChanges(batches.queue.put_nowait, pause=0.01)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        assert changes.watch("pool-a", str(tmp_path / "a"))
        assert changes.watch("pool-b", str(tmp_path / "b"))
        for act, keys in (
            (lambda: (tmp_path / "a" / "new.img").write_bytes(b"x"), {"pool-a"}),
            (
                lambda: (tmp_path / "a" / "new.img").rename(tmp_path / "b" / "new.img"),
                {"pool-a", "pool-b"},
            ),
            (lambda: (tmp_path / "b" / "new.img").unlink(), {"pool-b"}),
        ):
            act()
            found: set[str] = set()
            while found != keys:
                batch = await batches.next()
                found |= batch.entries
                assert found <= keys
                assert all(names == {"new.img"} for names in batch.files.values())
        changes.unwatch("pool-b")
        (tmp_path / "b" / "quiet.img").write_bytes(b"x")
        (tmp_path / "a" / "loud.img").write_bytes(b"x")
        assert (await batches.next()).entries == {"pool-a"}
    finally:
        changes.close()


async def test_a_directory_that_does_not_exist_is_not_watched(tmp_path: Path) -> None:
    changes = DirectoryChanges(lambda _batch: None)
    try:
        assert not changes.watch("pool", str(tmp_path / "missing"))
        assert changes.watched == frozenset()
    finally:
        changes.close()


def write(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(1 << 20)
        f.write(b"guest data")


def allocate(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, 8 << 20)
    finally:
        os.close(fd)


def truncate(path: Path) -> None:
    os.truncate(path, 32 << 20)


def punch_hole(path: Path) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    fd = os.open(path, os.O_RDWR)
    try:
        if libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 1 << 20) != 0:
            pytest.skip(f"this filesystem cannot punch holes: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def qemu_img_resize(path: Path) -> None:
    if shutil.which("qemu-img") is None:
        unavailable("qemu-img (qemu-utils) is needed to resize an image")
    subprocess.run(["qemu-img", "resize", "-q", "-f", "raw", str(path), "64M"], check=True)


def chmod(path: Path) -> None:
    path.chmod(0o600)


@pytest.mark.parametrize(
    "change",
    [write, allocate, truncate, punch_hole, qemu_img_resize, chmod],
    ids=lambda f: f.__name__,
)
async def test_every_way_a_volume_file_changes_names_the_file_and_no_entry(
    tmp_path: Path, batches: Batches, change: Callable[[Path], None]
) -> None:
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(4 << 20)
    fd = os.open(image, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, 2 << 20)  # blocks for a hole to punch
    finally:
        os.close(fd)
    changes = DirectoryChanges(batches.queue.put_nowait, pause=0.01)
    try:
        assert changes.watch("pool", str(tmp_path))
        await asyncio.to_thread(change, image)
        batch = await batches.next()
        assert batch.files == {"pool": {"disk.img"}}
        assert batch.entries == set()  # a changed file is not a reason to refresh the pool
    finally:
        changes.close()


async def test_a_write_through_a_shared_mapping_is_not_seen(
    tmp_path: Path, batches: Batches
) -> None:
    image = tmp_path / "mapped.img"
    image.write_bytes(bytes(1 << 20))
    with image.open("r+b") as f:
        mapping = mmap.mmap(f.fileno(), 0)
    changes = DirectoryChanges(batches.queue.put_nowait, pause=0.01)
    try:
        assert changes.watch("pool", str(tmp_path))
        mapping[4096:4106] = b"guest data"
        mapping.flush()
        (tmp_path / "marker").write_bytes(b"")  # something that is seen, to wait for
        batch = await batches.next()
        assert batch.files == {"pool": {"marker"}}
    finally:
        mapping.close()
        changes.close()


async def test_a_burst_of_writes_costs_one_wake_up(tmp_path: Path, batches: Batches) -> None:
    image = tmp_path / "busy.img"
    image.write_bytes(bytes(4096))
    changes = DirectoryChanges(batches.queue.put_nowait, pause=3600)
    try:
        assert changes.watch("pool", str(tmp_path))
        with image.open("r+b", buffering=0) as f:
            f.write(b"first")
            assert await batches.files_of("pool") == {"busy.img"}
            # Paused now: a guest writing on does not wake the reader, however long it writes.
            other = tmp_path / "other.img"
            other.write_bytes(b"")
            for n in range(50):
                f.write(b"more")
                await asyncio.sleep(0.005 if n % 10 == 0 else 0)
        assert batches.queue.empty()
        changes.catch_up()  # a poll wants everything so far: one batch with all of it
        batch = batches.queue.get_nowait()
        assert batch.files == {"pool": {"busy.img", "other.img"}}
        assert batch.entries == {"pool"}
        assert batches.queue.empty()
    finally:
        changes.close()


async def test_an_overflowing_queue_says_every_directory_lost_events(
    tmp_path: Path, batches: Batches
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    changes = DirectoryChanges(batches.queue.put_nowait, pause=3600)
    try:
        assert changes.watch("pool-a", str(tmp_path / "a"))
        assert changes.watch("pool-b", str(tmp_path / "b"))
        (tmp_path / "a" / "first").write_bytes(b"")
        await batches.next()
        overflow(tmp_path / "a")
        changes.catch_up()
        batch = batches.queue.get_nowait()
        assert batch.lost == {"pool-a", "pool-b"}
        assert batch.overflow  # files may have come or gone unseen
    finally:
        changes.close()


async def test_a_removed_directory_is_no_longer_watched(tmp_path: Path, batches: Batches) -> None:
    target = tmp_path / "pool"
    target.mkdir()
    changes = DirectoryChanges(batches.queue.put_nowait, pause=0.01)
    try:
        assert changes.watch("pool", str(target))
        target.rmdir()
        lost: set[str] = set()
        while not lost:
            lost = (await batches.next()).lost
        assert lost == {"pool"}
        assert changes.watched == frozenset()
    finally:
        changes.close()


def overflow(directory: Path) -> None:
    """More events in ``directory`` than the kernel queues: x and y written in turn, so that it
    merges no two of them."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    files = [os.open(directory / n, os.O_RDWR | os.O_CREAT) for n in ("x", "y")]
    try:
        for n in range(limit + 10):
            os.write(files[n % 2], b"z")
    finally:
        for fd in files:
            os.close(fd)
