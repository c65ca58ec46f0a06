"""Whether inotify sees every write to a pool's files: by the type of the filesystem they are on.

inotify reports what goes through this kernel's VFS. On a local disk filesystem that is every
write; on a network or shared filesystem (NFS, CIFS, ceph, GlusterFS and other FUSE filesystems,
9p, virtiofs, cluster filesystems on a shared disk such as GFS2 or OCFS2) another host, or the
other side of the mount, writes without this kernel knowing. Pools there keep the full restat on
every info poll.

The type comes from /proc/self/mountinfo, by the target's device number (``st_dev``, which
``FilesystemStat.device`` holds) and else by the longest mount point above the target: it names
the filesystem (statfs' ``f_type`` would need ctypes and a struct layout that differs between
architectures, and a table of magic numbers). A type not in ``LOCAL_FILESYSTEMS`` counts as not
seen: an unknown filesystem costs stat() calls, never a stale figure. Reading mountinfo never
blocks on a server, unlike statfs of a hung NFS mount, so this runs on the loop, once per pool
run.
"""

from __future__ import annotations

import os
import re

MOUNTINFO = "/proc/self/mountinfo"
_OCTAL = re.compile(r"\\([0-7]{3})")

# Disk and memory filesystems whose every change goes through this kernel.
LOCAL_FILESYSTEMS = frozenset(
    {
        "ext2",
        "ext3",
        "ext4",
        "xfs",
        "btrfs",
        "bcachefs",
        "zfs",
        "f2fs",
        "jfs",
        "reiserfs",
        "nilfs2",
        "tmpfs",
        "ramfs",
    }
)


def filesystem_type(device: str, path: str, mountinfo: str = MOUNTINFO) -> str | None:
    """The type of the filesystem on ``device`` ("major:minor") holding ``path``; None: unknown."""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    by_device: str | None = None
    by_path: tuple[int, str] | None = None
    # Not realpath(): it would stat each component, on the loop, and a dead NFS server hangs
    # that. libvirt keeps pool targets as absolute paths; the device match comes first anyway.
    where = os.path.normpath(path)
    for line in lines:
        fields = line.split(" ")
        try:
            separator = fields.index("-")
            fstype = fields[separator + 1]
            mount_point = _unescape(fields[4])
        except (ValueError, IndexError):
            continue
        if fields[2] == device:
            by_device = fstype  # the last one listed is the one on top
        inside = where == mount_point or where.startswith(mount_point.rstrip("/") + "/")
        if inside and (by_path is None or len(mount_point) >= by_path[0]):
            by_path = (len(mount_point), fstype)
    if by_device is not None:
        return by_device
    return None if by_path is None else by_path[1]


def writes_seen(pool_type: str, fstype: str | None) -> bool:
    """Whether inotify on this host sees every write to files of such a pool."""
    return pool_type != "netfs" and fstype in LOCAL_FILESYSTEMS


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in octal (\040 ...), all else as is.
    return _OCTAL.sub(lambda m: chr(int(m[1], 8)), field)
