"""Carrying out what the resume policy decided: resume or destroy a guest, announce a pause.

Each resume or destroy is one ``policy_action`` log event, counted in poolwatch_actions_total
(action resume_guest or destroy_guest, by pool), kept for /api/v1/events with the guest's name,
and under ``--dry-run`` only logged. Announcements (a guest paused, a guest left paused) are
logged and told to the rule's hooks; so is every resume and destroy that libvirt carried out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import structlog

from poolwatch.actuator.context import Connection, PolicyState, PoolContext
from poolwatch.actuator.episodes import alarm_episode_id
from poolwatch.documents import hook_snapshot
from poolwatch.hooks import HookEvent, HookRunner
from poolwatch.hooks.event import ResultCallback
from poolwatch.inventory import Inventory
from poolwatch.policies import resume
from poolwatch.policies.resume import Decision, GuestAction
from poolwatch.source import GuestNotFound, SourceError, SourceUnavailable
from poolwatch.tasks import TaskSet
from poolwatch.telemetry import Telemetry

log = structlog.get_logger()

# The libvirt call behind each action, as poolwatch_actions_total{action} names it.
_CALLS = {GuestAction.RESUME: "resume_guest", GuestAction.KILL: "destroy_guest"}


class GuestActions:
    def __init__(
        self,
        *,
        inventory: Inventory,
        telemetry: Telemetry,
        connections: Callable[[str], Connection | None],
        hooks: HookRunner,
        on_hook_result: ResultCallback,
        dry_run: bool,
        clock: Callable[[], float],
        state_of: Callable[[str, str], PolicyState | None],
    ) -> None:
        self._inventory = inventory
        self._telemetry = telemetry
        self._connections = connections
        self._hooks = hooks
        self._on_hook_result = on_hook_result
        self._dry_run = dry_run
        self._clock = clock
        self._state_of = state_of
        self._tasks = TaskSet()

    async def stop(self) -> None:
        await self._tasks.close()

    def handle(self, ctx: PoolContext, decision: Decision) -> None:
        if decision.action in _CALLS:
            self._call(ctx, decision)
            return
        guest = decision.guest
        log.warning(
            "guest_alarm",
            host=ctx.host.name,
            pool=ctx.pool.name,
            guest=guest.name,
            alarm=decision.action.value,
            reason=guest.io_error,
            rule_action=decision.rule.action.value,
        )
        self._hooks_for(ctx, decision)

    def _call(self, ctx: PoolContext, decision: Decision) -> None:
        action = _CALLS[decision.action]
        guest = decision.guest
        if self._dry_run:
            log.info(
                "policy_action",
                host=ctx.host.name,
                pool=ctx.pool.name,
                guest=guest.name,
                action=action,
                result="dry_run",
            )
            self._record(ctx, action, "dry_run", guest.name)
            return
        connection = self._connections(ctx.key)
        if connection is None:
            return
        self._tasks.spawn(self._perform(ctx, connection, decision))

    async def _perform(self, ctx: PoolContext, connection: Connection, decision: Decision) -> None:
        action = _CALLS[decision.action]
        guest = decision.guest
        error = None
        try:
            if decision.action is GuestAction.RESUME:
                await connection.source.resume_guest(guest.uuid)
            else:
                await connection.source.destroy_guest(guest.uuid)
        except (SourceError, SourceUnavailable, GuestNotFound) as exc:
            error = str(exc) or type(exc).__name__
        result = "ok" if error is None else "failed"
        (log.info if error is None else log.warning)(
            "policy_action",
            host=ctx.host.name,
            pool=ctx.pool.name,
            guest=guest.name,
            action=action,
            result=result,
            error=error,
        )
        state = self._state_of(ctx.key, ctx.pool.name)
        after = ctx if state is None else replace(ctx, state=state, now=self._clock())
        self._record(after, action, result, guest.name)
        if error is not None:
            if state is not None and decision.action is GuestAction.RESUME:
                resume.resume_failed(state.resume, guest)
            return
        self._hooks_for(after, decision)

    def _hooks_for(self, ctx: PoolContext, decision: Decision) -> None:
        pool, guest = ctx.pool, decision.guest
        guests = ctx.host.pool_guests.get(pool.name, ())
        event = HookEvent(
            action=decision.action.value,
            connection=ctx.key,
            host=ctx.host.name,
            pool=pool.name,
            pool_uuid=pool.uuid,
            level=guest.state.value,
            previous_level=guest.io_error,
            used_ratio=None,
            available_bytes=pool.free_bytes if pool.active else None,
            time_to_full_seconds=None,
            # One episode per pause of one guest: a retried webhook keeps its idempotency key.
            episode=alarm_episode_id(
                ctx.host.name, pool.name, f"guest:{guest.name}", guest.changed_at
            ),
            snapshot=hook_snapshot(pool, guests),
            guest=guest.name,
            guests=tuple(g.name for g in guests),
        )
        for name in decision.rule.hooks:
            ctx.state.note(f"hook:{name} {event.action}", ctx.now)
            self._hooks.submit(name, event, on_result=self._on_hook_result)

    def _record(self, ctx: PoolContext, action: str, result: str, guest: str) -> None:
        ctx.state.note(f"{action} {guest} {result}", ctx.now)
        self._telemetry.record_action(
            ctx.key, ctx.pool.name, action, result, detail=guest, guest=guest
        )
