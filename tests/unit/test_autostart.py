"""The autostart policy as a pure decision: modes, the flag contract, backoff, give-up, mounts."""

from __future__ import annotations

import dataclasses

import pytest

from poolwatch.model import PoolSnapshot, PoolState
from poolwatch.policies.autostart import (
    AutostartAction,
    AutostartState,
    decide,
    flag_finished,
    on_connected,
    start_finished,
)
from poolwatch.policies.rules import AutostartMode, AutostartRule, Selector

START = (AutostartAction.START_POOL,)


def rule(mode: AutostartMode = AutostartMode.ENFORCE, **kw: object) -> AutostartRule:
    fields: dict[str, object] = {
        "selector": Selector(),
        "mode": mode,
        "ensure_flag": False,
        "require_mount": False,
        "max_attempts": 3,
        "backoff_initial": 10.0,
        "backoff_max": 60.0,
        "hooks": (),
    }
    fields.update(kw)
    return AutostartRule(**fields)  # type: ignore[arg-type]


def pool(*, active: bool = False, autostart: bool = True, **kw: object) -> PoolSnapshot:
    snapshot = PoolSnapshot(
        host="kvm01",
        name="nfs-isos",
        uuid="u1",
        type="dir",
        target_path="/srv/isos",
        source="",
        state=PoolState.RUNNING if active else PoolState.INACTIVE,
        active=active,
        persistent=True,
        autostart=autostart,
        capacity=0,
        allocation=0,
        available=0,
    )
    return dataclasses.replace(snapshot, **kw)  # type: ignore[arg-type]


def test_enforce_starts_a_stopped_flagged_pool_once_until_it_reports() -> None:
    state, actions = decide(rule(), pool(), AutostartState(), now=0)
    assert actions == START
    # Asking again while the start is in flight does nothing: one start, not one per poll.
    state, actions = decide(rule(), pool(), state, now=1)
    assert actions == ()
    state, _ = start_finished(rule(), state, ok=True, error=None, now=2, jitter=1)
    _, actions = decide(rule(), pool(active=True), state, now=3)
    assert actions == ()


@pytest.mark.parametrize("mode", list(AutostartMode))
def test_a_pool_without_the_flag_is_never_started(mode: AutostartMode) -> None:
    state = on_connected(AutostartState())
    _, actions = decide(rule(mode), pool(autostart=False), state, now=0)
    assert actions == ()


def test_transient_pools_are_never_started() -> None:
    _, actions = decide(rule(), pool(persistent=False), AutostartState(), now=0)
    assert actions == ()


def test_boot_starts_after_connect_only() -> None:
    boot = rule(AutostartMode.BOOT)
    _, actions = decide(boot, pool(), AutostartState(), now=0)
    assert actions == ()  # no connect yet
    state, actions = decide(boot, pool(), on_connected(AutostartState()), now=0)
    assert actions == START
    state, _ = start_finished(boot, state, ok=True, error=None, now=1, jitter=1)
    state, _ = decide(boot, pool(active=True, read_at=2), state, now=2)
    # It stops later: boot mode leaves it alone, enforce would not.
    _, actions = decide(boot, pool(read_at=3), state, now=3)
    assert actions == ()
    _, actions = decide(rule(AutostartMode.ENFORCE), pool(read_at=3), state, now=3)
    assert actions == START


def test_no_second_start_until_a_reading_after_the_first() -> None:
    state, _ = decide(rule(), pool(read_at=10), AutostartState(), now=10)
    state, _ = start_finished(rule(), state, ok=True, error=None, now=11, jitter=1)
    _, actions = decide(rule(), pool(read_at=10), state, now=12)
    assert actions == ()  # still the reading from before the start
    _, actions = decide(rule(), pool(read_at=12), state, now=12)
    assert actions == START  # read after the start, and stopped again


def test_off_observes_only() -> None:
    _, actions = decide(rule(AutostartMode.OFF), pool(), on_connected(AutostartState()), now=0)
    assert actions == ()


