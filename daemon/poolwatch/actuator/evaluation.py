"""Evaluating one pool: its usage measured into the forecast, the threshold and autostart
policies asked, and the verdict the exporter and the API publish.

No I/O but the log event of a level change: these functions move the pool's state on in place
and return what to carry out, which the actuator hands to :mod:`poolwatch.actuator.actions`.
"""

from __future__ import annotations

import structlog

from poolwatch.actuator.context import PolicyState, PoolContext
from poolwatch.actuator.episodes import threshold_episode_id
from poolwatch.model import PoolPolicy
from poolwatch.policies import autostart
from poolwatch.policies.autostart import AutostartAction, AutostartState
from poolwatch.policies.forecast import UsageHistory
from poolwatch.policies.rules import (
    AutostartRule,
    FreeBelow,
    Level,
    ThresholdRule,
    UsedRatio,
    first_match,
)
from poolwatch.policies.thresholds import Measurement, ThresholdState, Transition, evaluate

log = structlog.get_logger()

# Forecast history for pools without a threshold rule (the time-to-full gauge is for all).
DEFAULT_FORECAST_WINDOW = 6 * 3600.0
# A pool this close to its lowest limit is refreshed sooner (adaptive refresh).
NEAR_RATIO = 0.05
NEAR_FREE_FACTOR = 2


def measure(ctx: PoolContext) -> Measurement | None:
    """The pool's usage now, after adding a new reading to its forecast history."""
    pool, state = ctx.pool, ctx.state
    if not pool.active or pool.capacity <= 0:
        return None
    rule = state.threshold_rule
    window = rule.forecast_window if rule is not None else DEFAULT_FORECAST_WINDOW
    if state.history is None or state.history.window != window:
        state.history = UsageHistory(window)
        state.last_sample = None
    # The forecast follows what guests can still write (free), so it tells when they hit ENOSPC;
    # ratio limits compare libvirt's allocation / capacity (see policies.thresholds).
    free = pool.free_bytes
    if state.last_sample != pool.read_at:
        state.history.add(pool.read_at, pool.capacity - free, pool.capacity)
        state.fill_history.add(pool.read_at, pool.allocation / pool.capacity)
        state.last_sample = pool.read_at
    return Measurement(
        capacity=pool.capacity,
        allocation=pool.allocation,
        free=free,
        time_to_full=state.history.time_to_full(ctx.now, free),
    )


def thresholds(
    ctx: PoolContext, rule: ThresholdRule, measurement: Measurement | None
) -> Transition | None:
    """Move the pool's threshold state on; a level change is logged and returned."""
    host, pool, state = ctx.host, ctx.pool, ctx.state
    state.threshold, transition = evaluate(
        rule,
        state.threshold,
        measurement,
        now=ctx.now,
        episode_id=threshold_episode_id(host.name, pool.name, ctx.now),
    )
    if transition is None:
        return None
    (log.warning if transition.level > transition.previous else log.info)(
        "threshold_level_changed",
        host=host.name,
        pool=pool.name,
        threshold_level=Level(transition.level).name.lower(),
        previous_threshold_level=Level(transition.previous).name.lower(),
        episode=transition.episode,
        used_ratio=None if measurement is None else round(measurement.used_ratio, 4),
    )
    return transition


def autostart_actions(
    ctx: PoolContext, rules: tuple[AutostartRule, ...]
) -> tuple[AutostartRule | None, tuple[AutostartAction, ...]]:
    """The autostart rule that applies to the pool and what it says to do now."""
    pool, state = ctx.pool, ctx.state
    rule = first_match(rules, pool.name, pool.type)
    if rule != state.autostart_rule:
        # A new or changed rule starts from scratch: a give-up ends "until the rule changes".
        state.autostart_rule, state.autostart = rule, AutostartState()
        if rule is not None and ctx.host.connected_at is not None:
            state.autostart = autostart.on_connected(state.autostart)
    if rule is None:
        return None, ()
    state.autostart, actions = autostart.decide(rule, pool, state.autostart, now=ctx.now)
    return rule, actions


def near_limit(
    rule: ThresholdRule | None, state: ThresholdState, measurement: Measurement | None
) -> bool:
    """Close enough to a limit that waiting for the next scheduled refresh is too long.

    Each limit is approached in its own figure, as the threshold policy compares it: a ratio
    limit by allocation / capacity, a free-space limit by free bytes.
    """
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


def verdict(state: PolicyState, measurement: Measurement | None, now: float) -> PoolPolicy:
    """What the policies say on the pool, as the inventory publishes it."""
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
        fill_history=state.fill_history.points(now),
    )
