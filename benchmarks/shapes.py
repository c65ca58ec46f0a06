"""The hosts the benchmarks measure: a shape (dir pools, volumes per pool) and the workload that
gives a private libvirtd that shape.

Volumes are sparse files made directly on disk, then one `refresh()` per pool (one call per pool,
not one per volume). Besides the dir pools the workload keeps one `fs` pool on a 64 MiB ext4 loop
device, so the `statvfs` and mount paths are measured too. A workload can be reshaped in place,
to more or fewer pools or volumes, so a run can measure one shape after another on the same
libvirtd.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
from tests.harness.commands import MiB
from tests.harness.loopdev import LoopDevice

POOLS = 50  # dir pools of the scales on the command line (--scales counts their volumes)
VOLUME_SIZE = 1 << 30  # sparse: no blocks are written
FS_POOL = "bench-fs"
EVENT_POOL = "bench-00"  # a dir pool with its full share of volumes


def pool_name(index: int) -> str:
    return f"bench-{index:02d}"


@dataclass(frozen=True)
class Shape:
    """A host to measure: `pools` dir pools holding `per_pool` volumes each."""

    pools: int
    per_pool: int

    @classmethod
    def of_total(cls, volumes: int, pools: int = POOLS) -> Shape:
        """`volumes` spread evenly over `pools` dir pools (a multiple of `pools`)."""
        if volumes % pools:
            raise ValueError(f"{volumes} volumes do not spread evenly over {pools} pools")
        return cls(pools, volumes // pools)

    @classmethod
    def parse(cls, text: str) -> Shape:
        """ "50x200": 50 dir pools of 200 volumes each."""
        pools, per_pool = text.lower().split("x")
        return cls(int(pools), int(per_pool))

    def __str__(self) -> str:
        return f"{self.pools}x{self.per_pool}"

    @property
    def volumes(self) -> int:
        """The dir pools' volumes; the fs pool's `lost+found` is not counted."""
        return self.pools * self.per_pool


class Workload:
    """Dir pools under `root` reshaped on demand, and one fs pool on a loop device."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop: LoopDevice | None = None
        self._volumes: dict[str, int] = {}  # dir pool name -> volume files in it
        self.shape = Shape(0, 0)

    def define(self, conn: Any) -> None:
        """The fs pool; dir pools come with the first `reshape`."""
        self.root.mkdir(exist_ok=True)
        self.loop = LoopDevice(64 * MiB)
        device = self.loop.attach()
        target = self.root / FS_POOL
        target.mkdir()
        conn.storagePoolDefineXML(
            f"<pool type='fs'><name>{FS_POOL}</name><source><device path='{device}'/>"
            f"<format type='ext4'/></source><target><path>{target}</path></target></pool>",
            0,
        ).create(0)

    def reshape(self, conn: Any, shape: Shape) -> float:
        """Give the host `shape`: define or remove dir pools, create or delete volume files,
        then refresh each pool whose files changed. Returns the seconds it took."""
        started = time.monotonic()
        for index in range(shape.pools, len(self._volumes)):
            self._remove_pool(conn, pool_name(index))
        for index in range(len(self._volumes), shape.pools):
            self._define_pool(conn, pool_name(index))
        for name, have in self._volumes.items():
            if have == shape.per_pool:
                continue
            directory = self.root / name
            for i in range(have, shape.per_pool):
                fd = os.open(directory / f"vol-{i:05d}.img", os.O_CREAT | os.O_WRONLY, 0o600)
                try:
                    os.ftruncate(fd, VOLUME_SIZE)
                finally:
                    os.close(fd)
            for i in range(shape.per_pool, have):
                (directory / f"vol-{i:05d}.img").unlink()
            conn.storagePoolLookupByName(name).refresh(0)
            self._volumes[name] = shape.per_pool
        self.shape = shape
        return time.monotonic() - started

    def fs_volumes(self, conn: Any) -> int:
        return int(conn.storagePoolLookupByName(FS_POOL).numOfVolumes())

    def remove(self, conn: Any) -> None:
        for name in [*self._volumes, FS_POOL]:
            with contextlib.suppress(libvirt.libvirtError):
                pool = conn.storagePoolLookupByName(name)
                with contextlib.suppress(libvirt.libvirtError):
                    pool.destroy()  # the fs pool: unmount before the loop device goes
                pool.undefine()
        self._volumes.clear()
        if self.loop is not None:
            self.loop.close()

    def _define_pool(self, conn: Any, name: str) -> None:
        path = self.root / name
        path.mkdir()
        xml = f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"
        conn.storagePoolDefineXML(xml, 0).create(0)
        self._volumes[name] = 0

    def _remove_pool(self, conn: Any, name: str) -> None:
        pool = conn.storagePoolLookupByName(name)
        pool.destroy()
        pool.undefine()
        shutil.rmtree(self.root / name)
        del self._volumes[name]