def test_failed_starts_back_off_exponentially_then_give_up() -> None:
    r = rule(max_attempts=3, backoff_initial=10.0, backoff_max=15.0)
    state = AutostartState()
    attempts = []
    now = 0.0
    while now < 1000:
        state, actions = decide(r, pool(), state, now=now)
        if AutostartAction.START_POOL in actions:
            attempts.append(now)
            state, after = start_finished(r, state, ok=False, error="no dir", now=now, jitter=1)
            if after:
                assert after == (AutostartAction.GAVE_UP,)
        now += 1
    assert attempts == [0, 10, 25]  # 10 s, then 20 s capped at 15 s; then the third failure
    assert state.gave_up
    assert state.last_error == "no dir"
    # A give-up lasts until the pool runs (started by someone else) ...
    state, _ = decide(r, pool(active=True), state, now=now)
    assert not state.gave_up
    assert state.failures == 0


def test_give_up_survives_a_reconnect() -> None:
    r = rule(max_attempts=1)
    state, _ = decide(r, pool(), AutostartState(), now=0)
    state, _ = start_finished(r, state, ok=False, error="x", now=0, jitter=1)
    assert state.gave_up
    _, actions = decide(r, pool(), on_connected(state), now=1000)
    assert actions == ()


def test_jitter_shortens_the_delay() -> None:
    state, _ = decide(rule(), pool(), AutostartState(), now=0)
    state, _ = start_finished(rule(), state, ok=False, error="x", now=0, jitter=0.5)
    assert state.next_attempt_at == 5.0


def test_zero_max_attempts_never_gives_up() -> None:
    r = rule(max_attempts=0, backoff_initial=1.0, backoff_max=1.0)
    state = AutostartState()
    for now in range(100):
        state, actions = decide(r, pool(), state, now=now)
        if actions:
            state, _ = start_finished(r, state, ok=False, error="x", now=now, jitter=1)
    assert not state.gave_up
    assert state.failures == 100  # one a second: the backoff is capped at 1 s


def test_ensure_flag_sets_the_flag_once_per_backoff() -> None:
    r = rule(AutostartMode.OFF, ensure_flag=True, backoff_initial=30.0)
    state, actions = decide(r, pool(autostart=False), AutostartState(), now=0)
    assert actions == (AutostartAction.SET_AUTOSTART,)
    state = flag_finished(state)  # it failed: the flag is still off
    _, actions = decide(r, pool(autostart=False), state, now=10)
    assert actions == ()
    _, actions = decide(r, pool(autostart=False), state, now=30)
    assert actions == (AutostartAction.SET_AUTOSTART,)
    _, actions = decide(r, pool(autostart=True), state, now=30)
    assert actions == ()


def test_require_mount_refuses_unmounted_target_and_alarms_until_it_appears() -> None:
    r = rule(require_mount=True)
    state, actions = decide(r, pool(target_mounted=False), AutostartState(), now=0)
    assert actions == (AutostartAction.NOT_MOUNTED,)
    state, actions = decide(r, pool(target_mounted=False), state, now=100)
    assert actions == ()  # raised once, not once per poll
    state, actions = decide(r, pool(target_mounted=True), state, now=200)
    assert actions == (AutostartAction.MOUNTED, AutostartAction.START_POOL)
    assert not state.not_mounted


def test_require_mount_alarms_on_a_running_pool_whose_mount_vanished() -> None:
    r = rule(AutostartMode.OFF, require_mount=True)
    state, actions = decide(r, pool(active=True, target_mounted=False), AutostartState(), now=0)
    assert actions == (AutostartAction.NOT_MOUNTED,)
    assert state.not_mounted


def test_require_mount_with_unknown_mount_status_does_not_start() -> None:
    r = rule(require_mount=True)
    _, actions = decide(r, pool(target_mounted=None), AutostartState(), now=0)
    assert AutostartAction.START_POOL not in actions


def test_require_mount_ignores_other_pool_types() -> None:
    r = rule(require_mount=True)
    _, actions = decide(r, pool(type="netfs", target_mounted=None), AutostartState(), now=0)
    assert actions == START
