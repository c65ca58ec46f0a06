"""The actuator's loop: evaluate the pools whenever the inventory changes, and act on it.

Whenever the inventory changes it feeds the snapshot of each pool that changed (every pool of a
host whose connection state changed) to the threshold and autostart policies, and every pool
every second, for ``for`` durations and backoff timers
(:mod:`~poolwatch.actuator.evaluation`), publishes their verdicts (levels, forecasts, autostart
state) back into the inventory for the exporter and the API, has what they decide carried out
(:mod:`~poolwatch.actuator.actions`), and keeps open alarm episodes across restarts
(:mod:`~poolwatch.actuator.episodes`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from poolwatch.actuator.actions import Actions
from poolwatch.actuator.context import Connection, PolicyState, PoolContext
from poolwatch.actuator.episodes import EpisodeStore, default_episodes_path
from poolwatch.actuator.evaluation import (
    autostart_actions,
    measure,
    near_limit,
    thresholds,
    verdict,
)
from poolwatch.actuator.guest_actions import GuestActions
from poolwatch.hooks import HookRunner
from poolwatch.inventory import Inventory
from poolwatch.model import HostSnapshot
from poolwatch.policies import autostart, resume
from poolwatch.policies.autostart import AutostartAction
from poolwatch.policies.rules import AutostartRule, Hook, ResumeRule, ThresholdRule, first_match
from poolwatch.policies.thresholds import ThresholdState
from poolwatch.telemetry import Telemetry

# Evaluate at least this often, for `for` durations and backoff timers ...
TICK = 1.0
# ... or, with no rule at all, this often: nothing waits on a timer, and what moves with time
# alone (the growth rate, the last hour's chart) moves no faster than the info poll. An idle
# host without rules then costs no evaluation of every pool every second.
RULELESS_TICK = 15.0
# ... and at most this often, however fast the inventory changes.
MIN_GAP = 0.05

# The autostart actions that call libvirt; the others are alarms, told to hooks.
_LIBVIRT_ACTIONS = (AutostartAction.START_POOL, AutostartAction.SET_AUTOSTART)


@dataclass(frozen=True, slots=True)
class PolicyRules:
    thresholds: tuple[ThresholdRule, ...] = ()
    autostart: tuple[AutostartRule, ...] = ()
    resume: tuple[ResumeRule, ...] = ()
    hooks: Mapping[str, Hook] = field(default_factory=dict)


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
        """``hooks``: the runner this actuator submits to, and hears the results from.
        ``episodes_path``: where open episodes persist; True (the default) for
        `default_episodes_path()`, None or False for nowhere."""
        self._inventory = inventory
        self._connections = connections
        self._rules = rules
        self._reloaded = asyncio.Event()
        self._hooks = hooks
        self._clock = clock
        self._states: dict[str, dict[str, PolicyState]] = {}
        # Per connection key: the host as last evaluated, and its pools near a limit then.
        self._evaluated: dict[str, HostSnapshot] = {}
        self._near: dict[str, set[str]] = {}
        self._booted: dict[str, float] = {}  # connection key -> connected_at already handled
        if episodes_path is True:
            episodes_path = default_episodes_path()
        self._episodes = EpisodeStore(episodes_path or None)
        self._actions = Actions(
            inventory=inventory,
            telemetry=telemetry,
            connections=connections,
            hooks=hooks,
            dry_run=dry_run,
            clock=clock,
            rng=rng or random.Random(),  # noqa: S311 - jitter, not cryptography
            state_of=self._state_of,
        )
        self._guest_actions = GuestActions(
            inventory=inventory,
            telemetry=telemetry,
            connections=connections,
            hooks=hooks,
            on_hook_result=self._actions.hook_finished,
            dry_run=dry_run,
            clock=clock,
            state_of=self._state_of,
        )

    def update_rules(self, rules: PolicyRules) -> None:
        """A reload: later evaluations use the new rules; the hooks get their new definitions."""
        self._rules = rules
        self._hooks.update(rules.hooks)
        self._reloaded.set()  # new rules are evaluated now, not at the end of a long tick

    async def run(self) -> None:
        generation = -1
        try:
            while True:
                rules = self._rules
                tick = (
                    TICK if rules.thresholds or rules.autostart or rules.resume else RULELESS_TICK
                )
                ticked = False
                try:
                    async with asyncio.timeout(tick):  # never wait_for: see LibvirtSource._call
                        await self._change_or_reload(generation)
                except TimeoutError:
                    ticked = True
                reloaded = self._reloaded.is_set()
                self._reloaded.clear()
                generation = self._inventory.generation
                # A change costs the pools it changed, not every pool: 2.4 ms at 500 pools, on
                # the loop, after every event otherwise.
                self.evaluate(changed_only=not (ticked or reloaded))
                await asyncio.sleep(MIN_GAP)
        finally:
            await self._actions.stop()
            await self._guest_actions.stop()

    async def _change_or_reload(self, generation: int) -> None:
        if self._reloaded.is_set():
            return
        changed = asyncio.ensure_future(self._inventory.wait_changed(generation))
        reloaded = asyncio.ensure_future(self._reloaded.wait())
        try:
            await asyncio.wait((changed, reloaded), return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            reloaded.cancel()

    def evaluate(self, *, changed_only: bool = False) -> None:
        """Evaluate every pool; ``changed_only``: only those whose snapshot or guests changed
        since the last evaluation, unless their host's connection state did."""
        now = self._clock()
        for key in list(self._states):
            if key not in self._inventory.hosts:
                del self._states[key]
                self._evaluated.pop(key, None)
                self._near.pop(key, None)
        for key, host in list(self._inventory.hosts.items()):
            last = self._evaluated.get(key) if changed_only else None
            self._evaluated[key] = host
            if last is host:
                continue
            since = last if _same_connection(last, host) else None
            self._evaluate_host(key, host, now, since=since)
        self._episodes.persist(self._states, self._inventory.hosts)

    def _state_of(self, key: str, pool: str) -> PolicyState | None:
        return self._states.get(key, {}).get(pool)

    def _evaluate_host(
        self, key: str, host: HostSnapshot, now: float, *, since: HostSnapshot | None
    ) -> None:
        """``since``: the host as last evaluated, whose unchanged pools are left as they were."""
        states = self._states.setdefault(key, {})
        near = self._near.setdefault(key, set())
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
        if host.synced:
            self._episodes.forget_gone(key, host)
        near.intersection_update(host.pools)
        for pool in host.pools.values():
            if (
                since is not None
                and since.pools.get(pool.name) is pool
                and since.pool_guests.get(pool.name) is host.pool_guests.get(pool.name)
            ):
                continue
            state = states.get(pool.name)
            if state is None:
                state = states[pool.name] = PolicyState()
                restored = self._episodes.restore(key, pool)
                if restored is not None:
                    state.threshold = restored
            if booted:
                state.autostart = autostart.on_connected(state.autostart)
            ctx = PoolContext(key=key, host=host, pool=pool, state=state, now=now)
            if self._evaluate_pool(ctx):
                near.add(pool.name)
            else:
                near.discard(pool.name)
        connection = self._connections(key)
        if connection is not None:
            connection.set_urgent(frozenset(near))

    def _evaluate_pool(self, ctx: PoolContext) -> bool:
        """Evaluate one pool, act, and publish; True if it is near a limit (refresh it sooner)."""
        state = ctx.state
        rule = first_match(self._rules.thresholds, ctx.pool.name, ctx.pool.type)
        if rule is None:
            state.threshold = ThresholdState()
        state.threshold_rule = rule
        measurement = measure(ctx)
        if rule is not None:
            transition = thresholds(ctx, rule, measurement)
            if transition is not None and transition.action is not None:
                self._actions.threshold_hooks(ctx, rule, transition, measurement)
        autostart_rule, actions = autostart_actions(ctx, self._rules.autostart)
        for action in actions:
            assert autostart_rule is not None  # only a rule decides actions
            if action in _LIBVIRT_ACTIONS:
                self._actions.carry_out(ctx, autostart_rule, action)
            else:
                self._actions.alarm(ctx, autostart_rule, action)
        guests = ctx.host.pool_guests.get(ctx.pool.name, ())
        for decision in resume.decide(
            self._rules.resume, ctx.pool, guests, state.resume, now=ctx.now
        ):
            self._guest_actions.handle(ctx, decision)
        near = near_limit(state.threshold_rule, state.threshold, measurement)
        self._inventory.set_policy(ctx.key, ctx.pool.name, verdict(state, measurement, ctx.now))
        return near


def _same_connection(last: HostSnapshot | None, host: HostSnapshot) -> bool:
    """Whether nothing but pools and guests changed: then only the changed pools need a look
    (boot mode, staleness and readiness follow the connection's fields)."""
    return last is not None and (
        last.up,
        last.connected_at,
        last.last_poll_success,
        last.synced,
        last.guests_synced,
    ) == (host.up, host.connected_at, host.last_poll_success, host.synced, host.guests_synced)
