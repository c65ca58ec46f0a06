"""The filesystem type of a pool's target, and whether inotify sees its writes
(fastpath/mounts.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolwatch.fastpath.mounts import filesystem_type, writes_seen

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 27 0:45 / /var/lib/libvirt/images rw,relatime shared:5 - nfs4 nas:/images rw,vers=4.2
31 27 0:46 / /srv/with\\040space rw,relatime - xfs /dev/sdb1 rw
32 31 0:47 / /srv/with\\040space/gluster rw - fuse.glusterfs gl:/vol rw
33 27 253:1 /var/vm /vm rw,relatime - ext4 /dev/vda1 rw
36 27 0:50 / /srv/bébé rw - cifs //srv/share rw
34 27 0:48 / /mnt/over rw - ext4 /dev/sdc1 rw
35 34 0:49 / /mnt/over rw - cifs //srv/share rw
"""


@pytest.fixture
def mountinfo(tmp_path: Path) -> str:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return str(path)


@pytest.mark.parametrize(
    ("device", "path", "expected"),
    [
        ("0:45", "/var/lib/libvirt/images", "nfs4"),  # by device
        ("253:1", "/vm/pool", "ext4"),  # a bind mount: same device
        ("9:9", "/var/lib/libvirt/images/sub", "nfs4"),  # unknown device: the mount above it
        ("9:9", "/srv/with space/gluster/p", "fuse.glusterfs"),  # escaped, and the deepest
        ("9:9", "/mnt/over", "cifs"),  # two mounts on one point: the one on top
        ("9:9", "/home/pools", "ext4"),
        ("9:9", "/srv/bébé/pool", "cifs"),  # a name in UTF-8, as the kernel writes it
    ],
)
def test_the_filesystem_of_a_target(mountinfo: str, device: str, path: str, expected: str) -> None:
    assert filesystem_type(device, path, mountinfo) == expected


def test_without_mountinfo_the_type_is_unknown(tmp_path: Path) -> None:
    assert filesystem_type("253:1", "/", str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    ("pool_type", "fstype", "seen"),
    [
        ("dir", "ext4", True),
        ("fs", "xfs", True),
        ("dir", "tmpfs", True),
        ("dir", "nfs4", False),
        ("dir", "cifs", False),
        ("dir", "ceph", False),
        ("dir", "fuse.sshfs", False),
        ("dir", "9p", False),
        ("dir", "gfs2", False),  # a disk shared with other hosts
        ("dir", None, False),  # unknown: never trusted
        ("netfs", "ext4", False),  # whatever the mount says, another host may write
    ],
)
def test_inotify_sees_every_write_only_on_local_filesystems(
    pool_type: str, fstype: str | None, seen: bool
) -> None:
    assert writes_seen(pool_type, fstype) is seen
