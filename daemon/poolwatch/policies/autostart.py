"""The autostart policy: which pool to start (or flag, or alarm on) now, as a pure decision.

The contract with operators:
- Only persistent pools whose libvirt autostart flag is set are started. To keep such a pool
  down, disable its flag (``virsh pool-autostart --disable NAME``): poolwatch never fights that.
- ``boot``: after poolwatch (re)connects, inactive flagged pools are started, retried with
  exponential backoff until they run (libvirt itself tries once per boot and never again).
- ``enforce``: as ``boot``, and also whenever such a pool stops later.
- ``ensure_flag``: matching persistent pools get libvirt's autostart flag set.
- ``require_mount`` (dir pools): a target that is not a mount point is never started and raises
  the ``not_mounted`` alarm until the mount appears; a pool that already runs on an unmounted
  target raises it too, since it is filling the filesystem underneath.
- After ``max_attempts`` failed starts poolwatch gives up until the pool runs or the rule
  changes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from poolwatch.model import PoolSnapshot
from poolwatch.policies.rules import AutostartMode, AutostartRule


class AutostartAction(enum.StrEnum):
    START_POOL = "start_pool"
    SET_AUTOSTART = "set_autostart"
    NOT_MOUNTED = "not_mounted"  # alarm raised
    MOUNTED = "mounted"  # alarm cleared
    GAVE_UP = "gave_up"


@dataclass(frozen=True, slots=True)
class AutostartState:
    failures: int = 0  # consecutive failed starts
    next_attempt_at: float = 0.0
    gave_up: bool = False
    last_error: str | None = None
    boot_pending: bool = False  # boot mode: still to be started after the last (re)connect
    in_flight: bool = False  # a start or flag change was asked for and has not reported back
    flag_attempt_at: float | None = None  # last time setAutostart was asked for
    not_mounted: bool = False  # the not_mounted alarm is raised
    # When the last start succeeded, or was declined because libvirt's flag was off: until a
    # snapshot read after it arrives, the pool's snapshot is out of date, and starting it
    # again would only be noise.
    reread_after: float | None = None


def on_connected(state: AutostartState) -> AutostartState:
    """A (re)connect: boot mode gets to start the pool again (a give-up stays given up)."""
    return replace(state, boot_pending=True)


def decide(
    rule: AutostartRule, pool: PoolSnapshot, state: AutostartState, *, now: float
) -> tuple[AutostartState, tuple[AutostartAction, ...]]:
    """What to do about ``pool`` now; the actuator reports back through ``start_finished``."""
    actions: list[AutostartAction] = []
    if pool.active:
        # Running: whatever failed before is over; boot mode has done its job.
        state = replace(state, failures=0, gave_up=False, boot_pending=False, last_error=None)

    mount_blocks = rule.require_mount and pool.type == "dir" and pool.target_mounted is not True
    if mount_blocks and not state.not_mounted:
        state = replace(state, not_mounted=True)
        actions.append(AutostartAction.NOT_MOUNTED)
    elif not mount_blocks and state.not_mounted:
        state = replace(state, not_mounted=False)
        actions.append(AutostartAction.MOUNTED)

    if state.in_flight:
        return state, tuple(actions)

    if (
        rule.ensure_flag
        and pool.persistent
        and not pool.autostart
        and (state.flag_attempt_at is None or now - state.flag_attempt_at >= rule.backoff_initial)
    ):
        state = replace(state, in_flight=True, flag_attempt_at=now)
        actions.append(AutostartAction.SET_AUTOSTART)
        return state, tuple(actions)

    wanted = rule.mode is AutostartMode.ENFORCE or (
        rule.mode is AutostartMode.BOOT and state.boot_pending
    )
    if (
        wanted
        and not pool.active
        and pool.persistent
        and pool.autostart
        and not mount_blocks
        and not state.gave_up
        and now >= state.next_attempt_at
        and (state.reread_after is None or pool.read_at > state.reread_after)
    ):
        state = replace(state, in_flight=True)
        actions.append(AutostartAction.START_POOL)
    return state, tuple(actions)


def start_finished(
    rule: AutostartRule,
    state: AutostartState,
    *,
    ok: bool,
    error: str | None,
    now: float,
    jitter: float,
) -> tuple[AutostartState, tuple[AutostartAction, ...]]:
    """The result of a START_POOL; ``jitter`` in [0.5, 1] spreads retries of many hosts."""
    if ok:
        started = replace(
            state,
            in_flight=False,
            failures=0,
            boot_pending=False,
            last_error=None,
            reread_after=now,
        )
        return started, ()
    failures = state.failures + 1
    delay = min(rule.backoff_initial * 2 ** (failures - 1), rule.backoff_max) * jitter
    gave_up = rule.max_attempts > 0 and failures >= rule.max_attempts
    state = replace(
        state,
        in_flight=False,
        failures=failures,
        next_attempt_at=now + delay,
        gave_up=gave_up,
        last_error=error,
    )
    return state, (AutostartAction.GAVE_UP,) if gave_up else ()


def start_declined(state: AutostartState, now: float) -> AutostartState:
    """A START_POOL that found libvirt's autostart flag off: nothing happened. The pool is not
    started again before a read after ``now`` (which brings the flag) arrives."""
    return replace(state, in_flight=False, reread_after=now)


def flag_finished(state: AutostartState) -> AutostartState:
    """The result of a SET_AUTOSTART (either way: a failure is retried after the backoff)."""
    return replace(state, in_flight=False)
