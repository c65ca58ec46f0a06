"""The resume policy: what to do about guests a full pool paused, as a pure decision.

QEMU stops a guest whose disk write fails with ENOSPC (its default ``werror=enospc``) and
nothing resumes it when space is back. For each pool, each guest paused on an I/O error of a disk
in that pool is, under the first ``[[resume]]`` rule matching the pool and the guest:
- announced once per pause (``GUEST_PAUSED``, which the rule's hooks hear);
- ``resume`` (guests paused by ENOSPC only): resumed once the pool, read after the pause, has
  more than ``free_above`` bytes free, one guest at a time
  per pool with ``delay`` seconds between two resumes, so the resumed guests do not fill the
  pool again at once. A guest that pauses again within ``window`` seconds of being resumed is
  left paused (``GUEST_LEFT_PAUSED``): no resume loop; an operator takes over;
- ``leave``: only announced;
- ``kill``: destroyed, once per pause.
Time comes in as ``now``; the guest's ``changed_at`` tells one pause from the next.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from poolwatch.model import GuestState, PoolGuest, PoolSnapshot
from poolwatch.policies.rules import ResumeAction, ResumeRule


class GuestAction(enum.StrEnum):
    """What the policy asks for; the values are the hooks' POOLWATCH_ACTION."""

    GUEST_PAUSED = "guest_paused"  # announce: a disk in this pool paused the guest
    RESUME = "guest_resumed"  # resume it (libvirt call)
    KILL = "guest_killed"  # destroy it (libvirt call)
    GUEST_LEFT_PAUSED = "guest_left_paused"  # announce: paused again soon after a resume


@dataclass
class GuestMemory:
    """What the policy remembers of one guest on one pool."""

    paused_at: float | None = None  # changed_at of the pause already announced
    acted_on: float | None = None  # changed_at of the pause already resumed or killed
    resumed_at: float | None = None  # when poolwatch last resumed it
    left_paused: bool = False  # paused again within the window: no more resumes this pause


@dataclass
class ResumeState:
    """One pool's resume state, kept from one evaluation to the next."""

    next_resume_at: float = 0.0
    guests: dict[str, GuestMemory] = field(default_factory=dict)  # by uuid


@dataclass(frozen=True, slots=True)
class Decision:
    guest: PoolGuest
    rule: ResumeRule
    action: GuestAction


def paused_by_pool(guest: PoolGuest) -> bool:
    """Paused by an I/O error on one of its disks in this pool."""
    return guest.state is GuestState.PAUSED_IO_ERROR and bool(guest.io_error)


def first_rule(
    rules: tuple[ResumeRule, ...], pool: PoolSnapshot, guest: PoolGuest
) -> ResumeRule | None:
    for rule in rules:
        if rule.matches(pool.name, pool.type, guest.name):
            return rule
    return None


def decide(
    rules: tuple[ResumeRule, ...],
    pool: PoolSnapshot,
    guests: tuple[PoolGuest, ...],
    state: ResumeState,
    *,
    now: float,
) -> list[Decision]:
    """What to do now about the pool's guests; ``state`` is moved on in place."""
    decisions: list[Decision] = []
    present = set()
    resumed_one = False
    for guest in guests:
        present.add(guest.uuid)
        memory = state.guests.setdefault(guest.uuid, GuestMemory())
        rule = first_rule(rules, pool, guest)
        if not paused_by_pool(guest):
            memory.left_paused = False
            continue
        if rule is None:
            continue
        if memory.paused_at != guest.changed_at:
            memory.paused_at = guest.changed_at
            decisions.append(Decision(guest, rule, GuestAction.GUEST_PAUSED))
            if memory.resumed_at is not None and guest.changed_at - memory.resumed_at < rule.window:
                memory.left_paused = True
                decisions.append(Decision(guest, rule, GuestAction.GUEST_LEFT_PAUSED))
        if memory.acted_on == guest.changed_at or memory.left_paused:
            continue
        if rule.action is ResumeAction.KILL:
            memory.acted_on = guest.changed_at
            decisions.append(Decision(guest, rule, GuestAction.KILL))
        elif (
            rule.action is ResumeAction.RESUME
            # Free space says nothing about other errors (EIO: a failing disk).
            and guest.io_error == "enospc"
            and not resumed_one
            and now >= state.next_resume_at
            and pool.active
            # Figures read before the pause describe a pool that was not full yet.
            and pool.read_at > guest.changed_at
            and pool.free_bytes > rule.free_above
        ):
            resumed_one = True
            memory.acted_on = guest.changed_at
            memory.resumed_at = now
            state.next_resume_at = now + rule.delay
            decisions.append(Decision(guest, rule, GuestAction.RESUME))
    for uuid in set(state.guests) - present:
        del state.guests[uuid]
    return decisions


def resume_failed(state: ResumeState, guest: PoolGuest) -> None:
    """A resume libvirt refused: try this pause again after the delay."""
    memory = state.guests.get(guest.uuid)
    if memory is not None:
        memory.acted_on = None
        memory.resumed_at = None
