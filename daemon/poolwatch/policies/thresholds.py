"""Space thresholds: the alarm level of one pool, as a pure state machine.

`evaluate(rule, state, measurement, now=..., episode_id=...)` takes the last `ThresholdState` and
one `Measurement` and returns the next state plus, when the level changed, a `Transition` naming
the action (hooks) to run. Nothing here reads a clock or talks to libvirt; the caller keeps one
state per pool and carries out the actions.

How a level is decided, for operators:

- Two figures, each for its own kind of limit. A `UsedRatio` limit ("85%") is reached when
  libvirt's allocation / capacity >= the ratio: the fill level that poolwatch exports
  (libvirt_storage_pool_allocation_bytes / libvirt_storage_pool_capacity_bytes) and shows in
  its fill bars. A `FreeBelow` limit ("< 20GiB") is reached when free bytes < the limit, where
  free is what a guest can still write: the smaller of libvirt's `available` and the
  filesystem's own f_bavail. The two differ by the blocks a filesystem reserves for root (5 % on
  a default ext4), which libvirt counts as available but QEMU cannot use: QEMU gets ENOSPC with
  allocation / capacity at about 95 % there, so a ratio limit at 95 % or more never fires before
  guests pause, and the last line of defence belongs to a free-space limit.
- Forecast. The time-to-full forecast follows free bytes (what a guest can still write), so it
  says when guests hit ENOSPC. With `time_to_full` levels, the forecast reaching the pool's end
  sooner than the warning (critical) duration is a warning (critical) too. The level is the
  worse of the space level and the time-to-full level.
- Hysteresis (`clear`). Rising uses the plain limits; falling back needs the measure to be
  clearly on the good side: a level stays while allocation / capacity >= ratio - clear (a
  fraction: 0.02 is two percentage points), or while free < limit + clear bytes. Time-to-full
  levels use a fixed 10 % margin: they clear once the forecast exceeds 1.1 x their duration, or
  once the pool stops growing. Usage wobbling around a limit by less than the margin is one
  alarm, not one per poll.
- Hold (`for`). A new level must be the target continuously for `for` seconds before it takes
  effect; a target back at the current level cancels the wait. A target that moves further the
  same way keeps the clock running: from ok, a warning that turns critical after one minute of a
  five minute `for` becomes warning at minute five and critical at minute six, each level having
  held for its own five minutes. `for = 0` acts on the next measurement.
- Alarm episodes. An episode opens when the level leaves ok and closes when it returns to ok.
  Within an episode each action runs at most once: "warning" on entering warning, "critical" on
  entering critical, "recovery" on returning to ok (exactly once per episode). Critical back to
  warning is a transition without action, and re-entering a level does not re-run its action.
- No measurement. A pool that is inactive, or whose capacity is unknown (reported as 0), keeps
  its last level, pending wait and episode until it is measured again: an outage is not a
  recovery, and a restarted pool that is still full does not open a second episode.
"""

from __future__ import annotations

from dataclasses import dataclass

from poolwatch.policies.rules import FreeBelow, Level, Limit, ThresholdRule, UsedRatio

# A time-to-full level clears only once the forecast is this much beyond its duration: the forecast
# moves a little with every sample, and without a margin would flap around the limit.
TIME_TO_FULL_CLEAR_FACTOR = 1.1

ACTION_RECOVERY = "recovery"


@dataclass(frozen=True, slots=True)
class Measurement:
    """One reading of a running pool, as the threshold policy needs it."""

    capacity: int  # libvirt's capacity
    allocation: int  # libvirt's allocation: what ratio limits measure
    free: int  # the smaller of libvirt's available and the filesystem's f_bavail
    time_to_full: float | None  # seconds, from the forecast; None when not growing / unknown

    @property
    def used_ratio(self) -> float:
        """allocation / capacity, the figure a `UsedRatio` limit ("85%") is compared with."""
        if self.capacity <= 0:
            return 0.0
        return self.allocation / self.capacity


@dataclass(frozen=True, slots=True)
class ThresholdState:
    """The alarm state of one pool between two measurements."""

    level: Level = Level.OK
    pending: Level | None = None  # a different level waiting out the rule's `hold`
    pending_since: float | None = None  # since when the target has been off `level` that way
    episode: str | None = None  # the open alarm episode (None while OK)
    fired: frozenset[str] = frozenset()  # actions already run in this episode
    # Since when the target has been two levels away (ok <-> critical): when the first step is
    # taken, the second one keeps the time it has already held.
    pending_far_since: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    previous: Level
    level: Level
    episode: str  # the episode the transition belongs to; for a recovery, the one it closes
    action: str | None  # "warning", "critical" or "recovery" when hooks must run; None when not


