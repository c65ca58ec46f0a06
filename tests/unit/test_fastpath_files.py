"""Volume figures from stat(), as libvirt computes them for file volumes (fastpath/files.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from poolwatch.fastpath.files import FileFacts, TrackedVolume, figures, stat_files, unseen_files
from poolwatch.model import VolumeSnapshot
from poolwatch.source import VolumeDescription


def tracked(fmt: str, facts: FileFacts | None, *, kind: int = 0) -> TrackedVolume:
    volume = VolumeSnapshot("v", kind, 10 * 2**30, 4096, 8192)
    return TrackedVolume(VolumeDescription(volume, "/p/v", fmt), facts)


def test_a_raw_file_is_its_own_capacity_and_physical_size() -> None:
    now = FileFacts(size=1 << 20, blocks=64, mtime_ns=5)
    assert figures(tracked("raw", None), now) == VolumeSnapshot("v", 0, 1 << 20, 64 * 512, 1 << 20)


def test_an_empty_file_has_no_physical_size_as_libvirt_leaves_it_out() -> None:
    now = FileFacts(size=0, blocks=0, mtime_ns=5)
    assert figures(tracked("raw", None), now) == VolumeSnapshot("v", 0, 0, 0, None)


def test_a_qcow2_keeps_libvirts_capacity_while_its_file_is_unchanged() -> None:
    then = FileFacts(size=8192, blocks=16, mtime_ns=5)
    now = FileFacts(size=8192, blocks=24, mtime_ns=5)  # blocks filled in, no header change
    assert figures(tracked("qcow2", then), now) == VolumeSnapshot(
        "v", 0, 10 * 2**30, 24 * 512, 8192
    )


@pytest.mark.parametrize(
    "now",
    [FileFacts(size=16384, blocks=16, mtime_ns=5), FileFacts(size=8192, blocks=16, mtime_ns=6)],
)
def test_a_qcow2_whose_size_or_mtime_moved_is_asked_of_libvirt(now: FileFacts) -> None:
    assert figures(tracked("qcow2", FileFacts(size=8192, blocks=16, mtime_ns=5)), now) is None


def test_other_volume_types_are_asked_of_libvirt_when_they_change() -> None:
    facts = FileFacts(size=4096, blocks=8, mtime_ns=5)
    assert figures(tracked("", facts, kind=2), facts) == VolumeSnapshot(
        "v", 2, 10 * 2**30, 4096, 8192
    )
    assert figures(tracked("", facts, kind=2), FileFacts(4096, 8, 6)) is None


def test_stat_files_reports_missing_files_and_raises_on_others(tmp_path: Path) -> None:
    present = tmp_path / "a"
    present.write_bytes(b"x" * 100)
    found = stat_files([str(present), str(tmp_path / "gone")])
    assert found[str(tmp_path / "gone")] is None
    assert found[str(present)] is not None
    assert found[str(present)].size == 100  # type: ignore[union-attr]
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(OSError, match="Too many levels"):
        stat_files([str(loop)])


def test_unseen_files_are_those_inotify_on_the_directory_misses(tmp_path: Path) -> None:
    target, elsewhere = tmp_path / "pool", tmp_path / "elsewhere"
    target.mkdir()
    elsewhere.mkdir()
    for name in ("plain.img", "linked.img"):
        (target / name).write_bytes(b"x")
    (elsewhere / "real.img").write_bytes(b"x")
    (target / "symlink.img").symlink_to(elsewhere / "real.img")
    os.link(target / "linked.img", elsewhere / "linked.img")
    (target / "sub").mkdir()
    paths = {n: str(target / n) for n in ("plain.img", "linked.img", "symlink.img", "sub")}
    paths["moved.img"] = str(elsewhere / "real.img")  # libvirt names a file elsewhere
    paths["gone.img"] = str(target / "gone.img")
    assert unseen_files(str(target) + "/", paths) == {
        "linked.img",
        "symlink.img",
        "sub",
        "moved.img",
        "gone.img",
    }
