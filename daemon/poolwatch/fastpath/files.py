"""Volume figures from stat() of each volume's file, as libvirt computes them for file volumes.

libvirt's figures for a volume in a file-based pool come from fstat() of the file
(virStorageSourceUpdateBackingSizes): allocation = st_blocks * 512, physical = st_size, and for
raw files capacity = st_size too. Other formats (qcow2, ...) take their capacity from the image
header, which only changes when the file does: those are asked of libvirt again when the file's
size or mtime moved. Functions here block: call them from a worker thread.

inotify on a pool's directory sees the writes to ``<target>/<name>`` itself, not those to a file
elsewhere that a symlink there points to, nor those through another hard link of the file:
``unseen_files`` finds those volumes, whose files are stat()ed at every info poll instead.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from poolwatch.model import VolumeSnapshot
from poolwatch.source import VolumeDescription

FILE_VOLUME = 0  # virStorageVolType VIR_STORAGE_VOL_FILE
BLOCK_SIZE = 512  # DEV_BSIZE: the unit of st_blocks


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What stat() says about a volume's file: what its figures and their freshness follow."""

    size: int
    blocks: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileFacts:
        return cls(st.st_size, st.st_blocks, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class TrackedVolume:
    """libvirt's last description of a volume, and its file as stat()ed just before it."""

    description: VolumeDescription
    facts: FileFacts | None  # None: the file could not be stat()ed then


def stat_files(paths: Iterable[str]) -> dict[str, FileFacts | None]:
    """stat() of each path; None for a file that is gone (ENOENT, ENOTDIR).

    Any other failure (EIO, ESTALE from a dead NFS server, EACCES) raises OSError: the pool's
    files cannot be trusted this round and libvirt is asked instead.
    """
    found: dict[str, FileFacts | None] = {}
    for path in paths:
        try:
            found[path] = FileFacts.of(os.stat(path))
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise
            found[path] = None
    return found


def figures(tracked: TrackedVolume, facts: FileFacts) -> VolumeSnapshot | None:
    """The volume's figures now, from its file; None where only libvirt can tell."""
    described = tracked.description
    volume = described.volume
    if volume.type != FILE_VOLUME:
        # Directories and the like: libvirt's description holds until the file changes.
        return volume if facts == tracked.facts else None
    physical = facts.size or None  # libvirt leaves a physical size of 0 out
    allocation = facts.blocks * BLOCK_SIZE
    if described.format == "raw":
        return VolumeSnapshot(volume.name, volume.type, facts.size, allocation, physical)
    previous = tracked.facts
    if previous is None or (previous.size, previous.mtime_ns) != (facts.size, facts.mtime_ns):
        return None  # the header (and so the capacity) may have changed
    return VolumeSnapshot(volume.name, volume.type, volume.capacity, allocation, physical)


def unseen_files(target: str, paths: dict[str, str]) -> frozenset[str]:
    """The volumes among ``paths`` (name -> path) whose writes inotify on ``target`` may miss:
    a path other than ``<target>/<name>``, a symlink, anything but a regular file with one link
    (a directory volume's contents change below the watched directory). A file that cannot be
    lstat()ed counts as unseen: a stat() too many, never a stale figure."""
    found = set()
    directory = os.path.normpath(target)
    for name, path in paths.items():
        if os.path.normpath(path) != os.path.join(directory, name):
            found.add(name)
            continue
        try:
            st = os.lstat(path)
        except OSError:
            found.add(name)
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            found.add(name)
    return frozenset(found)
