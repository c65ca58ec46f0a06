"""The actuator: runs the pure policies over the inventory and carries out what they decide.

Whenever the inventory changes (and every second, for ``for`` durations and backoff timers) it
feeds each pool's snapshot to the threshold and autostart policies, publishes their verdicts
(levels, forecasts, autostart state) back into the inventory for the exporter and the API, and
performs the actions: start a pool, set its autostart flag, run hooks. Every action is logged
as one ``policy_action`` event, counted in poolwatch_actions_total, kept for /api/v1/events,
and under ``--dry-run`` only logged.

Open threshold episodes survive a restart when systemd gives poolwatch a state directory
(``StateDirectory=`` sets ``$STATE_DIRECTORY``): each one (pool uuid -> connection, episode id,
level, actions already fired) is kept in ``episodes.json`` there, rewritten (temporary file and
rename, so never half written) whenever the set changes, and read back at start. A pool seen
again after a restart continues its episode, so a restart mid-alarm runs no second "warning"
hook and the eventual "recovery" carries the same episode id (the webhook idempotency key).
Without ``$STATE_DIRECTORY`` nothing is persisted and a restart starts every pool at ok.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import structlog

from poolwatch.hooks import HookEvent, HookResult, HookRunner
from poolwatch.inventory import Inventory
from poolwatch.model import HostSnapshot, PoolPolicy, PoolSnapshot
from poolwatch.policies import autostart
from poolwatch.policies.autostart import AutostartAction, AutostartState
from poolwatch.policies.forecast import UsageHistory
from poolwatch.policies.rules import (
    AutostartRule,
    FreeBelow,
    Hook,
    Level,
    ThresholdRule,
    UsedRatio,
    first_match,
)
from poolwatch.policies.thresholds import Measurement, ThresholdState, Transition, evaluate
from poolwatch.source import PoolNotFound, SourceError, SourceUnavailable, StorageSource
from poolwatch.telemetry import Telemetry
from poolwatch.web.api import pool_document

log = structlog.get_logger()

# Forecast history for pools without a threshold rule (the time-to-full gauge is for all).
DEFAULT_FORECAST_WINDOW = 6 * 3600.0
# Evaluate at least this often, for `for` durations and backoff timers ...
TICK = 1.0
# ... and at most this often, however fast the inventory changes.
MIN_GAP = 0.05
# A pool this close to its lowest limit is refreshed sooner (adaptive refresh).
NEAR_RATIO = 0.05
NEAR_FREE_FACTOR = 2
# Open episodes are kept here, under $STATE_DIRECTORY (the first one, if systemd gives several).
EPISODES_FILE = "episodes.json"
EPISODES_VERSION = 1


def default_episodes_path() -> Path | None:
    """Where open episodes persist: $STATE_DIRECTORY/episodes.json, or None (not persisted)."""
    directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(directory) / EPISODES_FILE if directory else None


class Connection(Protocol):
    """What the actuator needs of a watched connection."""

    @property
    def source(self) -> StorageSource: ...

    def reread(self, pool: str) -> None:
        """Read the pool again soon (libvirt sends no event for some changes)."""

    def set_urgent(self, pools: frozenset[str]) -> None:
        """Pools to refresh sooner than the refresh interval."""


@dataclass(frozen=True, slots=True)
class PolicyRules:
    thresholds: tuple[ThresholdRule, ...] = ()
    autostart: tuple[AutostartRule, ...] = ()
    hooks: Mapping[str, Hook] = field(default_factory=dict)


@dataclass
class _PoolState:
    threshold_rule: ThresholdRule | None = None
    threshold: ThresholdState = field(default_factory=ThresholdState)
    history: UsageHistory | None = None
    last_sample: float | None = None  # read_at of the last snapshot added to the history
    autostart_rule: AutostartRule | None = None
    autostart: AutostartState = field(default_factory=AutostartState)
    last_action: str | None = None
    last_action_at: float | None = None


class Actuator:
    def __init__(
        self,
        *,
        inventory: Inventory,
        telemetry: Telemetry,
        connections: Callable[[str], Connection | None],
        rules: PolicyRules,
        hooks: HookRunner,
        dry_run: bool,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        episodes_path: Path | bool | None = True,
    ) -> None:
        """``episodes_path``: where open episodes persist; True (the default) for
        `default_episodes_path()`, None or False for nowhere."""
        self._inventory = inventory
        self._telemetry = telemetry
        self._connections = connections
        self._rules = rules
        self._hooks = hooks
        self._dry_run = dry_run
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._states: dict[str, dict[str, _PoolState]] = {}
        self._booted: dict[str, float] = {}  # connection key -> connected_at already handled
        self._tasks: set[asyncio.Task[None]] = set()
        if episodes_path is True:
            episodes_path = default_episodes_path()
        self._episodes_path: Path | None = episodes_path or None
        # Restored episodes whose pool has not been seen yet: uuid -> persisted entry.
        self._restored: dict[str, dict[str, Any]] = _load_episodes(self._episodes_path)
        self._saved: dict[str, dict[str, Any]] = dict(self._restored)
        self._save_failed = False

    def update_rules(self, rules: PolicyRules) -> None:
        """A reload: later evaluations use the new rules; the hooks get their new definitions."""
        self._rules = rules
        self._hooks.update(rules.hooks)

    async def run(self) -> None:
        generation = -1
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK):  # never wait_for: see LibvirtSource._call
                        await self._inventory.wait_changed(generation)
                generation = self._inventory.generation
                self.evaluate()
                await asyncio.sleep(MIN_GAP)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- evaluation ------------------------------------------------------------------------

    def evaluate(self) -> None:
        now = self._clock()
        for key in list(self._states):
            if key not in self._inventory.hosts:
                del self._states[key]
        for key, host in list(self._inventory.hosts.items()):
            self._evaluate_host(key, host, now)
        self._persist_episodes()

    def _evaluate_host(self, key: str, host: HostSnapshot, now: float) -> None:
        states = self._states.setdefault(key, {})
        for name in set(states) - set(host.pools):
            del states[name]
            self._inventory.set_policy(key, name, None)
        if not host.up:
            return  # stale data: no new samples, and nothing could be carried out
        # Boot mode acts once per (re)connect, on the pools of the resync that followed it.
        connected_at = host.connected_at
        booted = (
            connected_at is not None
            and host.last_poll_success is not None
            and host.last_poll_success >= connected_at
            and self._booted.get(key) != connected_at
        )
        if booted and connected_at is not None:
            self._booted[key] = connected_at
        urgent = set()
        if host.synced and self._restored:
            # A full poll saw every pool: episodes of pools gone meanwhile end here.
            present = {pool.uuid for pool in host.pools.values()}
            for uuid in [u for u, e in self._restored.items() if e["connection"] == key]:
                if uuid not in present:
                    del self._restored[uuid]
        for pool in host.pools.values():
            state = states.get(pool.name)
            if state is None:
                state = states[pool.name] = _PoolState()
                self._restore(key, pool, state)
            if booted:
                state.autostart = autostart.on_connected(state.autostart)
            rule = first_match(self._rules.thresholds, pool.name, pool.type)
            if rule is None:
                state.threshold = ThresholdState()
            state.threshold_rule = rule
            measurement = self._measure(pool, state, now)
            if rule is not None:
                self._thresholds(host, pool, state, rule, measurement, now)
            self._autostart(key, host, pool, state, now)
            if _near_limit(state.threshold_rule, state.threshold, measurement):
                urgent.add(pool.name)
            self._inventory.set_policy(key, pool.name, _status(state, measurement, now))
        connection = self._connections(key)
        if connection is not None:
            connection.set_urgent(frozenset(urgent))

    # -- persisted episodes ----------------------------------------------------------------

    def _restore(self, key: str, pool: PoolSnapshot, state: _PoolState) -> None:
        """Continue the episode a previous run left open on this pool, if any."""
        entry = self._restored.pop(pool.uuid, None)
        if entry is None or entry["connection"] != key:
            return
        state.threshold = ThresholdState(
            level=Level(entry["level"]), episode=entry["episode"], fired=frozenset(entry["fired"])
        )
        log.info(
            "threshold_episode_restored",
            host=key,
            pool=pool.name,
            episode=entry["episode"],
            level=Level(entry["level"]).name.lower(),
        )

    def _open_episodes(self) -> dict[str, dict[str, Any]]:
        episodes = dict(self._restored)
        for key, states in self._states.items():
            host = self._inventory.hosts.get(key)
            if host is None:
                continue
            for name, state in states.items():
                pool = host.pools.get(name)
                threshold = state.threshold
                if pool is None or threshold.episode is None or not pool.uuid:
                    continue
                episodes[pool.uuid] = {
                    "connection": key,
                    "pool": name,
                    "episode": threshold.episode,
                    "level": int(threshold.level),
                    "fired": sorted(threshold.fired),
                }
        return episodes

    def _persist_episodes(self) -> None:
        if self._episodes_path is None:
            return
        episodes = self._open_episodes()
        if episodes == self._saved:
            return
        try:
            _write_atomically(
                self._episodes_path,
                json.dumps({"version": EPISODES_VERSION, "episodes": episodes}, indent=1),
            )
        except OSError as exc:
            if not self._save_failed:  # once, not on every evaluation
                log.warning("episodes_save_failed", path=str(self._episodes_path), error=str(exc))
            self._save_failed = True
            return
        self._saved, self._save_failed = episodes, False

    def _measure(self, pool: PoolSnapshot, state: _PoolState, now: float) -> Measurement | None:
        if not pool.active or pool.capacity <= 0:
            return None
        rule = state.threshold_rule
        window = rule.forecast_window if rule is not None else DEFAULT_FORECAST_WINDOW
        if state.history is None or state.history.window != window:
            state.history = UsageHistory(window)
            state.last_sample = None
        free = pool.free_bytes
        if state.last_sample != pool.read_at:
            state.history.add(pool.read_at, pool.capacity - free, pool.capacity)
            state.last_sample = pool.read_at
        return Measurement(
            capacity=pool.capacity, free=free, time_to_full=state.history.time_to_full(now, free)
        )

    def _thresholds(
        self,
        host: HostSnapshot,
        pool: PoolSnapshot,
        state: _PoolState,
        rule: ThresholdRule,
        measurement: Measurement | None,
        now: float,
    ) -> None:
        episode_id = f"{host.name}/{pool.name}/{int(now)}"
        state.threshold, transition = evaluate(
            rule, state.threshold, measurement, now=now, episode_id=episode_id
        )
        if transition is None:
            return
        (log.warning if transition.level > transition.previous else log.info)(
            "threshold_level_changed",
            host=host.name,
            pool=pool.name,
            level=Level(transition.level).name.lower(),
            previous_level=Level(transition.previous).name.lower(),
            episode=transition.episode,
            used_ratio=None if measurement is None else round(measurement.used_ratio, 4),
        )
        if transition.action is not None:
            event = _threshold_event(host, pool, transition, measurement)
            self._run_hooks(rule.hooks, event, state, now)

    def _autostart(
        self, key: str, host: HostSnapshot, pool: PoolSnapshot, state: _PoolState, now: float
    ) -> None:
        rule = first_match(self._rules.autostart, pool.name, pool.type)
        if rule != state.autostart_rule:
            # A new or changed rule starts from scratch: a give-up ends "until the rule changes".
            state.autostart_rule, state.autostart = rule, AutostartState()
            if rule is not None and host.connected_at is not None:
                state.autostart = autostart.on_connected(state.autostart)
        if rule is None:
            return
        state.autostart, actions = autostart.decide(rule, pool, state.autostart, now=now)
        for action in actions:
            if action in (AutostartAction.START_POOL, AutostartAction.SET_AUTOSTART):
                self._carry_out(key, host, pool, state, rule, action, now)
            else:
                self._alarm(key, host, pool, state, rule, action, now)

    # -- carrying out ----------------------------------------------------------------------

    def _carry_out(
        self,
        key: str,
        host: HostSnapshot,
        pool: PoolSnapshot,
        state: _PoolState,
        rule: AutostartRule,
        action: AutostartAction,
        now: float,
    ) -> None:
        if self._dry_run:
            log.info(
                "policy_action",
                host=host.name,
                pool=pool.name,
                action=action.value,
                result="dry_run",
            )
            self._record(key, pool.name, state, action.value, "dry_run", "", now)
            # Nothing changes in libvirt, so the same decision comes back at once: say it again
            # only after the longest backoff, not on every evaluation.
            state.autostart = replace(
                state.autostart,
                in_flight=False,
                next_attempt_at=now + rule.backoff_max,
                flag_attempt_at=now + rule.backoff_max,
            )
            return
        connection = self._connections(key)
        if connection is None:
            state.autostart = replace(state.autostart, in_flight=False)
            return
        self._spawn(self._perform(key, connection, pool, rule, action))

    async def _perform(
        self,
        key: str,
        connection: Connection,
        pool: PoolSnapshot,
        rule: AutostartRule,
        action: AutostartAction,
    ) -> None:
        error = None
        try:
            if action is AutostartAction.START_POOL:
                await connection.source.start_pool(pool.name)
            else:
                await connection.source.set_autostart(pool.name, enabled=True)
        except (SourceError, SourceUnavailable, PoolNotFound) as exc:
            error = str(exc) or type(exc).__name__
        now = self._clock()
        result = "ok" if error is None else "failed"
        host = self._inventory.hosts.get(key)
        host_name = host.name if host is not None else key
        (log.info if error is None else log.warning)(
            "policy_action",
            host=host_name,
            pool=pool.name,
            action=action.value,
            result=result,
            error=error,
        )
        state = self._states.get(key, {}).get(pool.name)
        if state is None or state.autostart_rule != rule:
            return  # the pool or its rule went away meanwhile
        self._record(key, pool.name, state, action.value, result, error or "", now)
        # A flag change sends no event, and a start's event may be lost in a reconnect.
        connection.reread(pool.name)
        if action is AutostartAction.SET_AUTOSTART:
            state.autostart = autostart.flag_finished(state.autostart)
            return
        state.autostart, follow_up = autostart.start_finished(
            rule,
            state.autostart,
            ok=error is None,
            error=error,
            now=now,
            jitter=self._rng.uniform(0.5, 1.0),
        )
        if follow_up and host is not None:
            current = self._inventory.pool(key, pool.name) or pool
            for alarm in follow_up:
                self._alarm(key, host, current, state, rule, alarm, now)

    def _alarm(
        self,
        key: str,
        host: HostSnapshot,
        pool: PoolSnapshot,
        state: _PoolState,
        rule: AutostartRule,
        action: AutostartAction,
        now: float,
    ) -> None:
        level = action.value
        previous = {"not_mounted": "mounted", "mounted": "not_mounted"}.get(level, "retrying")
        (log.info if action is AutostartAction.MOUNTED else log.warning)(
            "autostart_alarm",
            host=host.name,
            pool=pool.name,
            alarm=level,
            target=pool.target_path,
            failures=state.autostart.failures,
            last_error=state.autostart.last_error,
        )
        event = HookEvent(
            action=level,
            host=host.name,
            pool=pool.name,
            pool_uuid=pool.uuid,
            level=level,
            previous_level=previous,
            used_ratio=None,
            available_bytes=pool.free_bytes if pool.active else None,
            time_to_full_seconds=None,
            episode=f"{host.name}/{pool.name}/{level}/{int(now)}",
            snapshot=pool_document(pool, with_volumes=False),
        )
        self._run_hooks(rule.hooks, event, state, now)

    def _run_hooks(
        self, names: tuple[str, ...], event: HookEvent, state: _PoolState, now: float
    ) -> None:
        for name in names:
            state.last_action, state.last_action_at = f"hook:{name} {event.action}", now
            self._hooks.submit(name, event)

    def hook_finished(self, name: str, event: HookEvent, result: HookResult) -> None:
        """HookRunner's on_result: count and keep the final result of one hook run."""
        key = next((k for k, h in self._inventory.hosts.items() if h.name == event.host), "")
        state = self._states.get(key, {}).get(event.pool)
        now = self._clock()
        if state is not None:
            state.last_action, state.last_action_at = f"hook:{name} {event.action} {result}", now
        self._telemetry.record_action(key, event.pool, f"hook:{name}", result, detail=event.action)

    def _record(
        self,
        key: str,
        pool: str,
        state: _PoolState,
        action: str,
        result: str,
        detail: str,
        now: float,
    ) -> None:
        state.last_action, state.last_action_at = f"{action} {result}", now
        self._telemetry.record_action(key, pool, action, result, detail=detail)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _load_episodes(path: Path | None) -> dict[str, dict[str, Any]]:
    """The open episodes a previous run saved; empty when there are none or they are unusable."""
    if path is None:
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("episodes_load_failed", path=str(path), error=str(exc))
        return {}
    episodes: dict[str, dict[str, Any]] = {}
    raw = document.get("episodes") if isinstance(document, dict) else None
    if not isinstance(raw, dict) or document.get("version") != EPISODES_VERSION:
        log.warning("episodes_load_failed", path=str(path), error="unknown format")
        return {}
    for uuid, entry in raw.items():
        try:
            episodes[str(uuid)] = {
                "connection": str(entry["connection"]),
                "pool": str(entry["pool"]),
                "episode": str(entry["episode"]),
                "level": int(Level(int(entry["level"]))),
                "fired": sorted(str(action) for action in entry["fired"]),
            }
        except (KeyError, TypeError, ValueError):
            log.warning("episodes_entry_skipped", path=str(path), pool_uuid=str(uuid))
    return episodes


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path`` and rename it over ``path``."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _threshold_event(
    host: HostSnapshot, pool: PoolSnapshot, transition: Transition, measurement: Measurement | None
) -> HookEvent:
    assert transition.action is not None
    return HookEvent(
        action=transition.action,
        host=host.name,
        pool=pool.name,
        pool_uuid=pool.uuid,
        level=Level(transition.level).name.lower(),
        previous_level=Level(transition.previous).name.lower(),
        used_ratio=None if measurement is None else measurement.used_ratio,
        available_bytes=None if measurement is None else measurement.free,
        time_to_full_seconds=None if measurement is None else measurement.time_to_full,
        episode=transition.episode,
        snapshot=pool_document(pool, with_volumes=False),
    )


