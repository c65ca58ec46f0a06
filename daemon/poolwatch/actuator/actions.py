"""Carrying out what the policies decided: start a pool, set its autostart flag, run hooks.

Every action is logged as one ``policy_action`` event, counted in poolwatch_actions_total, kept
for /api/v1/events, and under ``--dry-run`` only logged. libvirt calls run as tasks of their own,
so a slow libvirt never holds up an evaluation; hooks go to the hook runner, which writes each
run's ``policy_action`` log event itself (only it knows exit code, duration and output) and tells
the result back here (``hook_finished``) to be counted and kept.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import structlog

from poolwatch.actuator.context import Connection, PolicyState, PoolContext
from poolwatch.actuator.episodes import alarm_episode_id
from poolwatch.documents import hook_snapshot
from poolwatch.hooks import HookEvent, HookResult, HookRunner
from poolwatch.inventory import Inventory
from poolwatch.policies import autostart
from poolwatch.policies.autostart import AutostartAction
from poolwatch.policies.rules import AutostartRule, Level, ThresholdRule
from poolwatch.policies.thresholds import Measurement, Transition
from poolwatch.source import PoolNotFound, SourceError, SourceUnavailable
from poolwatch.tasks import TaskSet
from poolwatch.telemetry import Telemetry

log = structlog.get_logger()

# The alarm an autostart alarm ends: what its hooks get as previous_level.
_PREVIOUS_ALARM = {"not_mounted": "mounted", "mounted": "not_mounted"}


class Actions:
    """Carries out the actuator's decisions and records each one on the pool and in telemetry."""

    def __init__(
        self,
        *,
        inventory: Inventory,
        telemetry: Telemetry,
        connections: Callable[[str], Connection | None],
        hooks: HookRunner,
        dry_run: bool,
        clock: Callable[[], float],
        rng: random.Random,
        state_of: Callable[[str, str], PolicyState | None],
    ) -> None:
        """``state_of(key, pool)``: the pool's current state, for results that arrive later."""
        self._inventory = inventory
        self._telemetry = telemetry
        self._connections = connections
        self._hooks = hooks
        self._dry_run = dry_run
        self._clock = clock
        self._rng = rng
        self._state_of = state_of
        self._tasks = TaskSet()

    async def stop(self) -> None:
        """Cancel the libvirt calls still under way."""
        await self._tasks.close()

    # -- libvirt ---------------------------------------------------------------------------

    def carry_out(self, ctx: PoolContext, rule: AutostartRule, action: AutostartAction) -> None:
        """START_POOL or SET_AUTOSTART: call libvirt in the background, or under --dry-run
        only say so."""
        if self._dry_run:
            log.info(
                "policy_action",
                host=ctx.host.name,
                pool=ctx.pool.name,
                action=action.value,
                result="dry_run",
            )
            self._record(ctx, action.value, "dry_run", "")
            # Nothing changes in libvirt, so the same decision comes back at once: say it again
            # only after the longest backoff, not on every evaluation.
            ctx.state.autostart = replace(
                ctx.state.autostart,
                in_flight=False,
                next_attempt_at=ctx.now + rule.backoff_max,
                flag_attempt_at=ctx.now + rule.backoff_max,
            )
            return
        connection = self._connections(ctx.key)
        if connection is None:
            ctx.state.autostart = replace(ctx.state.autostart, in_flight=False)
            return
        self._tasks.spawn(self._perform(ctx, connection, rule, action))

    async def _perform(
        self,
        ctx: PoolContext,
        connection: Connection,
        rule: AutostartRule,
        action: AutostartAction,
    ) -> None:
        pool = ctx.pool
        error = None
        declined = False
        try:
            if action is AutostartAction.START_POOL:
                declined = not await connection.source.start_flagged_pool(pool.name)
            else:
                await connection.source.set_autostart(pool.name, enabled=True)
        except (SourceError, SourceUnavailable, PoolNotFound) as exc:
            error = str(exc) or type(exc).__name__
        now = self._clock()
        result = "ok" if error is None else "failed"
        host = self._inventory.hosts.get(ctx.key)
        host_name = host.name if host is not None else ctx.key
        if declined:
            # The flag was disabled after poolwatch last read the pool (the stop's event came
            # first): the operator keeps it down. Not an attempt; nothing to count.
            log.info("autostart_declined", host=host_name, pool=pool.name, reason="flag_off")
        else:
            (log.info if error is None else log.warning)(
                "policy_action",
                host=host_name,
                pool=pool.name,
                action=action.value,
                result=result,
                error=error,
            )
        state = self._state_of(ctx.key, pool.name)
        if state is None or state.autostart_rule != rule:
            return  # the pool or its rule went away meanwhile
        # A flag change sends no event, and a start's event may be lost in a reconnect.
        connection.reread(pool.name)
        if declined:
            state.autostart = autostart.start_declined(state.autostart, now)
            return
        after = replace(ctx, state=state, now=now)
        self._record(after, action.value, result, error or "")
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
            current = self._inventory.pool(ctx.key, pool.name) or pool
            for alarm in follow_up:
                self.alarm(replace(after, host=host, pool=current), rule, alarm)

    # -- hooks -----------------------------------------------------------------------------

    def threshold_hooks(
        self, ctx: PoolContext, rule: ThresholdRule, transition: Transition, m: Measurement | None
    ) -> None:
        """Run the rule's hooks for a level change that calls for them."""
        assert transition.action is not None
        guests = ctx.host.pool_guests.get(ctx.pool.name, ())
        event = HookEvent(
            action=transition.action,
            connection=ctx.key,
            host=ctx.host.name,
            pool=ctx.pool.name,
            pool_uuid=ctx.pool.uuid,
            level=Level(transition.level).name.lower(),
            previous_level=Level(transition.previous).name.lower(),
            used_ratio=None if m is None else m.used_ratio,
            available_bytes=None if m is None else m.free,
            time_to_full_seconds=None if m is None else m.time_to_full,
            episode=transition.episode,
            snapshot=hook_snapshot(ctx.pool, guests),
            guests=tuple(g.name for g in guests),
        )
        self._run_hooks(ctx, rule.hooks, event)

    def alarm(self, ctx: PoolContext, rule: AutostartRule, action: AutostartAction) -> None:
        """An autostart or mount alarm: logged, and the rule's hooks run."""
        host, pool, level = ctx.host, ctx.pool, action.value
        (log.info if action is AutostartAction.MOUNTED else log.warning)(
            "autostart_alarm",
            host=host.name,
            pool=pool.name,
            alarm=level,
            target=pool.target_path,
            failures=ctx.state.autostart.failures,
            last_error=ctx.state.autostart.last_error,
        )
        event = HookEvent(
            action=level,
            connection=ctx.key,
            host=host.name,
            pool=pool.name,
            pool_uuid=pool.uuid,
            level=level,
            previous_level=_PREVIOUS_ALARM.get(level, "retrying"),
            used_ratio=None,
            available_bytes=pool.free_bytes if pool.active else None,
            time_to_full_seconds=None,
            episode=alarm_episode_id(host.name, pool.name, level, ctx.now),
            snapshot=hook_snapshot(pool),
        )
        self._run_hooks(ctx, rule.hooks, event)

    def _run_hooks(self, ctx: PoolContext, names: tuple[str, ...], event: HookEvent) -> None:
        for name in names:
            ctx.state.note(f"hook:{name} {event.action}", ctx.now)
            self._hooks.submit(name, event, on_result=self.hook_finished)

    def hook_finished(self, name: str, event: HookEvent, result: HookResult) -> None:
        """The hook runner's on_result: count and keep the final result of one hook run.

        Not logged here: the runner has logged it as ``policy_action`` already.
        """
        state = self._state_of(event.connection, event.pool)
        if state is not None:
            state.note(f"hook:{name} {event.action} {result}", self._clock())
        self._telemetry.record_action(
            event.connection, event.pool, f"hook:{name}", result, detail=event.action
        )

    # -- bookkeeping -----------------------------------------------------------------------

    def _record(self, ctx: PoolContext, action: str, result: str, detail: str) -> None:
        ctx.state.note(f"{action} {result}", ctx.now)
        self._telemetry.record_action(ctx.key, ctx.pool.name, action, result, detail=detail)
