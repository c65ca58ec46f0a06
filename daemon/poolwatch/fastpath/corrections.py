"""Where the fast path and libvirt disagree, field by field: what the sweep counts and logs."""

from __future__ import annotations

from dataclasses import dataclass

from poolwatch.fastpath.space import PoolSpace
from poolwatch.model import VolumeSnapshot


@dataclass(frozen=True, slots=True)
class Correction:
    """libvirt's value replaced the fast path's for one field of a pool or a volume."""

    pool: str
    field: str  # capacity, allocation, available, physical; volume_capacity, ... for volumes
    volume: str | None
    fast_path: int | None
    libvirt: int | None


def pool_corrections(pool: str, fast: PoolSpace, libvirt: PoolSpace) -> list[Correction]:
    return [
        Correction(pool, name, None, mine, theirs)
        for name, mine, theirs in (
            ("capacity", fast.capacity, libvirt.capacity),
            ("allocation", fast.allocation, libvirt.allocation),
            ("available", fast.available, libvirt.available),
        )
        if mine != theirs
    ]


def volume_corrections(
    pool: str, fast: VolumeSnapshot, libvirt: VolumeSnapshot
) -> list[Correction]:
    return [
        Correction(pool, f"volume_{name}", fast.name, mine, theirs)
        for name, mine, theirs in (
            ("capacity", fast.capacity, libvirt.capacity),
            ("allocation", fast.allocation, libvirt.allocation),
            ("physical", fast.physical, libvirt.physical),
        )
        if mine != theirs
    ]
