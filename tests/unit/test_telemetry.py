"""The telemetry: what it counts, what it keeps for /api/v1/events, and when ``changes`` moves."""

from __future__ import annotations

import pytest

from poolwatch.model import PoolEventKind
from poolwatch.telemetry import (
    GONE_POOL_RETENTION,
    MAX_COUNTED_POOLS,
    POLL_BUCKETS,
    Histogram,
    Telemetry,
)
from tests.unit.factories import HOST_A, NOW, FakeClock, event

KEY = "qemu:///system"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def telemetry(clock: FakeClock) -> Telemetry:
    telemetry = Telemetry(clock=clock)
    telemetry.add_connection(KEY, name=HOST_A)
    return telemetry


def test_histogram_counts_each_observation_in_its_first_bucket() -> None:
    histogram = Histogram()
    for seconds in (0.0005, 0.001, 0.003, 0.2, 45.0):
        histogram.observe(seconds)
    assert histogram.buckets == POLL_BUCKETS
    assert histogram.counts[POLL_BUCKETS.index(0.001)] == 2  # a bound is inclusive
    assert histogram.counts[POLL_BUCKETS.index(0.005)] == 1
    assert histogram.counts[POLL_BUCKETS.index(0.25)] == 1
    assert sum(histogram.counts) == 4  # 45 s is above every bound: only in count
    assert histogram.count == 5
    assert histogram.sum == pytest.approx(45.2045)


def test_polls_are_timed_by_kind_and_failures_counted(telemetry: Telemetry) -> None:
    telemetry.record_poll(KEY, "info", 0.003, ok=True)
    telemetry.record_poll(KEY, "info", 0.2, ok=False)
    telemetry.record_poll(KEY, "volumes", 1.5, ok=True)
    stats = telemetry.stats(KEY)
    assert {kind: h.count for kind, h in stats.poll_durations.items()} == {"info": 2, "volumes": 1}
    assert stats.poll_errors == {"info": 1}


def test_a_poll_of_a_removed_connection_is_not_counted(telemetry: Telemetry) -> None:
    telemetry.remove_connection(KEY)
    changes = telemetry.changes
    telemetry.record_poll(KEY, "info", 0.01, ok=True)  # a reload removed it mid-poll
    assert telemetry.changes == changes
    with pytest.raises(KeyError):
        telemetry.stats(KEY)


def test_connects_and_disconnects_are_counted_and_kept(
    telemetry: Telemetry, clock: FakeClock
) -> None:
    telemetry.record_connect(KEY, name="kvm01")
    clock.now += 5
    telemetry.record_disconnect(KEY, reason="eof")
    stats = telemetry.stats(KEY)
    assert (stats.connects, stats.disconnects) == (1, 1)
    connected, disconnected = telemetry.activity()
    assert (connected.at, connected.host, connected.kind) == (NOW, "kvm01", "connected")
    # The host name told at the connect names what follows.
    assert (disconnected.at, disconnected.host, disconnected.kind) == (
        NOW + 5,
        "kvm01",
        "disconnected",
    )
    assert disconnected.detail == "eof"


def test_counters_of_a_connection_watched_again_stay(telemetry: Telemetry) -> None:
    telemetry.record_connect(KEY, name=HOST_A)
    telemetry.add_connection(KEY, name=HOST_A)
    assert telemetry.stats(KEY).connects == 1


def test_pool_events_are_counted_by_pool_and_kind(telemetry: Telemetry) -> None:
    for kind in (PoolEventKind.STARTED, PoolEventKind.REFRESHED, PoolEventKind.REFRESHED):
        telemetry.record_pool_event(KEY, event("default", kind))
    assert telemetry.stats(KEY).pool_events == {
        "default": {PoolEventKind.STARTED: 1, PoolEventKind.REFRESHED: 2}
    }
    last = telemetry.activity()[-1]
    assert (last.at, last.host, last.kind, last.pool) == (NOW, HOST_A, "refreshed", "default")


def test_event_counters_of_churning_pools_are_bounded(telemetry: Telemetry) -> None:
    telemetry.record_pool_event(KEY, event("kept", PoolEventKind.STARTED))
    for n in range(MAX_COUNTED_POOLS + 10):
        if n == MAX_COUNTED_POOLS // 2:
            telemetry.record_pool_event(KEY, event("kept", PoolEventKind.STOPPED))
        telemetry.record_pool_event(KEY, event(f"transient-{n}", PoolEventKind.UNDEFINED))
    counts = telemetry.stats(KEY).pool_events
    assert len(counts) == MAX_COUNTED_POOLS
    # The oldest pools go first; an event makes a pool young again.
    assert "transient-0" not in counts
    assert counts["kept"] == {PoolEventKind.STARTED: 1, PoolEventKind.STOPPED: 1}


def test_counters_of_undefined_pools_go_after_the_retention(
    telemetry: Telemetry, clock: FakeClock
) -> None:
    """1,000 pools defined, started, stopped and undefined used to leave 4,000 series forever."""
    kinds = (PoolEventKind.DEFINED, PoolEventKind.STARTED, PoolEventKind.STOPPED)
    for n in range(1000):
        for kind in (*kinds, PoolEventKind.UNDEFINED):
            telemetry.record_pool_event(KEY, event(f"churn-{n}", kind))
    telemetry.record_pool_event(KEY, event("stays", PoolEventKind.STARTED))
    telemetry.record_action(KEY, "churn-1", "start_pool", "ok")
    telemetry.record_guest_io_error(KEY, pool="churn-2", reason="enospc")
    stats = telemetry.stats(KEY)
    clock.now += GONE_POOL_RETENTION - 1
    telemetry.record_poll(KEY, "info", 0.01, ok=True)
    # Within the hour: every undefined pool's counters, for increase(...[1h]).
    assert len(stats.pool_events) == 1001
    clock.now += 1
    before = telemetry.changes
    telemetry.record_poll(KEY, "info", 0.01, ok=True)
    assert list(stats.pool_events) == ["stays"]
    assert not stats.actions
    assert not stats.autostart_attempts
    assert not stats.guest_io_errors
    assert telemetry.changes > before  # /metrics is rendered again without them


