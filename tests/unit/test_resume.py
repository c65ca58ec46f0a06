"""The resume policy without libvirt or a clock: announce, resume spaced, no resume loop."""

from __future__ import annotations

from dataclasses import replace

from poolwatch.model import GuestState, PoolGuest
from poolwatch.policies.resume import GuestAction, ResumeState, decide, resume_failed
from poolwatch.policies.rules import ResumeAction, ResumeRule, Selector
from tests.unit.factories import GIB, NOW, pool

FULL = pool("images", available=0, read_at=NOW + 1)
ROOMY = replace(FULL, available=10 * GIB, read_at=NOW + 10)


def rule(action: ResumeAction = ResumeAction.RESUME, **changes: object) -> ResumeRule:
    base = ResumeRule(
        selector=Selector("images"),
        guest="*",
        action=action,
        free_above=2 * GIB,
        delay=30.0,
        window=300.0,
        hooks=(),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def paused(name: str, at: float = NOW, reason: str = "enospc") -> PoolGuest:
    return PoolGuest(name, f"uuid-{name}", GuestState.PAUSED_IO_ERROR, ("vda",), reason, at)


def actions(decisions: list) -> list[tuple[str, GuestAction]]:  # type: ignore[type-arg]
    return [(d.guest.name, d.action) for d in decisions]


def test_announced_once_and_resumed_when_space_is_back() -> None:
    state = ResumeState()
    guests = (paused("a"),)
    assert actions(decide((rule(),), FULL, guests, state, now=NOW + 1)) == [
        ("a", GuestAction.GUEST_PAUSED)
    ]
    assert decide((rule(),), FULL, guests, state, now=NOW + 2) == []  # still full
    assert actions(decide((rule(),), ROOMY, guests, state, now=NOW + 11)) == [
        ("a", GuestAction.RESUME)
    ]
    assert decide((rule(),), ROOMY, guests, state, now=NOW + 12) == []  # once per pause


def test_resumes_are_spaced_one_guest_at_a_time() -> None:
    state = ResumeState()
    guests = (paused("a"), paused("b"))
    first = decide((rule(),), ROOMY, guests, state, now=NOW + 11)
    assert [a for a in actions(first) if a[1] is GuestAction.RESUME] == [("a", GuestAction.RESUME)]
    assert decide((rule(),), ROOMY, guests, state, now=NOW + 20) == []
    assert actions(decide((rule(),), ROOMY, guests, state, now=NOW + 41)) == [
        ("b", GuestAction.RESUME)
    ]


def test_a_guest_that_pauses_again_within_the_window_is_left_paused() -> None:
    state = ResumeState()
    decide((rule(),), ROOMY, (paused("a"),), state, now=NOW + 11)  # resumed at NOW + 11
    again = (paused("a", at=NOW + 60),)
    later = replace(ROOMY, read_at=NOW + 61)
    assert actions(decide((rule(),), later, again, state, now=NOW + 61)) == [
        ("a", GuestAction.GUEST_PAUSED),
        ("a", GuestAction.GUEST_LEFT_PAUSED),
    ]
    assert decide((rule(),), later, again, state, now=NOW + 500) == []


def test_leave_only_announces_and_kill_destroys_once() -> None:
    state = ResumeState()
    leave = (rule(ResumeAction.LEAVE),)
    assert actions(decide(leave, ROOMY, (paused("a"),), state, now=NOW + 11)) == [
        ("a", GuestAction.GUEST_PAUSED)
    ]
    state = ResumeState()
    kill = (rule(ResumeAction.KILL),)
    assert actions(decide(kill, FULL, (paused("a"),), state, now=NOW + 2)) == [
        ("a", GuestAction.GUEST_PAUSED),
        ("a", GuestAction.KILL),
    ]
    assert decide(kill, FULL, (paused("a"),), state, now=NOW + 3) == []


def test_what_is_not_resumed() -> None:
    state = ResumeState()
    eio = (paused("a", reason="eio"),)
    assert actions(decide((rule(),), ROOMY, eio, state, now=NOW + 11)) == [
        ("a", GuestAction.GUEST_PAUSED)
    ]
    # Figures read before the pause, a guest no rule matches, a running guest.
    stale = replace(ROOMY, read_at=NOW - 1)
    assert actions(decide((rule(),), stale, (paused("b"),), state, now=NOW + 11)) == [
        ("b", GuestAction.GUEST_PAUSED)
    ]
    assert decide((rule(guest="db-*"),), ROOMY, (paused("c"),), state, now=NOW + 11) == []
    running = (replace(paused("d"), state=GuestState.RUNNING, io_error=""),)
    assert decide((rule(),), ROOMY, running, state, now=NOW + 11) == []


def test_a_refused_resume_is_tried_again_after_the_delay() -> None:
    state = ResumeState()
    guest = paused("a")
    decide((rule(),), ROOMY, (guest,), state, now=NOW + 11)
    resume_failed(state, guest)
    assert decide((rule(),), ROOMY, (guest,), state, now=NOW + 20) == []
    assert actions(decide((rule(),), ROOMY, (guest,), state, now=NOW + 42)) == [
        ("a", GuestAction.RESUME)
    ]