def level_of(rule: ThresholdRule, measurement: Measurement) -> Level:
    """The level the measurement calls for by the plain limits, without hysteresis or hold."""
    if measurement.capacity <= 0:
        return Level.OK
    for level in (Level.CRITICAL, Level.WARNING):
        if _reached(rule, level, measurement, clearing=False):
            return level
    return Level.OK


def evaluate(
    rule: ThresholdRule,
    state: ThresholdState,
    measurement: Measurement | None,
    *,
    now: float,
    episode_id: str,
) -> tuple[ThresholdState, Transition | None]:
    """The next state of one pool, and the transition when its level changed.

    `episode_id` names the episode opened if this measurement takes the level out of ok; callers
    pass a fresh id each time (it is ignored otherwise).
    """
    if measurement is None or measurement.capacity <= 0:
        return state, None
    target = _target(rule, state.level, measurement)
    current = state.level
    if target == current:
        if state.pending is None:
            return state, None
        # The target came back before the hold elapsed: the wait starts over next time.
        return ThresholdState(level=current, episode=state.episode, fired=state.fired), None
    if rule.hold <= 0:
        return _commit(state, target, episode_id)

    step = 1 if target > current else -1
    same_way = state.pending is not None and (state.pending - current) * step > 0
    pending_since = state.pending_since if same_way else None
    if pending_since is None:
        pending_since = now
    far_since: float | None = None
    if abs(target - current) == 2:
        far_since = state.pending_far_since if same_way else None
        if far_since is None:
            far_since = now

    if now - pending_since < rule.hold:
        waiting = ThresholdState(
            level=current,
            pending=target,
            pending_since=pending_since,
            episode=state.episode,
            fired=state.fired,
            pending_far_since=far_since,
        )
        return waiting, None
    if far_since is None or now - far_since >= rule.hold:
        return _commit(state, target, episode_id)
    # One step has held, the second has not yet: take the first, and let the second keep
    # waiting from when it began.
    stepped, transition = _commit(state, Level(current + step), episode_id)
    still_pending = ThresholdState(
        level=stepped.level,
        pending=target,
        pending_since=far_since,
        episode=stepped.episode,
        fired=stepped.fired,
    )
    return still_pending, transition


def _target(rule: ThresholdRule, current: Level, measurement: Measurement) -> Level:
    plain = level_of(rule, measurement)
    if plain >= current:
        return plain
    # Falling: the highest level between the plain one and the current one whose limit is still
    # within its clear margin stays in force.
    for level in range(current, plain, -1):
        if _reached(rule, Level(level), measurement, clearing=True):
            return Level(level)
    return plain


def _reached(
    rule: ThresholdRule, level: Level, measurement: Measurement, *, clearing: bool
) -> bool:
    if level == Level.CRITICAL:
        limit, ttf_limit = rule.critical, rule.time_to_full_critical
    else:
        limit, ttf_limit = rule.warning, rule.time_to_full_warning
    if limit is not None and _limit_reached(rule, limit, measurement, clearing=clearing):
        return True
    if ttf_limit is None or measurement.time_to_full is None:
        return False
    if clearing:
        return measurement.time_to_full <= ttf_limit * TIME_TO_FULL_CLEAR_FACTOR
    return measurement.time_to_full < ttf_limit


def _limit_reached(
    rule: ThresholdRule, limit: Limit, measurement: Measurement, *, clearing: bool
) -> bool:
    match limit:
        case UsedRatio(ratio):
            margin = rule.clear_ratio if clearing else 0.0
            return measurement.used_ratio >= ratio - margin
        case FreeBelow(limit_bytes):
            margin_bytes = rule.clear_bytes if clearing else 0
            return measurement.free < limit_bytes + margin_bytes


def _commit(
    state: ThresholdState, level: Level, episode_id: str
) -> tuple[ThresholdState, Transition]:
    previous = state.level
    if level == Level.OK:
        # An episode is always open outside ok; the fallback only guards a hand-built state.
        closing = state.episode if state.episode is not None else episode_id
        return ThresholdState(), Transition(previous, level, closing, ACTION_RECOVERY)
    if previous == Level.OK or state.episode is None:
        episode, fired = episode_id, frozenset[str]()
    else:
        episode, fired = state.episode, state.fired
    name = level.name.lower()
    action: str | None = None
    if level > previous and name not in fired:
        action = name
        fired = fired | {name}
    new_state = ThresholdState(level=level, episode=episode, fired=fired)
    return new_state, Transition(previous, level, episode, action)