def _near_limit(
    rule: ThresholdRule | None, state: ThresholdState, measurement: Measurement | None
) -> bool:
    """Close enough to a limit that waiting for the next scheduled refresh is too long."""
    if rule is None or measurement is None:
        return False
    if state.level != Level.OK or state.pending is not None:
        return True
    for limit in (rule.warning, rule.critical):
        if isinstance(limit, UsedRatio) and measurement.used_ratio >= limit.ratio - NEAR_RATIO:
            return True
        if isinstance(limit, FreeBelow) and measurement.free < limit.bytes * NEAR_FREE_FACTOR:
            return True
    ttf_limit = rule.time_to_full_warning or rule.time_to_full_critical
    ttf = measurement.time_to_full
    return ttf_limit is not None and ttf is not None and ttf < ttf_limit * NEAR_FREE_FACTOR


def _status(state: _PoolState, measurement: Measurement | None, now: float) -> PoolPolicy:
    history = state.history
    rule = state.autostart_rule
    auto = state.autostart
    return PoolPolicy(
        level=None if state.threshold_rule is None else int(state.threshold.level),
        episode=state.threshold.episode,
        time_to_full=None if measurement is None else measurement.time_to_full,
        growth_rate=None if history is None or measurement is None else history.growth_rate(now),
        autostart_mode=None if rule is None else rule.mode.value,
        autostart_failures=auto.failures,
        autostart_gave_up=auto.gave_up,
        next_attempt_at=auto.next_attempt_at if auto.failures else None,
        last_error=auto.last_error,
        not_mounted=auto.not_mounted if rule is not None and rule.require_mount else None,
        last_action=state.last_action,
        last_action_at=state.last_action_at,
    )
