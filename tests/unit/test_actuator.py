"""The actuator over an in-memory inventory: what it carries out, once, and what it publishes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

import pytest

import poolwatch.actuator.actuator as actuator_module
from poolwatch.actuator import Actuator, PolicyRules
from poolwatch.hooks import HookEvent, ResultCallback
from poolwatch.inventory import Inventory
from poolwatch.model import FilesystemStat, PoolSnapshot, PoolState
from poolwatch.policies.rules import (
    AutostartMode,
    AutostartRule,
    FreeBelow,
    Selector,
    ThresholdRule,
    UsedRatio,
)
from poolwatch.source import SourceError
from poolwatch.telemetry import Telemetry

GiB = 1024**3
KEY = "kvm01"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeSource:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.flagged: list[str] = []
        self.fail_start: str | None = None
        self.flag_off: set[str] = set()  # pools whose flag libvirt has off by now

    async def start_flagged_pool(self, name: str) -> bool:
        if name in self.flag_off:
            return False
        self.started.append(name)
        if self.fail_start:
            raise SourceError(self.fail_start, code=38)
        return True

    async def set_autostart(self, name: str, *, enabled: bool) -> None:
        self.flagged.append(name)


class FakeConnection:
    def __init__(self) -> None:
        self.source = FakeSource()
        self.rereads: list[str] = []
        self.urgent: frozenset[str] = frozenset()

    def reread(self, pool: str) -> None:
        self.rereads.append(pool)

    def set_urgent(self, pools: frozenset[str]) -> None:
        self.urgent = pools


class FakeHooks:
    def __init__(self) -> None:
        self.submitted: list[tuple[str, HookEvent]] = []
        self.callbacks: list[ResultCallback] = []

    def submit(self, name: str, event: HookEvent, *, on_result: ResultCallback) -> None:
        self.submitted.append((name, event))
        self.callbacks.append(on_result)

    def update(self, hooks: Any) -> None:
        pass


def pool(
    name: str = "images", *, used: float = 0.5, active: bool = True, **kw: Any
) -> PoolSnapshot:
    capacity = 100 * GiB
    snapshot = PoolSnapshot(
        host="kvm01",
        name=name,
        uuid=f"uuid-{name}",
        type="dir",
        target_path=f"/srv/{name}",
        source="",
        state=PoolState.RUNNING if active else PoolState.INACTIVE,
        active=active,
        persistent=True,
        autostart=True,
        capacity=capacity,
        allocation=int(capacity * used),
        available=int(capacity * (1 - used)),
        read_at=kw.pop("read_at", 0.0),
    )
    return dataclasses.replace(snapshot, **kw)


THRESHOLD = ThresholdRule(
    selector=Selector(),
    warning=UsedRatio(0.8),
    critical=UsedRatio(0.9),
    clear_ratio=0.02,
    clear_bytes=0,
    hold=0.0,
    time_to_full_warning=None,
    time_to_full_critical=None,
    forecast_window=3600.0,
    hooks=("pager",),
)


def autostart_rule(**kw: Any) -> AutostartRule:
    fields: dict[str, Any] = {
        "selector": Selector(),
        "mode": AutostartMode.ENFORCE,
        "ensure_flag": False,
        "require_mount": False,
        "max_attempts": 2,
        "backoff_initial": 10.0,
        "backoff_max": 60.0,
        "hooks": ("pager",),
    }
    fields.update(kw)
    return AutostartRule(**fields)


class World:
    def __init__(self, rules: PolicyRules, *, dry_run: bool = False) -> None:
        self.clock = FakeClock()
        self.inventory = Inventory(clock=self.clock)
        self.telemetry = Telemetry(clock=self.clock)
        self.connection = FakeConnection()
        self.hooks = FakeHooks()
        self.actuator = Actuator(
            inventory=self.inventory,
            telemetry=self.telemetry,
            connections=lambda key: self.connection if key == KEY else None,
            rules=rules,
            hooks=self.hooks,  # type: ignore[arg-type]
            dry_run=dry_run,
            clock=self.clock,
        )
        self.inventory.add_host(KEY, name="kvm01", uri="qemu:///system")
        self.inventory.set_connected(KEY, name="kvm01")
        self.telemetry.add_connection(KEY, name="kvm01")

    def show(self, *pools: PoolSnapshot, after: float = 1.0) -> None:
        """A poll result: the pools as read ``after`` seconds later."""
        self.clock.now += after
        self.inventory.replace_pools(
            KEY, {p.name: dataclasses.replace(p, read_at=self.clock.now) for p in pools}
        )

    async def evaluate(self) -> None:
        self.actuator.evaluate()
        await asyncio.sleep(0)  # let spawned actions run
        await asyncio.sleep(0)


async def test_one_hook_per_episode_action_however_often_it_is_evaluated() -> None:
    world = World(PolicyRules(thresholds=(THRESHOLD,)))
    for used in (0.5, 0.85, 0.86, 0.85, 0.95, 0.95, 0.5, 0.5):
        world.show(pool(used=used))
        for _ in range(3):
            await world.evaluate()
    actions = [event.action for _, event in world.hooks.submitted]
    assert actions == ["warning", "critical", "recovery"]
    assert len({event.episode for _, event in world.hooks.submitted}) == 1
    assert world.inventory.policies(KEY)["images"].level == 0


async def test_level_and_forecast_are_published() -> None:
    world = World(PolicyRules(thresholds=(THRESHOLD,)))
    for step in range(20):  # 0.1 % of 100 GiB every 30 s
        world.show(pool(used=0.5 + step * 0.001), after=30)
        await world.evaluate()
    policy = world.inventory.policies(KEY)["images"]
    assert policy.level == 0
    assert policy.time_to_full == pytest.approx(481 * 30, rel=0.05)
    assert policy.autostart_mode is None


async def test_the_fill_history_is_published_for_the_chart() -> None:
    world = World(PolicyRules())  # every pool has a history, with a rule or without
    for step in range(3):
        # Two minutes apart: the forecast's history keeps every reading (it thins only
        # readings closer than a minute in its default six-hour window).
        world.show(pool(used=0.5 + step * 0.01), after=120)
        await world.evaluate()
        await world.evaluate()  # no new reading: no new point
    points = world.inventory.policies(KEY)["images"].fill_history
    now = world.clock.now
    assert points == ((now - 240, 0.5), (now - 120, 0.51), (now, 0.52))


async def test_enforce_starts_a_stopped_pool_once() -> None:
    world = World(PolicyRules(autostart=(autostart_rule(),)))
    world.show(pool(active=False))
    for _ in range(5):
        await world.evaluate()
    # Until a new reading arrives the pool still looks stopped: no second start.
    assert world.connection.source.started == ["images"]
    assert world.connection.rereads == ["images"]
    stats = world.telemetry.stats(KEY)
    assert stats.actions[("images", "start_pool", "ok")] == 1
    assert stats.autostart_attempts[("images", "ok")] == 1


async def test_enforce_leaves_a_pool_down_whose_flag_was_disabled_after_the_last_read() -> None:
    """The operator's way to keep a pool down: `pool-autostart --disable`, then `pool-destroy`.
    The flag sends no event, so the stop can show before a read brings the flag: libvirt's own
    flag, asked at the start, decides."""
    world = World(PolicyRules(autostart=(autostart_rule(),)))
    world.show(pool())
    await world.evaluate()
    world.connection.source.flag_off.add("images")
    # The stop as the watcher shows it at once on libvirt's event: the last read's flag.
    world.clock.now += 1
    stale = world.inventory.hosts[KEY].pools["images"]
    world.inventory.put_pool(
        KEY, dataclasses.replace(stale, state=PoolState.INACTIVE, active=False)
    )
    for _ in range(5):
        await world.evaluate()
        world.clock.now += 1
    assert world.connection.source.started == []
    assert world.connection.rereads == ["images"]  # asked once, until that read arrives
    stats = world.telemetry.stats(KEY)
    assert stats.actions == {}
    assert stats.autostart_attempts == {}
    assert world.inventory.policies(KEY)["images"].last_action is None
    # The read brings the flag: the pool stays down for good.
    world.show(pool(active=False, autostart=False))
    for _ in range(5):
        await world.evaluate()
        world.clock.now += 1
    assert world.connection.source.started == []


async def test_failed_starts_back_off_and_give_up_with_a_hook() -> None:
    world = World(PolicyRules(autostart=(autostart_rule(max_attempts=2),)))
    world.connection.source.fail_start = "cannot open directory"
    world.show(pool(active=False))
    for _ in range(200):
        await world.evaluate()
        world.clock.now += 1
    assert world.connection.source.started == ["images", "images"]
    policy = world.inventory.policies(KEY)["images"]
    assert policy.autostart_gave_up
    assert policy.last_error == "cannot open directory"
    assert [event.action for _, event in world.hooks.submitted] == ["gave_up"]
    # A changed rule lifts the give-up.
    world.actuator.update_rules(PolicyRules(autostart=(autostart_rule(max_attempts=3),)))
    await world.evaluate()
    assert not world.inventory.policies(KEY)["images"].autostart_gave_up


async def test_dry_run_changes_nothing_and_says_so_once_per_backoff() -> None:
    world = World(PolicyRules(autostart=(autostart_rule(),)), dry_run=True)
    world.show(pool(active=False))
    for _ in range(10):
        await world.evaluate()
    assert world.connection.source.started == []
    assert world.telemetry.stats(KEY).actions == {("images", "start_pool", "dry_run"): 1}


async def test_boot_mode_starts_after_the_resync_that_follows_a_connect() -> None:
    world = World(PolicyRules(autostart=(autostart_rule(mode=AutostartMode.BOOT),)))
    world.show(pool(active=False))
    await world.evaluate()
    assert world.connection.source.started == ["images"]
    world.show(pool(active=True))
    await world.evaluate()
    world.show(pool(active=False))  # stopped later: boot mode leaves it
    await world.evaluate()
    assert world.connection.source.started == ["images"]
    world.inventory.set_disconnected(KEY)
    world.clock.now += 5
    world.inventory.set_connected(KEY, name="kvm01")
    world.show(pool(active=False))  # the resync after the reconnect
    await world.evaluate()
    assert world.connection.source.started == ["images", "images"]


async def test_ensure_flag_sets_the_flag_and_rereads_the_pool() -> None:
    rule = autostart_rule(mode=AutostartMode.OFF, ensure_flag=True)
    world = World(PolicyRules(autostart=(rule,)))
    world.show(pool(autostart=False))
    await world.evaluate()
    assert world.connection.source.flagged == ["images"]
    assert world.connection.rereads == ["images"]  # libvirt sends no event for the flag


async def test_pools_near_a_limit_are_marked_for_sooner_refresh() -> None:
    world = World(PolicyRules(thresholds=(THRESHOLD,)))
    world.show(pool("far", used=0.5), pool("near", used=0.77))
    await world.evaluate()
    assert world.connection.urgent == frozenset({"near"})


def on_ext4(used: float, name: str = "images") -> PoolSnapshot:
    """A dir pool on an ext4 keeping 5 % for root: libvirt's available counts those blocks,
    the filesystem's f_bavail (what QEMU can write) does not."""
    capacity = 100 * GiB
    fs = FilesystemStat(
        avail_bytes=int(capacity * (0.95 - used)), size_bytes=capacity, device="8:1"
    )
    return pool(name, used=used, filesystem=fs)


