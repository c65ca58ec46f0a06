"""The inventory: the one place that holds what poolwatch currently knows about the pools.

Watchers write into it (on the event loop thread only); the exporter, the HTTP API and the
policies read from it. Pool data is kept as immutable snapshots per host, replaced whole, beside
the policy status of each pool. ``generation`` grows with every change so readers can cache what
they derive from it (the rendered /metrics page, for one) and the actuator can wait for news.
What poolwatch counts about its own work is in :mod:`poolwatch.telemetry`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from poolwatch.model import (
    GuestSnapshot,
    HostSnapshot,
    PoolPolicy,
    PoolSnapshot,
    guests_by_pool,
)


class Inventory:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._hosts: dict[str, HostSnapshot] = {}
        self._policies: dict[str, dict[str, PoolPolicy]] = {}  # by connection key, pool name
        self._waiter: asyncio.Event | None = None
        self.generation = 0

    # -- reading ---------------------------------------------------------------------------

    @property
    def hosts(self) -> Mapping[str, HostSnapshot]:
        """Hosts by connection key (the connection's configured name, or its URI)."""
        return self._hosts

    def policies(self, key: str) -> Mapping[str, PoolPolicy]:
        """Policy status of the host's pools, by pool name: the forecast of every running pool,
        and what the threshold and autostart rules say where one applies."""
        return self._policies.get(key, {})

    def pool(self, key: str, name: str) -> PoolSnapshot | None:
        host = self._hosts.get(key)
        return None if host is None else host.pools.get(name)

    @property
    def ready(self) -> bool:
        """Every connection has completed one full poll."""
        return bool(self._hosts) and all(h.synced for h in self._hosts.values())

    async def wait_changed(self, generation: int) -> int:
        """Wait until the inventory moves past ``generation``; return the new generation."""
        while self.generation == generation:
            if self._waiter is None:
                self._waiter = asyncio.Event()
            await self._waiter.wait()
        return self.generation

    # -- writing (event loop thread only) --------------------------------------------------

    def add_host(self, key: str, *, name: str, uri: str) -> None:
        self._hosts[key] = HostSnapshot(name=name, uri=uri, up=False)
        self._bump()

    def remove_host(self, key: str) -> None:
        self._hosts.pop(key, None)
        self._policies.pop(key, None)
        self._bump()

    def set_connected(self, key: str, *, name: str) -> None:
        host = self._hosts[key]
        self._hosts[key] = replace(host, name=name, up=True, connected_at=self._clock())
        self._bump()

    def set_disconnected(self, key: str) -> bool:
        """Mark the host down; False when it already was (nothing changed)."""
        host = self._hosts[key]
        if not host.up:
            return False
        # The last snapshots stay: they are served with up=0 and an aging
        # poolwatch_last_poll_success_timestamp_seconds, as node_exporter serves stale textfiles.
        self._hosts[key] = replace(host, up=False)
        self._bump()
        return True

    def replace_pools(self, key: str, pools: Mapping[str, PoolSnapshot]) -> None:
        """A complete view of the host's pools: pools not in it are gone."""
        host = self._hosts[key]
        self._set(
            key,
            replace(host, pools=dict(pools), last_poll_success=self._clock(), synced=True),
            pools_changed=True,
        )

    def put_pool(self, key: str, pool: PoolSnapshot) -> None:
        host = self._hosts[key]
        if host.pools.get(pool.name) == pool:
            return
        pools = dict(host.pools)
        previous = pools.get(pool.name)
        pools[pool.name] = pool
        moved = previous is None or previous.target_path != pool.target_path
        self._set(key, replace(host, pools=pools), pools_changed=moved)

    def drop_pool(self, key: str, name: str) -> None:
        host = self._hosts[key]
        if name not in host.pools:
            return
        pools = dict(host.pools)
        del pools[name]
        self._set(key, replace(host, pools=pools), pools_changed=True)

    def replace_guests(self, key: str, guests: Mapping[str, GuestSnapshot]) -> None:
        """A complete view of the host's guests (by uuid): guests not in it are gone."""
        host = self._hosts[key]
        self._set(key, replace(host, guests=dict(guests), guests_synced=True), pools_changed=True)

    def put_guest(self, key: str, guest: GuestSnapshot) -> None:
        host = self._hosts[key]
        if host.guests.get(guest.uuid) == guest:
            return
        guests = dict(host.guests)
        guests[guest.uuid] = guest
        self._set(key, replace(host, guests=guests), pools_changed=True)

    def drop_guest(self, key: str, uuid: str) -> None:
        host = self._hosts[key]
        if uuid not in host.guests:
            return
        guests = dict(host.guests)
        del guests[uuid]
        self._set(key, replace(host, guests=guests), pools_changed=True)

    def set_policy(self, key: str, pool: str, policy: PoolPolicy | None) -> None:
        policies = self._policies.setdefault(key, {})
        if policies.get(pool) == policy:
            return
        if policy is None:
            del policies[pool]
        else:
            policies[pool] = policy
        self._bump()

    def _set(self, key: str, host: HostSnapshot, *, pools_changed: bool) -> None:
        """Store ``host``, with its pools' guests worked out again when the pools or guests
        changed in a way that can move a disk (a volume rescan cannot)."""
        if pools_changed:
            host = replace(host, pool_guests=guests_by_pool(host.pools, host.guests))
        self._hosts[key] = host
        self._bump()

    def _bump(self) -> None:
        self.generation += 1
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None
