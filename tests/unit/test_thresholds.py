"""The space-threshold state machine: levels, hysteresis, hold, alarm episodes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pytest

from poolwatch.policies.rules import FreeBelow, Level, Selector, ThresholdRule, UsedRatio
from poolwatch.policies.thresholds import (
    Measurement,
    ThresholdState,
    Transition,
    evaluate,
    level_of,
)

GIB = 1024**3
DAY = 86400.0
T0 = 1_700_000_000.0
CAPACITY = 100_000  # bytes: used ratios to three decimals are whole numbers of bytes

RULE = ThresholdRule(
    selector=Selector(),
    warning=UsedRatio(0.85),
    critical=UsedRatio(0.95),
    clear_ratio=0.02,
    clear_bytes=0,
    hold=0.0,
    time_to_full_warning=None,
    time_to_full_critical=None,
    forecast_window=6 * 3600.0,
    hooks=("notify",),
)


def used(ratio: float, *, time_to_full: float | None = None) -> Measurement:
    """allocation / capacity at `ratio`, on a filesystem without reserved blocks."""
    allocation = round(CAPACITY * ratio)
    return Measurement(
        capacity=CAPACITY,
        allocation=allocation,
        free=CAPACITY - allocation,
        time_to_full=time_to_full,
    )


def free(n_bytes: int, capacity: int = 1000 * GIB) -> Measurement:
    return Measurement(
        capacity=capacity, allocation=capacity - n_bytes, free=n_bytes, time_to_full=None
    )


def reserved(ratio: float, reserve: float = 0.05) -> Measurement:
    """allocation / capacity at `ratio` on an ext4 that keeps `reserve` of it for root: libvirt
    counts those blocks as available, a guest (QEMU, not root) cannot write them."""
    allocation = round(CAPACITY * ratio)
    return Measurement(
        capacity=CAPACITY,
        allocation=allocation,
        free=max(CAPACITY - allocation - round(CAPACITY * reserve), 0),
        time_to_full=None,
    )


class Run:
    """Feeds measurements through `evaluate` one poll apart, keeping every transition."""

    def __init__(self, rule: ThresholdRule, state: ThresholdState | None = None) -> None:
        self.rule = rule
        self.state = state or ThresholdState()
        self.now = T0
        self.polls = 0
        self.transitions: list[Transition] = []

    def feed(
        self, measurement: Measurement | None, *, at: float | None = None
    ) -> Transition | None:
        if at is not None:
            self.now = at
        self.polls += 1
        self.state, transition = evaluate(
            self.rule, self.state, measurement, now=self.now, episode_id=f"ep{self.polls}"
        )
        if transition is not None:
            self.transitions.append(transition)
        self.now += 60.0
        return transition

    def feed_all(self, measurements: Iterable[Measurement | None]) -> None:
        for measurement in measurements:
            self.feed(measurement)

    @property
    def actions(self) -> list[str | None]:
        return [t.action for t in self.transitions]

    @property
    def levels(self) -> list[Level]:
        return [t.level for t in self.transitions]


def test_used_ratio_of_a_measurement() -> None:
    assert used(0.85).used_ratio == pytest.approx(0.85)
    # libvirt's allocation / capacity, whatever the filesystem keeps back from guests
    assert reserved(0.80).used_ratio == pytest.approx(0.80)
    assert Measurement(capacity=100, allocation=80, free=15, time_to_full=None).used_ratio == 0.8
    assert Measurement(capacity=0, allocation=0, free=0, time_to_full=None).used_ratio == 0.0


def test_a_ratio_limit_compares_allocation_over_capacity_not_free_space() -> None:
    # 1 - free / capacity is 0.87 here, above the warning at 85 %; the pool is 82 % allocated.
    assert level_of(RULE, reserved(0.82)) is Level.OK
    assert level_of(RULE, reserved(0.85)) is Level.WARNING
    # A guest gets ENOSPC at 95 % on such a filesystem: a ratio critical at 95 % is not reached
    # before free space is gone; a free-space critical is.
    assert reserved(0.949).free == 100
    assert level_of(RULE, reserved(0.949)) is Level.WARNING
    last_line = replace(RULE, critical=FreeBelow(2 * CAPACITY // 100))
    assert level_of(last_line, reserved(0.935)) is Level.CRITICAL


def test_a_free_space_limit_compares_free_bytes_not_capacity_minus_allocation() -> None:
    rule = replace(RULE, warning=FreeBelow(10_000), critical=None)
    # capacity - allocation is 14,000 bytes, but a guest can write only 9,000 of them.
    assert level_of(rule, reserved(0.86)) is Level.WARNING
    assert level_of(rule, used(0.86)) is Level.OK


def test_ratio_hysteresis_uses_allocation_over_capacity() -> None:
    run = Run(RULE)
    run.feed_all([reserved(0.86), reserved(0.84), reserved(0.832)])
    assert run.levels == [Level.WARNING]
    # Below 83 % allocated the warning clears, although 1 - free / capacity is still 87 %.
    run.feed(reserved(0.82))
    assert run.levels == [Level.WARNING, Level.OK]
    assert run.actions == ["warning", "recovery"]


def test_usage_oscillating_around_the_limit_is_one_episode_with_one_warning() -> None:
    run = Run(RULE)
    run.feed_all(used(r) for r in (0.849, 0.851, 0.845, 0.852, 0.840, 0.849, 0.831, 0.853, 0.832))

    assert run.levels == [Level.WARNING]
    assert run.actions == ["warning"]
    assert run.state.level is Level.WARNING
    assert run.state.episode == "ep2"
    assert run.state.fired == {"warning"}


def test_warning_clears_only_below_the_clear_margin() -> None:
    run = Run(RULE)
    run.feed(used(0.86))
    assert run.feed(used(0.831)) is None

    transition = run.feed(used(0.829))

    assert transition == Transition(Level.WARNING, Level.OK, "ep1", "recovery")
    assert run.state == ThresholdState()


def test_rising_uses_the_plain_limit() -> None:
    run = Run(RULE)
    assert run.feed(used(0.8499)) is None
    assert run.feed(used(0.85)) == Transition(Level.OK, Level.WARNING, "ep2", "warning")


def test_hold_delays_the_transition_until_it_has_elapsed() -> None:
    run = Run(replace(RULE, hold=300.0))

    assert run.feed(used(0.86), at=T0) is None
    assert run.state.pending is Level.WARNING
    assert run.state.pending_since == T0
    assert run.state.level is Level.OK
    assert run.feed(used(0.87), at=T0 + 299) is None

    assert run.feed(used(0.86), at=T0 + 300) == Transition(
        Level.OK, Level.WARNING, "ep3", "warning"
    )
    assert run.state.pending is None
    assert run.state.pending_since is None


def test_a_dip_back_during_the_hold_restarts_it() -> None:
    run = Run(replace(RULE, hold=300.0))
    run.feed(used(0.86), at=T0)

    assert run.feed(used(0.84), at=T0 + 200) is None
    assert run.state == ThresholdState()

    run.feed(used(0.86), at=T0 + 250)
    assert run.feed(used(0.86), at=T0 + 500) is None
    assert run.feed(used(0.86), at=T0 + 550) is not None
    assert run.state.level is Level.WARNING


def test_hold_also_delays_recovery() -> None:
    run = Run(replace(RULE, hold=300.0), ThresholdState(level=Level.WARNING, episode="open"))

    assert run.feed(used(0.50), at=T0) is None
    assert run.feed(used(0.50), at=T0 + 299) is None
    assert run.feed(used(0.50), at=T0 + 300) == Transition(
        Level.WARNING, Level.OK, "open", "recovery"
    )


def test_escalation_during_the_hold_keeps_each_levels_own_clock() -> None:
    run = Run(replace(RULE, hold=300.0))
    run.feed(used(0.90), at=T0)  # warning wanted from T0
    run.feed(used(0.97), at=T0 + 60)  # critical wanted from T0 + 60
    assert run.state.pending is Level.CRITICAL
    assert run.state.pending_since == T0

    # Warning has held for the whole hold; critical not yet.
    assert run.feed(used(0.97), at=T0 + 300) == Transition(
        Level.OK, Level.WARNING, "ep3", "warning"
    )
    assert run.state.pending is Level.CRITICAL
    assert run.state.pending_since == T0 + 60

    assert run.feed(used(0.97), at=T0 + 359) is None
    assert run.feed(used(0.97), at=T0 + 360) == Transition(
        Level.WARNING, Level.CRITICAL, "ep3", "critical"
    )


def test_falling_during_the_hold_steps_down_on_each_levels_own_clock() -> None:
    state = ThresholdState(level=Level.CRITICAL, episode="open", fired=frozenset({"critical"}))
    run = Run(replace(RULE, hold=300.0), state)
    run.feed(used(0.90), at=T0)  # warning wanted from T0
    run.feed(used(0.50), at=T0 + 60)  # ok wanted from T0 + 60

    assert run.feed(used(0.50), at=T0 + 300) == Transition(
        Level.CRITICAL, Level.WARNING, "open", None
    )
    assert run.feed(used(0.50), at=T0 + 359) is None
    assert run.feed(used(0.50), at=T0 + 360) == Transition(
        Level.WARNING, Level.OK, "open", "recovery"
    )


def test_a_level_that_held_throughout_goes_in_one_step() -> None:
    run = Run(replace(RULE, hold=300.0))
    run.feed(used(0.97), at=T0)

    # The episode is named by the poll that opened it, not by the one that began the wait.
    assert run.feed(used(0.97), at=T0 + 300) == Transition(
        Level.OK, Level.CRITICAL, "ep2", "critical"
    )


def test_a_target_that_eases_during_the_hold_commits_what_held() -> None:
    run = Run(replace(RULE, hold=300.0))
    run.feed(used(0.97), at=T0)
    run.feed(used(0.90), at=T0 + 100)  # still off ok the same way: the clock keeps running

    assert run.feed(used(0.90), at=T0 + 300) == Transition(
        Level.OK, Level.WARNING, "ep3", "warning"
    )


def test_a_reversal_during_the_hold_restarts_it() -> None:
    state = ThresholdState(level=Level.WARNING, episode="open", fired=frozenset({"warning"}))
    run = Run(replace(RULE, hold=300.0), state)
    run.feed(used(0.97), at=T0)  # critical wanted
    run.feed(used(0.50), at=T0 + 100)  # now ok wanted instead

    assert run.state.pending is Level.OK
    assert run.state.pending_since == T0 + 100
    assert run.feed(used(0.50), at=T0 + 300) is None
    assert run.feed(used(0.50), at=T0 + 400) is not None
    assert run.state.level is Level.OK


def test_each_action_runs_once_per_episode() -> None:
    run = Run(RULE)
    run.feed_all(used(r) for r in (0.50, 0.90, 0.97, 0.90, 0.97, 0.90, 0.97))

    assert run.levels == [Level.WARNING, Level.CRITICAL] * 3
    assert run.actions == ["warning", "critical", None, None, None, None]
    assert {t.episode for t in run.transitions} == {"ep2"}


def test_recovery_runs_once_and_the_next_episode_gets_a_new_id() -> None:
    run = Run(RULE)
    run.feed_all(used(r) for r in (0.90, 0.97, 0.50, 0.50, 0.86))

    assert run.actions == ["warning", "critical", "recovery", "warning"]
    assert [t.episode for t in run.transitions] == ["ep1", "ep1", "ep1", "ep5"]
    assert run.state.episode == "ep5"
    assert run.state.fired == {"warning"}


def test_straight_to_critical_and_back_to_ok() -> None:
    run = Run(RULE)
    run.feed_all(used(r) for r in (0.99, 0.10))

    assert run.transitions == [
        Transition(Level.OK, Level.CRITICAL, "ep1", "critical"),
        Transition(Level.CRITICAL, Level.OK, "ep1", "recovery"),
    ]


def test_critical_falls_back_through_each_clear_margin() -> None:
    run = Run(RULE, ThresholdState(level=Level.CRITICAL, episode="open"))

    assert run.feed(used(0.935)) is None  # within 2 points of 95 %
    assert run.feed(used(0.929)) == Transition(Level.CRITICAL, Level.WARNING, "open", None)
    assert run.feed(used(0.831)) is None
    assert run.feed(used(0.829)) == Transition(Level.WARNING, Level.OK, "open", "recovery")


def test_free_below_limits_with_clear_bytes() -> None:
    rule = replace(
        RULE, warning=FreeBelow(20 * GIB), critical=FreeBelow(5 * GIB), clear_bytes=2 * GIB
    )
    run = Run(rule)

    assert run.feed(free(20 * GIB)) is None  # not below
    assert run.feed(free(19 * GIB)) == Transition(Level.OK, Level.WARNING, "ep2", "warning")
    assert run.feed(free(21 * GIB)) is None  # still below 20 + 2 GiB
    assert run.feed(free(4 * GIB)) == Transition(Level.WARNING, Level.CRITICAL, "ep2", "critical")
    assert run.feed(free(6 * GIB)) is None  # still below 5 + 2 GiB
    assert run.feed(free(8 * GIB)) == Transition(Level.CRITICAL, Level.WARNING, "ep2", None)
    assert run.feed(free(22 * GIB)) == Transition(Level.WARNING, Level.OK, "ep2", "recovery")


def test_mixed_limit_kinds() -> None:
    rule = replace(RULE, warning=UsedRatio(0.80), critical=FreeBelow(10 * GIB))
    capacity = 100 * GIB

    assert level_of(rule, free(25 * GIB, capacity)) is Level.OK
    assert level_of(rule, free(15 * GIB, capacity)) is Level.WARNING
    assert level_of(rule, free(9 * GIB, capacity)) is Level.CRITICAL


def test_a_rule_without_space_limits_never_alarms_on_space() -> None:
    rule = replace(RULE, warning=None, critical=None)

    assert level_of(rule, used(1.0)) is Level.OK
    assert evaluate(rule, ThresholdState(), used(1.0), now=T0, episode_id="x") == (
        ThresholdState(),
        None,
    )


def test_time_to_full_levels() -> None:
    rule = replace(
        RULE,
        warning=None,
        critical=None,
        time_to_full_warning=7 * DAY,
        time_to_full_critical=1 * DAY,
    )
    run = Run(rule)

    assert run.feed(used(0.10, time_to_full=8 * DAY)) is None
    assert run.feed(used(0.10, time_to_full=6 * DAY)) is not None
    assert run.feed(used(0.10, time_to_full=0.5 * DAY)) is not None
    assert run.feed(used(0.10, time_to_full=1.05 * DAY)) is None  # within the 10 % margin
    assert run.feed(used(0.10, time_to_full=1.2 * DAY)) is not None
    assert run.feed(used(0.10, time_to_full=7.5 * DAY)) is None  # within 7.7 days
    assert run.feed(used(0.10, time_to_full=7.8 * DAY)) is not None

    assert run.levels == [Level.WARNING, Level.CRITICAL, Level.WARNING, Level.OK]
    assert run.actions == ["warning", "critical", None, "recovery"]


def test_a_pool_that_stops_growing_clears_its_time_to_full_level() -> None:
    rule = replace(RULE, time_to_full_warning=7 * DAY, time_to_full_critical=1 * DAY)
    run = Run(rule)
    run.feed(used(0.10, time_to_full=3600.0))

    assert run.feed(used(0.10, time_to_full=None)) == Transition(
        Level.CRITICAL, Level.OK, "ep1", "recovery"
    )


def test_the_worse_of_space_and_time_to_full_wins() -> None:
    rule = replace(RULE, time_to_full_warning=7 * DAY, time_to_full_critical=1 * DAY)

    assert level_of(rule, used(0.97, time_to_full=None)) is Level.CRITICAL
    assert level_of(rule, used(0.97, time_to_full=30 * DAY)) is Level.CRITICAL
    assert level_of(rule, used(0.50, time_to_full=3600.0)) is Level.CRITICAL
    assert level_of(rule, used(0.90, time_to_full=3 * DAY)) is Level.WARNING
    assert level_of(rule, used(0.50, time_to_full=30 * DAY)) is Level.OK


def test_level_of_ignores_hysteresis() -> None:
    assert level_of(RULE, used(0.84)) is Level.OK  # even where a warning would still hold
    assert level_of(RULE, used(0.85)) is Level.WARNING
    assert level_of(RULE, used(0.96)) is Level.CRITICAL


def test_no_measurement_keeps_the_state_as_it_is() -> None:
    pending = ThresholdState(
        level=Level.WARNING,
        pending=Level.CRITICAL,
        pending_since=T0,
        episode="open",
        fired=frozenset({"warning"}),
    )

    assert evaluate(RULE, pending, None, now=T0 + DAY, episode_id="new") == (pending, None)


def test_an_inactive_pool_keeps_its_episode_across_the_outage() -> None:
    run = Run(RULE)
    run.feed_all([used(0.97), None, None, used(0.97)])

    assert run.actions == ["critical"]
    assert run.state.episode == "ep1"


def test_zero_capacity_is_no_measurement() -> None:
    empty = Measurement(capacity=0, allocation=0, free=0, time_to_full=None)
    rule = replace(RULE, warning=FreeBelow(GIB))
    state = ThresholdState(level=Level.WARNING, episode="open")

    assert level_of(rule, empty) is Level.OK
    assert evaluate(rule, state, empty, now=T0, episode_id="new") == (state, None)
    assert evaluate(rule, ThresholdState(), empty, now=T0, episode_id="new") == (
        ThresholdState(),
        None,
    )


def test_invariants_over_a_long_deterministic_walk() -> None:
    rule = replace(RULE, hold=120.0, time_to_full_warning=7 * DAY, time_to_full_critical=DAY)
    run = Run(rule)
    ratio, seed = 0.80, 1
    for i in range(5000):
        # A deterministic random walk (an LCG) that crosses both limits many times, with bursts
        # of fast growth and gaps of no data.
        seed = (seed * 1103515245 + 12345) % 2**31
        ratio = min(max(ratio + (seed % 41 - 20) / 1000, 0.70), 1.0)
        ttf = (seed % 20) * DAY / 2 if i % 200 < 20 else None
        run.feed(None if i % 97 == 0 else used(ratio, time_to_full=ttf))
        assert (run.state.episode is None) == (run.state.level is Level.OK)
        assert (run.state.pending is None) == (run.state.pending_since is None)

    episodes = [t.episode for t in run.transitions if t.previous is Level.OK]
    recoveries = [t.episode for t in run.transitions if t.action == "recovery"]
    assert len(episodes) > 10
    assert len(set(episodes)) == len(episodes)
    assert recoveries == episodes[: len(recoveries)]
    for episode in episodes:
        actions = [t.action for t in run.transitions if t.episode == episode and t.action]
        assert len(actions) == len(set(actions))
    for before, after in zip(run.transitions, run.transitions[1:], strict=False):
        assert before.level == after.previous
        assert before.level != before.previous