async def test_ratio_limits_and_their_hooks_use_allocation_over_capacity() -> None:
    world = World(PolicyRules(thresholds=(THRESHOLD,)))
    world.show(on_ext4(0.77))  # 1 - free / capacity is 0.82, above the warning at 80 %
    await world.evaluate()
    assert world.inventory.policies(KEY)["images"].level == 0
    assert world.hooks.submitted == []
    world.show(on_ext4(0.81))
    await world.evaluate()
    [(_, event)] = world.hooks.submitted
    assert event.action == "warning"
    assert event.used_ratio == pytest.approx(0.81)  # = allocation / capacity, as exported
    assert event.available_bytes == pytest.approx(14 * GiB)  # what a guest can still write


async def test_free_space_limits_use_what_a_guest_can_write() -> None:
    rule = dataclasses.replace(THRESHOLD, warning=FreeBelow(18 * GiB), critical=None)
    world = World(PolicyRules(thresholds=(rule,)))
    world.show(on_ext4(0.78))  # libvirt: 22 GiB available; the filesystem: 17 GiB for QEMU
    await world.evaluate()
    assert world.inventory.policies(KEY)["images"].level == 1


async def test_near_a_limit_is_judged_by_the_figure_of_that_limit() -> None:
    world = World(PolicyRules(thresholds=(THRESHOLD,)))
    # Within 5 points of the warning at 80 % by allocation / capacity ("near"), or only by
    # 1 - free / capacity ("far": 0.72 allocated, 0.77 by free space).
    world.show(on_ext4(0.72, "far"), on_ext4(0.76, "near"))
    await world.evaluate()
    assert world.connection.urgent == frozenset({"near"})
    free_rule = dataclasses.replace(THRESHOLD, warning=FreeBelow(10 * GiB), critical=None)
    world.actuator.update_rules(PolicyRules(thresholds=(free_rule,)))
    # Within twice the limit by free bytes (19 GiB), though capacity - allocation is 24 GiB.
    world.show(on_ext4(0.60, "far"), on_ext4(0.76, "near"))
    await world.evaluate()
    assert world.connection.urgent == frozenset({"near"})


