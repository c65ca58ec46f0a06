"""The guests of one connection: which domains there are, their state and their disks.

The watcher hands this tracker the domain events of its connection. Each lifecycle or device
event re-reads the one guest it names (coalesced per guest, as the watcher coalesces pool
re-reads); an I/O error event is counted at once against the pool of the disk that failed.
After every (re)connect :meth:`GuestTracker.resync` lists every guest again, because events
are lost while disconnected. Nothing here runs per poll or per scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

import structlog

from poolwatch.inventory import Inventory
from poolwatch.model import GuestDisk, GuestEventKind, GuestSnapshot, pool_of_disk
from poolwatch.source import (
    GuestChanged,
    GuestIOError,
    GuestNotFound,
    SourceError,
    SourceUnavailable,
    StorageSource,
)
from poolwatch.telemetry import Telemetry

log = structlog.get_logger()

# The guest events /api/v1/events lists: the ones that matter to a pool's space.
LOGGED_KINDS = (GuestEventKind.PAUSED, GuestEventKind.RESUMED)


class GuestTracker:
    def __init__(
        self,
        *,
        key: str,
        source: StorageSource,
        inventory: Inventory,
        telemetry: Telemetry,
        host_name: Callable[[], str],
        clock: Callable[[], float],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        pool_errored: Callable[[str], None],
    ) -> None:
        """``pool_errored(pool)``: a guest's write in the pool failed; its figures are stale."""
        self._pool_errored = pool_errored
        self._key = key
        self._source = source
        self._inventory = inventory
        self._telemetry = telemetry
        self._host_name = host_name
        self._clock = clock
        self._spawn = spawn
        self._seq = 0
        self._last_event: dict[str, int] = {}  # uuid -> seq of its last event
        self._reading: set[str] = set()
        self._dirty: set[str] = set()
        # Set when a reload removes the connection: a read still in flight finds its host gone
        # from the inventory (or another watcher's, under the same key) and is dropped.
        self._detached = False

    def detach(self) -> None:
        """From now on nothing of this tracker's reaches the inventory or the telemetry."""
        self._detached = True

    # -- events ----------------------------------------------------------------------------

    def on_changed(self, event: GuestChanged) -> None:
        self._seq += 1
        self._last_event[event.uuid] = self._seq
        host = self._host_name()
        log.info(
            "guest_event", host=host, guest=event.name, kind=event.kind.value, detail=event.detail
        )
        if event.kind in LOGGED_KINDS:
            pools: list[str | None] = [*self._pools_of(event.uuid)] or [None]
            for pool in pools:
                self._telemetry.record_guest_event(
                    self._key,
                    guest=event.name,
                    pool=pool,
                    kind=event.kind.value,
                    detail=event.detail,
                )
        if event.kind is GuestEventKind.UNDEFINED:
            self._inventory.drop_guest(self._key, event.uuid)
            return
        self._request_reread(event.uuid)

    def on_io_error(self, event: GuestIOError) -> None:
        """Counted against the pool of the failed disk: by its alias, else by its path."""
        pools = self._inventory.hosts[self._key].pools
        guest = self._inventory.hosts[self._key].guests.get(event.uuid)
        pool = None
        target = ""
        if guest is not None:
            for disk in guest.disks:
                if (event.alias and disk.alias == event.alias) or (
                    event.path and disk.path == event.path
                ):
                    pool, target = pool_of_disk(disk, pools), disk.target
                    break
        if pool is None and event.path:
            pool = pool_of_disk(GuestDisk(target="", path=event.path), pools)
        (log.warning if event.action == "pause" else log.info)(
            "guest_io_error",
            host=self._host_name(),
            guest=event.name,
            pool=pool,
            disk=target or event.alias,
            reason=event.reason,
            action=event.action,
        )
        self._telemetry.record_guest_io_error(self._key, pool=pool or "", reason=event.reason)
        if pool is not None:
            self._pool_errored(pool)
        if guest is not None and target and event.action == "pause":
            # The SUSPENDED event that follows re-reads the guest, and diskErrors() names the
            # disk too; keeping the reason now shows it even before that read is back.
            errors = {**guest.io_errors, target: event.reason}
            self._inventory.put_guest(self._key, replace(guest, io_errors=errors))

    # -- reading ---------------------------------------------------------------------------

    async def resync(self) -> None:
        """Every guest again, after a (re)connect: whatever is not listed is gone."""
        seq = self._seq
        listed = await self._source.list_guests()
        if self._detached:
            return
        current = self._inventory.hosts[self._key].guests
        guests: dict[str, GuestSnapshot] = {}
        for guest in listed:
            if self._last_event.get(guest.uuid, 0) > seq:
                continue  # an event's re-read knows better than this listing
            guests[guest.uuid] = self._stamped(guest, current.get(guest.uuid))
        for uuid, guest in current.items():
            if self._last_event.get(uuid, 0) > seq and uuid not in guests:
                guests[uuid] = guest
        self._inventory.replace_guests(self._key, guests)

    def _request_reread(self, uuid: str) -> None:
        if uuid in self._reading:
            self._dirty.add(uuid)
            return
        self._reading.add(uuid)
        self._spawn(self._reread(uuid))

    async def _reread(self, uuid: str) -> None:
        try:
            while True:
                await self._read_one(uuid)
                if uuid not in self._dirty:
                    return
                self._dirty.discard(uuid)
        except (SourceUnavailable, SourceError) as exc:
            # The next event, or the resync after a reconnect, reads it again.
            log.warning("guest_read_failed", host=self._host_name(), uuid=uuid, error=str(exc))
        finally:
            self._reading.discard(uuid)

    async def _read_one(self, uuid: str) -> None:
        try:
            guest = await self._source.read_guest(uuid)
        except GuestNotFound:
            if self._detached:
                return
            # Gone without an UNDEFINED event: a transient guest that stopped.
            self._inventory.drop_guest(self._key, uuid)
            return
        if self._detached:
            return
        previous = self._inventory.hosts[self._key].guests.get(uuid)
        self._inventory.put_guest(self._key, self._stamped(guest, previous))

    def _stamped(self, guest: GuestSnapshot, previous: GuestSnapshot | None) -> GuestSnapshot:
        if previous is not None and previous.state is guest.state:
            return replace(guest, changed_at=previous.changed_at)
        return replace(guest, changed_at=self._clock())

    def _pools_of(self, uuid: str) -> list[str]:
        host = self._inventory.hosts[self._key]
        guest = host.guests.get(uuid)
        if guest is None:
            return []
        pools = (pool_of_disk(disk, host.pools) for disk in guest.disks)
        return sorted({pool for pool in pools if pool is not None})
