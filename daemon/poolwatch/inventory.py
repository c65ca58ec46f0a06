"""The inventory: the one place that holds what poolwatch currently knows.

Watchers write into it (on the event loop thread only); the exporter, the HTTP API and the
policies read from it. Pool data is kept as immutable snapshots, replaced whole; counters and
histograms of poolwatch's own work live beside them. ``generation`` grows with every change so
readers can cache what they derive from it (the rendered /metrics page, for one).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from poolwatch.model import HostSnapshot, PoolEvent, PoolEventKind, PoolPolicy, PoolSnapshot

# Seconds; poll durations range from a single pool.info() to a volume scan of thousands.
POLL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Event counters of pools that were undefined are kept (so an "undefined" increment is visible)
# but bounded, so a host that churns through transient pools cannot grow memory forever.
MAX_COUNTED_POOLS = 1024


@dataclass
class Histogram:
    buckets: tuple[float, ...] = POLL_BUCKETS
    counts: list[int] = field(init=False)  # per bucket, not cumulative
    count: int = 0
    sum: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        self.count += 1
        self.sum += value


@dataclass
class ConnectionStats:
    """Monotonic counters of one connection, exported as counters and histograms."""

    connects: int = 0
    disconnects: int = 0
    poll_durations: dict[str, Histogram] = field(default_factory=dict)  # by poll kind
    poll_errors: dict[str, int] = field(default_factory=dict)  # by poll kind
    # pool name -> event kind -> count, oldest pool first
    pool_events: OrderedDict[str, dict[PoolEventKind, int]] = field(default_factory=OrderedDict)
    actions: dict[tuple[str, str, str], int] = field(default_factory=dict)  # pool, action, result
    autostart_attempts: dict[tuple[str, str], int] = field(default_factory=dict)  # pool, result


@dataclass(frozen=True, slots=True)
class Activity:
    """One line of /api/v1/events: a pool event or a change of a connection."""

    at: float
    host: str
    kind: str  # a PoolEventKind value, "connected" / "disconnected", or "action"
    pool: str | None = None
    detail: str = ""
    action: str | None = None  # for policy actions: what was done ...
    result: str | None = None  # ... and how it went: ok, failed, timeout, dropped, dry_run


class Inventory:
    def __init__(
        self, *, clock: Callable[[], float] = time.time, activity_history: int = 500
    ) -> None:
        self._clock = clock
        self._hosts: dict[str, HostSnapshot] = {}
        self._stats: dict[str, ConnectionStats] = {}
        self._policies: dict[str, dict[str, PoolPolicy]] = {}  # by connection key, pool name
        self._activity: deque[Activity] = deque(maxlen=activity_history)
        self._waiter: asyncio.Event | None = None
        self.generation = 0
        # poolwatch_config_last_reload_successful / _success_timestamp_seconds; loading the
        # config at start counts as a successful reload, as in Prometheus.
        self.last_reload_successful = True
        self.last_reload_success_at = clock()

    # -- reading ---------------------------------------------------------------------------

    @property
    def hosts(self) -> Mapping[str, HostSnapshot]:
        """Hosts by connection key (the connection's configured name, or its URI)."""
        return self._hosts

    def stats(self, key: str) -> ConnectionStats:
        return self._stats[key]

    def activity(self) -> list[Activity]:
        """Recent pool events and connection changes, newest last."""
        return list(self._activity)

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
        self._stats.setdefault(key, ConnectionStats())
        self._bump()

    def remove_host(self, key: str) -> None:
        self._hosts.pop(key, None)
        self._stats.pop(key, None)
        self._policies.pop(key, None)
        self._bump()

    def set_connected(self, key: str, *, name: str) -> None:
        host = self._hosts[key]
        self._hosts[key] = replace(host, name=name, up=True, connected_at=self._clock())
        self._stats[key].connects += 1
        self._activity.append(Activity(at=self._clock(), host=name, kind="connected"))
        self._bump()

    def set_disconnected(self, key: str, *, reason: str) -> None:
        host = self._hosts[key]
        if not host.up:
            return
        # The last snapshots stay: they are served with up=0 and an aging
        # poolwatch_last_poll_success_timestamp_seconds, as node_exporter serves stale textfiles.
        self._hosts[key] = replace(host, up=False)
        self._stats[key].disconnects += 1
        self._activity.append(
            Activity(at=self._clock(), host=host.name, kind="disconnected", detail=reason)
        )
        self._bump()

    def replace_pools(self, key: str, pools: Mapping[str, PoolSnapshot]) -> None:
        """A complete view of the host's pools: pools not in it are gone."""
        host = self._hosts[key]
        self._hosts[key] = replace(
            host, pools=dict(pools), last_poll_success=self._clock(), synced=True
        )
        self._bump()

    def put_pool(self, key: str, pool: PoolSnapshot) -> None:
        host = self._hosts[key]
        if host.pools.get(pool.name) == pool:
            return
        pools = dict(host.pools)
        pools[pool.name] = pool
        self._hosts[key] = replace(host, pools=pools)
        self._bump()

    def drop_pool(self, key: str, name: str) -> None:
        host = self._hosts[key]
        if name not in host.pools:
            return
        pools = dict(host.pools)
        del pools[name]
        self._hosts[key] = replace(host, pools=pools)
        self._bump()

    def record_pool_event(self, key: str, event: PoolEvent) -> None:
        """Count an event without moving the generation: the watcher re-reads (or drops) the
        pool right after, and that publishes both, so one event costs one /metrics render."""
        counts = self._stats[key].pool_events
        per_pool = counts.setdefault(event.pool, {})
        per_pool[event.kind] = per_pool.get(event.kind, 0) + 1
        counts.move_to_end(event.pool)
        while len(counts) > MAX_COUNTED_POOLS:
            counts.popitem(last=False)
        self._activity.append(
            Activity(at=event.at, host=event.host, kind=event.kind.value, pool=event.pool)
        )

    def record_poll(self, key: str, kind: str, seconds: float, *, ok: bool) -> None:
        stats = self._stats.get(key)
        if stats is None:  # the connection was removed by a reload while polling
            return
        stats.poll_durations.setdefault(kind, Histogram()).observe(seconds)
        if not ok:
            stats.poll_errors[kind] = stats.poll_errors.get(kind, 0) + 1
        self._bump()

    def set_policy(self, key: str, pool: str, policy: PoolPolicy | None) -> None:
        policies = self._policies.setdefault(key, {})
        if policies.get(pool) == policy:
            return
        if policy is None:
            del policies[pool]
        else:
            policies[pool] = policy
        self._bump()

    def record_action(
        self, key: str, pool: str, action: str, result: str, *, detail: str = ""
    ) -> None:
        """A policy action carried out (or skipped): counted and kept for /api/v1/events."""
        stats = self._stats.get(key)
        host = self._hosts.get(key)
        if stats is None or host is None:
            return
        counter = (pool, action, result)
        stats.actions[counter] = stats.actions.get(counter, 0) + 1
        if action == "start_pool" and result in ("ok", "failed"):
            attempt = (pool, result)
            stats.autostart_attempts[attempt] = stats.autostart_attempts.get(attempt, 0) + 1
        self._activity.append(
            Activity(
                at=self._clock(),
                host=host.name,
                kind="action",
                pool=pool,
                detail=detail,
                action=action,
                result=result,
            )
        )
        self._bump()

    def record_reload(self, *, ok: bool) -> None:
        self.last_reload_successful = ok
        if ok:
            self.last_reload_success_at = self._clock()
        self._bump()

    def _bump(self) -> None:
        self.generation += 1
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None