async def test_undefined_pool_loses_its_policy_status() -> None:
    world = World(PolicyRules(thresholds=(THRESHOLD,)))
    world.show(pool("a"), pool("b"))
    await world.evaluate()
    world.show(pool("a"))
    await world.evaluate()
    assert set(world.inventory.policies(KEY)) == {"a"}


async def test_hook_results_reach_the_pool_of_the_connection_that_raised_them() -> None:
    world = World(PolicyRules(thresholds=(THRESHOLD,)))
    # A second connection to a host reporting the same name: only the key tells them apart.
    other = "kvm01-again"
    world.inventory.add_host(other, name="kvm01", uri="qemu+ssh://kvm01/system")
    world.inventory.set_connected(other, name="kvm01")
    world.telemetry.add_connection(other, name="kvm01")
    world.show(pool(used=0.5))
    world.inventory.replace_pools(other, {"images": pool(used=0.85, read_at=world.clock.now)})
    await world.evaluate()
    [(name, event)] = world.hooks.submitted
    assert (name, event.connection, event.action) == ("pager", other, "warning")
    world.clock.now += 3
    world.hooks.callbacks[0](name, event, "ok")
    assert world.telemetry.stats(other).actions[("images", "hook:pager", "ok")] == 1
    assert ("images", "hook:pager", "ok") not in world.telemetry.stats(KEY).actions
    hook_finished_at = world.clock.now
    await world.evaluate()  # the pool's published policy tells the last action
    policy = world.inventory.policies(other)["images"]
    assert (policy.last_action, policy.last_action_at) == (
        "hook:pager warning ok",
        hook_finished_at,
    )
    assert world.inventory.policies(KEY)["images"].last_action is None


