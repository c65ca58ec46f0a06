"""The interface between the watcher and a libvirt connection.

The libvirt adapter (``poolwatch.adapter``) implements ``StorageSource``; tests may implement it
in memory. Nothing here imports libvirt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from poolwatch.model import (
    GuestEventKind,
    GuestSnapshot,
    PoolEventKind,
    PoolState,
    VolumeScan,
    VolumeSnapshot,
)


class SourceUnavailable(Exception):
    """The connection is down, was lost during the call, or the call timed out."""


class PoolNotFound(Exception):
    """The pool is not (or no longer) defined."""


class GuestNotFound(Exception):
    """The guest (domain) is not, or no longer, defined."""


class SourceError(Exception):
    """libvirt refused one call; the connection itself is fine."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class PoolReading:
    """One pool as libvirt describes it right now (no volumes, no filesystem)."""

    name: str
    uuid: str
    type: str
    target_path: str
    source: str
    state: PoolState
    active: bool
    persistent: bool
    autostart: bool
    capacity: int
    allocation: int
    available: int
    volume_count: int | None  # numOfVolumes() of an active pool


@dataclass(frozen=True, slots=True)
class VolumeDescription:
    """One volume as libvirt describes it, with what is needed to follow its file on disk."""

    volume: VolumeSnapshot
    path: str  # the volume's target path ("" where libvirt gives none)
    format: str  # its target format type: raw, qcow2, dir, ...; "" where libvirt gives none


@dataclass(frozen=True, slots=True)
class Connected:
    hostname: str  # libvirt's hostname of the connected host


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str  # closed, keepalive, eof, call_timeout, error


@dataclass(frozen=True, slots=True)
class PoolChanged:
    """A storage pool event; the pool is re-read by the watcher."""

    pool: str
    uuid: str
    kind: PoolEventKind


@dataclass(frozen=True, slots=True)
class GuestChanged:
    """A domain lifecycle or device event; the guest is re-read by the watcher."""

    name: str
    uuid: str
    kind: GuestEventKind
    detail: str  # libvirt's detail in the operator's words: "ioerror", "user", "destroyed"


@dataclass(frozen=True, slots=True)
class GuestIOError:
    """QEMU hit an I/O error on a guest's disk (VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON)."""

    name: str
    uuid: str
    path: str  # the disk's source path as QEMU opened it
    alias: str  # the disk's device alias (virtio-disk0)
    action: str  # what QEMU did about it: "pause", "report", "ignore"
    reason: str  # "enospc", "eio", "eperm", "message" ...


SourceEvent = Connected | Disconnected | PoolChanged | GuestChanged | GuestIOError


class StorageSource(Protocol):
    """One libvirt connection, kept open (and reopened) by its implementation."""

    def listen(self, handler: Callable[[SourceEvent], None]) -> None:
        """From now on (called before ``start``), hand every connection change and pool event
        to ``handler``, on the event loop and in the order they happened, each as soon as the
        loop has it: no queue, no task between."""

    @property
    def read_only(self) -> bool: ...

    def events_on_the_way(self) -> bool:
        """Whether libvirt may have sent an event not handed to the listener yet: input that
        libvirt has not read, or an event it read and handed to the loop for its next turn."""

    async def start(self) -> None:
        """Begin connecting; returns at once. Connected goes to the listener."""

    async def close(self) -> None:
        """Stop reconnecting and close the connection."""

    async def list_pools(self) -> list[PoolReading]: ...

    async def read_pool(
        self, name: str, *, flags: tuple[bool, bool] | None = None, uuid: str | None = None
    ) -> PoolReading:
        """Raises PoolNotFound when the pool is gone. ``flags``: persistent and autostart as
        last read, when no event since can have changed them (spares asking again); ``uuid``:
        the pool's, where known, so a description of it not changed since can be used."""
        ...

    async def scan_volumes(self, name: str, *, limit: int) -> VolumeScan:
        """Every volume of an active pool; ``limit`` caps the volumes listed, not the sums."""
        ...

    async def list_volume_names(self, name: str) -> list[str]:
        """The names of an active pool's volumes: one call, whatever their number."""
        ...

    async def describe_volumes(
        self, name: str, volumes: Sequence[str] | None = None
    ) -> list[VolumeDescription]:
        """The named volumes of a pool (every one for None); names gone meanwhile are left out."""
        ...

    async def refresh_pool(self, name: str, *, urgent: bool = False) -> None:
        """``urgent``: ahead of queued routine calls (a change seen on disk, not a timer)."""

    async def start_flagged_pool(self, name: str) -> bool:
        """Start an inactive pool whose autostart flag libvirt still has set (checked in the
        same call: the flag sends no event); False, nothing done, when the flag is off. A pool
        that already runs counts as started."""
        ...

    async def set_autostart(self, name: str, *, enabled: bool) -> None: ...

    async def list_guests(self) -> list[GuestSnapshot]:
        """Every domain, running and defined, with its disks (``changed_at`` left 0)."""
        ...

    async def read_guest(self, uuid: str) -> GuestSnapshot:
        """Raises GuestNotFound when the domain is gone."""
        ...

    async def resume_guest(self, uuid: str) -> None:
        """Resume a paused domain (needs a read-write connection)."""

    async def destroy_guest(self, uuid: str) -> None:
        """Force a domain off, as ``virsh destroy`` (needs a read-write connection)."""
