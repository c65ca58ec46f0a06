"""Telemetry: what poolwatch counts about its own work, and what it did lately.

Per connection: connects and disconnects, poll durations and errors, pool events and policy
actions; the activity log behind /api/v1/events; the outcome of the last configuration reload;
the HTTP connections the server closed itself.
Watchers, the actuator and the daemon write here (on the event loop thread only); the exporter
and the HTTP API read. What poolwatch knows about the pools themselves is the inventory's.

``changes`` grows with every change the exporter shows, as the inventory's ``generation`` does
for the pools: the /metrics page is cached until either moves.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from poolwatch.model import PoolEvent, PoolEventKind

# Seconds; poll durations range from a single pool.info() to a volume scan of thousands.
POLL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The counters of a pool that is gone (undefined, or a transient pool that stopped) stay this
# long after it went, so that increase(...{event="undefined"}[1h]) and alert windows up to an hour
# see the last increments; then its series go, or 1,000 pools churned through leave 4,000 series
# on /metrics forever.
GONE_POOL_RETENTION = 3600.0
# Per connection, at most this many pools have counters, the least recently active dropped
# first: a bound under any churn, however fast.
MAX_COUNTED_POOLS = 1024

# Why the HTTP server closed a connection itself (poolwatch.web.connections): to make room for a
# newer one, refused at the bound, or no complete request head in time.
HTTP_CLOSE_REASONS = ("limit", "refused", "timeout")


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
    # pool name -> event kind -> count, oldest pool first; a pool's mapping is replaced at each
    # event, never changed in place (the collector tells an unchanged one by identity)
    pool_events: OrderedDict[str, Mapping[PoolEventKind, int]] = field(default_factory=OrderedDict)
    actions: dict[tuple[str, str, str], int] = field(default_factory=dict)  # pool, action, result
    autostart_attempts: dict[tuple[str, str], int] = field(default_factory=dict)  # pool, result
    guest_io_errors: dict[tuple[str, str], int] = field(default_factory=dict)  # pool, reason
    # (pool, field) -> times the sweep found libvirt's value differing from the fast path's
    fastpath_corrections: dict[tuple[str, str], int] = field(default_factory=dict)
    # pool name -> when it went, oldest first: its counters go GONE_POOL_RETENTION later
    gone: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def forget_pool(self, pool: str) -> None:
        self.pool_events.pop(pool, None)
        self.gone.pop(pool, None)
        self.actions = {c: n for c, n in self.actions.items() if c[0] != pool}
        self.autostart_attempts = {c: n for c, n in self.autostart_attempts.items() if c[0] != pool}
        self.fastpath_corrections = {
            c: n for c, n in self.fastpath_corrections.items() if c[0] != pool
        }
        self.guest_io_errors = {c: n for c, n in self.guest_io_errors.items() if c[0] != pool}


@dataclass(frozen=True, slots=True)
class Activity:
    """One line of /api/v1/events: a pool event or a change of a connection."""

    at: float
    host: str
    kind: str  # a PoolEventKind or GuestEventKind value, "connected" / "disconnected", "action"
    pool: str | None = None
    detail: str = ""
    action: str | None = None  # for policy actions: what was done ...
    result: str | None = None  # ... and how it went: ok, failed, timeout, dropped, dry_run
    guest: str | None = None  # for guest events and guest actions: the guest's name


class Telemetry:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        activity_history: int = 500,
        gone_pool_retention: float = GONE_POOL_RETENTION,
    ) -> None:
        self._clock = clock
        self._retention = gone_pool_retention
        self._stats: dict[str, ConnectionStats] = {}
        # Connection key -> its host name as last told, for the lines of the activity log.
        self._names: dict[str, str] = {}
        self._activity: deque[Activity] = deque(maxlen=activity_history)
        self.changes = 0
        # poolwatch_config_last_reload_successful / _success_timestamp_seconds; loading the
        # config at start counts as a successful reload, as in Prometheus.
        self.last_reload_successful = True
        self.last_reload_success_at = clock()
        # The same for the web config file (TLS, users), None while there is none; its reloads
        # follow SIGHUP and changes of the file or the certificates it names.
        self.web_config_last_reload_successful: bool | None = None
        self.web_config_last_reload_success_at = 0.0
        self.http_connections_closed = dict.fromkeys(HTTP_CLOSE_REASONS, 0)

    # -- reading ---------------------------------------------------------------------------

    def stats(self, key: str) -> ConnectionStats:
        """The counters of a connection, by connection key; KeyError for an unknown one."""
        return self._stats[key]

    def activity(self) -> list[Activity]:
        """Recent pool events, connection changes and policy actions, newest last."""
        return list(self._activity)

    # -- writing (event loop thread only) --------------------------------------------------

    def add_connection(self, key: str, *, name: str) -> None:
        """Counters for a watched connection; those of a connection watched before stay."""
        self._stats.setdefault(key, ConnectionStats())
        self._names[key] = name
        self._changed()

    def remove_connection(self, key: str) -> None:
        self._stats.pop(key, None)
        self._names.pop(key, None)
        self._changed()

    def record_connect(self, key: str, *, name: str) -> None:
        self._stats[key].connects += 1
        self._names[key] = name
        self._activity.append(Activity(at=self._clock(), host=name, kind="connected"))
        self._changed()

    def record_disconnect(self, key: str, *, reason: str) -> None:
        self._stats[key].disconnects += 1
        self._activity.append(
            Activity(at=self._clock(), host=self._names[key], kind="disconnected", detail=reason)
        )
        self._changed()

    def record_pool_event(self, key: str, event: PoolEvent) -> None:
        """Count an event without moving ``changes``: the watcher re-reads (or drops) the pool
        right after, and that publishes both, so one event costs one /metrics render."""
        stats = self._stats[key]
        counts = stats.pool_events
        per_pool = counts.get(event.pool, {})
        counts[event.pool] = {**per_pool, event.kind: per_pool.get(event.kind, 0) + 1}
        counts.move_to_end(event.pool)
        if event.kind is PoolEventKind.UNDEFINED:
            stats.gone[event.pool] = self._clock()
            stats.gone.move_to_end(event.pool)
        else:
            stats.gone.pop(event.pool, None)  # defined again, or a transient pool started
        while len(counts) > MAX_COUNTED_POOLS:
            stats.forget_pool(next(iter(counts)))
        self._expire(stats)
        self._activity.append(
            Activity(at=event.at, host=event.host, kind=event.kind.value, pool=event.pool)
        )

    def record_guest_event(
        self, key: str, *, guest: str, pool: str | None, kind: str, detail: str
    ) -> None:
        """A guest paused or resumed, for /api/v1/events (once per pool it has disks in)."""
        if key not in self._stats:
            return
        self._activity.append(
            Activity(
                at=self._clock(),
                host=self._names[key],
                kind=kind,
                pool=pool,
                detail=detail,
                guest=guest,
            )
        )
        self._changed()

    def record_guest_io_error(self, key: str, *, pool: str, reason: str) -> None:
        """An I/O error QEMU reported on a guest's disk in ``pool`` ("" for no watched pool)."""
        stats = self._stats.get(key)
        if stats is None:
            return
        counter = (pool, reason)
        stats.guest_io_errors[counter] = stats.guest_io_errors.get(counter, 0) + 1
        self._changed()

    def record_pool_gone(self, key: str, pool: str) -> None:
        """A pool went without an "undefined" event (a transient pool stopped, or a poll found
        it missing): its counters go after the retention, like an undefined pool's."""
        stats = self._stats.get(key)
        if stats is not None and pool in stats.pool_events and pool not in stats.gone:
            stats.gone[pool] = self._clock()

    def record_poll(self, key: str, kind: str, seconds: float, *, ok: bool) -> None:
        stats = self._stats.get(key)
        if stats is None:  # the connection was removed by a reload while polling
            return
        # Polls run on every connection every few seconds: the gone pools' counters expire here.
        self._expire(stats)
        stats.poll_durations.setdefault(kind, Histogram()).observe(seconds)
        if not ok:
            stats.poll_errors[kind] = stats.poll_errors.get(kind, 0) + 1
        self._changed()

    def record_fastpath_correction(self, key: str, pool: str, field_name: str) -> None:
        stats = self._stats.get(key)
        if stats is None:
            return
        counts = stats.fastpath_corrections
        counts[(pool, field_name)] = counts.get((pool, field_name), 0) + 1
        self._changed()

    def record_action(
        self,
        key: str,
        pool: str,
        action: str,
        result: str,
        *,
        detail: str = "",
        guest: str | None = None,
    ) -> None:
        """A policy action carried out (or skipped): counted and kept for /api/v1/events."""
        stats = self._stats.get(key)
        if stats is None:  # the connection was removed meanwhile
            return
        counter = (pool, action, result)
        stats.actions[counter] = stats.actions.get(counter, 0) + 1
        if action == "start_pool" and result in ("ok", "failed"):
            attempt = (pool, result)
            stats.autostart_attempts[attempt] = stats.autostart_attempts.get(attempt, 0) + 1
        self._activity.append(
            Activity(
                at=self._clock(),
                host=self._names[key],
                kind="action",
                pool=pool,
                detail=detail,
                action=action,
                result=result,
                guest=guest,
            )
        )
        self._changed()

    def record_reload(self, *, ok: bool) -> None:
        self.last_reload_successful = ok
        if ok:
            self.last_reload_success_at = self._clock()
        self._changed()

    def record_http_connection_closed(self, reason: str) -> None:
        self.http_connections_closed[reason] = self.http_connections_closed.get(reason, 0) + 1
        self._changed()

    def record_web_config_reload(self, ok: bool) -> None:
        """The outcome of loading or reloading the web config file."""
        self.web_config_last_reload_successful = ok
        if ok:
            self.web_config_last_reload_success_at = self._clock()
        self._changed()

    def _expire(self, stats: ConnectionStats) -> None:
        cutoff = self._clock() - self._retention
        expired = False
        while stats.gone and next(iter(stats.gone.values())) <= cutoff:
            stats.forget_pool(next(iter(stats.gone)))
            expired = True
        if expired:
            self._changed()

    def _changed(self) -> None:
        self.changes += 1