async def evaluations(
    world: World, monkeypatch: pytest.MonkeyPatch, *, reload_to: Any
) -> list[int]:
    """How often the running actuator evaluates an unchanged inventory: before and after a
    reload to ``reload_to`` (None: no reload). Ticks are shortened to keep this quick."""
    monkeypatch.setattr(actuator_module, "TICK", 0.01)
    monkeypatch.setattr(actuator_module, "MIN_GAP", 0.0)
    counts = [0]
    evaluate = world.actuator.evaluate

    def counted(*, changed_only: bool = False) -> None:
        counts[-1] += 1
        evaluate(changed_only=changed_only)

    monkeypatch.setattr(world.actuator, "evaluate", counted)
    world.show(pool(used=0.5))
    running = asyncio.create_task(world.actuator.run())
    await asyncio.sleep(0.2)
    if reload_to is not None:
        counts.append(0)
        world.actuator.update_rules(reload_to)
        await asyncio.sleep(0.2)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    return counts


async def test_an_idle_host_without_rules_is_not_evaluated_every_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing waits on a timer without rules: evaluating every pool every second would only
    # cost CPU on an idle host. Once a reload brings rules, the ticks (and their timers) resume.
    world = World(PolicyRules())
    before, after = await evaluations(
        world, monkeypatch, reload_to=PolicyRules(thresholds=(THRESHOLD,))
    )
    # The first look, and the one after it published the pool's policy; then nothing until the
    # inventory changes (a tick of 10 ms would have made about 20).
    assert before <= 2
    assert after >= 5


async def test_rules_with_timers_are_evaluated_every_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(PolicyRules(thresholds=(THRESHOLD,)))
    [count] = await evaluations(world, monkeypatch, reload_to=None)
    assert count >= 5


async def test_a_change_to_one_pool_evaluates_that_pool_and_a_full_pass_every_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An event on one pool of 500 must not cost an evaluation of all 500 on the loop; the
    # threshold crossed by the changed pool is acted on at once all the same.
    world = World(PolicyRules(thresholds=(THRESHOLD,)))
    world.show(*(pool(f"p{i}") for i in range(5)))
    world.actuator.evaluate()
    looked_at: list[str] = []
    evaluate_pool = world.actuator._evaluate_pool

    def counted(ctx: Any) -> bool:
        looked_at.append(ctx.pool.name)
        return evaluate_pool(ctx)

    monkeypatch.setattr(world.actuator, "_evaluate_pool", counted)
    world.inventory.put_pool(KEY, pool("p3", used=0.95))
    world.actuator.evaluate(changed_only=True)
    assert looked_at == ["p3"]
    assert world.inventory.policies(KEY)["p3"].level == 2
    world.actuator.evaluate(changed_only=True)  # nothing changed since
    assert looked_at == ["p3"]
    looked_at.clear()
    world.actuator.evaluate()  # a tick: every pool, for timers
    assert sorted(looked_at) == [f"p{i}" for i in range(5)]
    looked_at.clear()
    world.inventory.set_disconnected(KEY)  # the host's state changed: every pool again
    world.inventory.set_connected(KEY, name="kvm01")
    world.actuator.evaluate(changed_only=True)
    assert sorted(looked_at) == [f"p{i}" for i in range(5)]