def test_a_pool_defined_again_keeps_its_counters(telemetry: Telemetry, clock: FakeClock) -> None:
    telemetry.record_pool_event(KEY, event("images", PoolEventKind.UNDEFINED))
    clock.now += 60
    telemetry.record_pool_event(KEY, event("images", PoolEventKind.DEFINED))
    clock.now += GONE_POOL_RETENTION
    telemetry.record_poll(KEY, "info", 0.01, ok=True)
    assert telemetry.stats(KEY).pool_events["images"] == {
        PoolEventKind.UNDEFINED: 1,
        PoolEventKind.DEFINED: 1,
    }


def test_a_pool_gone_without_an_event_expires_too(telemetry: Telemetry, clock: FakeClock) -> None:
    # A transient pool that stopped: libvirt sends "stopped", then the pool is no more.
    telemetry.record_pool_event(KEY, event("transient", PoolEventKind.STOPPED))
    telemetry.record_pool_gone(KEY, "transient")
    telemetry.record_pool_gone(KEY, "never-counted")
    clock.now += GONE_POOL_RETENTION
    telemetry.record_poll(KEY, "info", 0.01, ok=True)
    assert not telemetry.stats(KEY).pool_events
    assert not telemetry.stats(KEY).gone


def test_actions_are_counted_and_kept(telemetry: Telemetry, clock: FakeClock) -> None:
    telemetry.record_connect(KEY, name="kvm01")
    clock.now += 7
    telemetry.record_action(KEY, "images", "start_pool", "failed", detail="no such directory")
    telemetry.record_action(KEY, "images", "start_pool", "ok")
    telemetry.record_action(KEY, "images", "start_pool", "dry_run")
    telemetry.record_action(KEY, "images", "hook:page", "timeout", detail="warning")
    stats = telemetry.stats(KEY)
    assert stats.actions == {
        ("images", "start_pool", "failed"): 1,
        ("images", "start_pool", "ok"): 1,
        ("images", "start_pool", "dry_run"): 1,
        ("images", "hook:page", "timeout"): 1,
    }
    # Attempts are the starts that were tried: not those a dry run only logged.
    assert stats.autostart_attempts == {("images", "failed"): 1, ("images", "ok"): 1}
    failed = telemetry.activity()[1]
    assert (failed.at, failed.host, failed.kind, failed.pool) == (
        NOW + 7,
        "kvm01",
        "action",
        "images",
    )
    assert (failed.action, failed.result, failed.detail) == (
        "start_pool",
        "failed",
        "no such directory",
    )


def test_an_action_for_an_unknown_connection_is_dropped(telemetry: Telemetry) -> None:
    changes = telemetry.changes
    telemetry.record_action("", "images", "hook:page", "ok")  # its host went away meanwhile
    assert telemetry.activity() == []
    assert telemetry.changes == changes


def test_activity_keeps_the_most_recent(clock: FakeClock) -> None:
    telemetry = Telemetry(clock=clock, activity_history=3)
    telemetry.add_connection(KEY, name=HOST_A)
    for n in range(5):
        telemetry.record_pool_event(KEY, event(f"p{n}", PoolEventKind.STARTED))
    assert [a.pool for a in telemetry.activity()] == ["p2", "p3", "p4"]


def test_reload_outcome(telemetry: Telemetry, clock: FakeClock) -> None:
    # Loading the configuration at start counts as a successful reload.
    assert (telemetry.last_reload_successful, telemetry.last_reload_success_at) == (True, NOW)
    clock.now += 60
    telemetry.record_reload(ok=False)
    assert (telemetry.last_reload_successful, telemetry.last_reload_success_at) == (False, NOW)
    clock.now += 60
    telemetry.record_reload(ok=True)
    assert (telemetry.last_reload_successful, telemetry.last_reload_success_at) == (
        True,
        NOW + 120,
    )


def test_web_config_reload_outcome(telemetry: Telemetry, clock: FakeClock) -> None:
    assert telemetry.web_config_last_reload_successful is None  # no web config file
    telemetry.record_web_config_reload(True)
    clock.now += 60
    telemetry.record_web_config_reload(False)
    assert (
        telemetry.web_config_last_reload_successful,
        telemetry.web_config_last_reload_success_at,
    ) == (False, NOW)


def test_changes_move_with_everything_but_a_pool_event(telemetry: Telemetry) -> None:
    """A pool event is followed by the re-read of its pool, which moves the inventory's
    generation: counting the event as well would cost a second /metrics render."""
    steps = [
        lambda: telemetry.record_connect(KEY, name=HOST_A),
        lambda: telemetry.record_poll(KEY, "info", 0.01, ok=True),
        lambda: telemetry.record_action(KEY, "images", "start_pool", "ok"),
        lambda: telemetry.record_reload(ok=True),
        lambda: telemetry.record_disconnect(KEY, reason="eof"),
        lambda: telemetry.remove_connection(KEY),
        lambda: telemetry.add_connection(KEY, name=HOST_A),
    ]
    for step in steps:
        before = telemetry.changes
        step()
        assert telemetry.changes > before
    before = telemetry.changes
    telemetry.record_pool_event(KEY, event("images", PoolEventKind.STOPPED))
    assert telemetry.changes == before
