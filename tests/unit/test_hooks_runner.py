"""The hook runner: bounded queues and concurrency, close, dry run, reloads, and one final
result per submitted event, told to the callback it was submitted with."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog

from poolwatch.hooks import HookEvent, HookResult, HookRunner
from poolwatch.policies.rules import Hook, WebhookHook
from tests.unit.hook_runs import (
    KILL_GRACE,
    alarm,
    hook_actions,
    process_gone,
    running,
    sh,
    wait_for_line,
)


async def test_exec_concurrency_is_bounded(tmp_path: Path) -> None:
    spans = tmp_path / "spans"
    hook = sh('start=$(date +%s.%N); sleep 0.2; echo "$start $(date +%s.%N)" >> "$1"', spans)
    async with running([hook], max_concurrent_exec=2) as (runner, results):
        for index in range(6):
            runner.submit("h", alarm(episode=f"ep-{index}"), on_result=results)
        assert await results.wait(6) == ["ok"] * 6
    intervals = [tuple(map(float, line.split())) for line in spans.read_text().splitlines()]
    assert len(intervals) == 6
    most = max(sum(1 for s, e in intervals if s <= t < e) for t, _ in intervals)
    assert most == 2


async def test_full_exec_queue_drops_at_once(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    hook = sh('while [ ! -e "$1" ]; do sleep 0.01; done', gate)
    with structlog.testing.capture_logs() as logs:
        async with running([hook], max_concurrent_exec=1, queue_size=2) as (runner, results):
            for index in range(5):
                runner.submit("h", alarm(episode=f"ep-{index}"), on_result=results)
            # Synchronously, before any worker ran: two queued, three dropped.
            assert results.results == ["dropped"] * 3
            assert [event.episode for _, event, _ in results.calls] == ["ep-2", "ep-3", "ep-4"]
            gate.touch()
            assert await results.wait(5) == ["dropped"] * 3 + ["ok"] * 2
    dropped = [entry for entry in hook_actions(logs) if entry["result"] == "dropped"]
    assert [entry["reason"] for entry in dropped] == ["queue_full"] * 3


async def test_close_kills_running_hooks_and_their_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hook = sh('sleep 300 & echo "$$ $!" > "$1"; sleep 300', pids, timeout=60)
    async with running([hook]) as (runner, results):
        runner.submit("h", alarm(), on_result=results)
        await wait_for_line(pids)
        started = time.monotonic()
    assert time.monotonic() - started < KILL_GRACE + 1.0
    assert results.calls == []
    assert all(process_gone(int(pid)) for pid in pids.read_text().split())


async def test_dry_run_runs_nothing_and_logs_what_would_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hooks: list[Hook] = [
        sh('touch "$1"', marker),
        WebhookHook(name="w", url="http://u:pw@127.0.0.1:9/x", timeout=1, retries=0, headers=()),
    ]
    with structlog.testing.capture_logs() as logs:
        async with running(hooks, dry_run=True) as (runner, results):
            runner.submit("h", alarm(), on_result=results)
            runner.submit("w", alarm(), on_result=results)
            assert results.results == ["dry_run", "dry_run"]
            await asyncio.sleep(0.1)
    assert not marker.exists()
    skipped = hook_actions(logs)
    assert [entry["result"] for entry in skipped] == ["dry_run", "dry_run"]
    assert skipped[0]["argv"] == ["sh", "-c", 'touch "$1"', "hook", str(marker)]
    assert skipped[1]["url"] == "http://127.0.0.1:9/x"
    assert "pw" not in repr(skipped)


async def test_every_run_is_one_policy_action_whatever_its_result() -> None:
    hooks = [
        sh("true", name="fine"),
        sh("exit 1", name="bad"),
        sh("sleep 300", name="stuck", timeout=0.2),
    ]
    with structlog.testing.capture_logs() as logs:
        async with running(hooks, max_concurrent_exec=1, queue_size=3) as (runner, results):
            # Three fill the queue, the fourth is dropped, and "gone" names no hook.
            for name in ("fine", "bad", "stuck", "fine", "gone"):
                runner.submit(name, alarm(), on_result=results)
            await results.wait(5)
        async with running(hooks, dry_run=True) as (runner, results):
            runner.submit("fine", alarm(), on_result=results)
    # A log filter on event=policy_action sees every run, under the keys of the other actions.
    assert {entry["event"] for entry in logs} == {"policy_action"}
    actions = hook_actions(logs)
    assert sorted((entry["action"], entry["result"]) for entry in actions) == [
        ("hook:bad", "failed"),
        ("hook:fine", "dropped"),
        ("hook:fine", "dry_run"),
        ("hook:fine", "ok"),
        ("hook:gone", "failed"),
        ("hook:stuck", "timeout"),
    ]
    for entry in actions:
        assert (entry["host"], entry["pool"], entry["alarm"]) == ("alpha", "tank", "warning")
        expected = {"ok": "info", "dry_run": "info"}.get(entry["result"], "warning")
        # A hook that no longer exists is a bug of poolwatch's own, not of the hook.
        assert entry["log_level"] == ("error" if entry["action"] == "hook:gone" else expected)


async def test_a_guest_actions_run_names_the_guest() -> None:
    with structlog.testing.capture_logs() as logs:
        async with running([sh("true", name="pager")]) as (runner, results):
            runner.submit("pager", alarm(action="guest_paused", guest="db1"), on_result=results)
            runner.submit("pager", alarm(), on_result=results)
            await results.wait(2)
    runs = {entry["alarm"]: entry for entry in hook_actions(logs)}
    assert runs["guest_paused"]["guest"] == "db1"
    assert "guest" not in runs["warning"]  # a pool's alarm concerns no one guest


async def test_unknown_hook_is_failed() -> None:
    async with running({}) as (runner, results):
        runner.submit("nope", alarm(), on_result=results)
        assert results.results == ["failed"]


async def test_update_applies_to_later_events(tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with running([sh('echo one >> "$1"', out)]) as (runner, results):
        runner.submit("h", alarm(), on_result=results)
        runner.update({"h": sh('echo two >> "$1"', out)})
        runner.submit("h", alarm(), on_result=results)
        assert await results.wait(2) == ["ok", "ok"]
    assert sorted(out.read_text().split()) == ["one", "two"]


async def test_a_failing_result_callback_does_not_stop_the_worker(tmp_path: Path) -> None:
    seen: list[HookResult] = []
    both = asyncio.Event()

    def on_result(name: str, event: HookEvent, result: HookResult) -> None:
        seen.append(result)
        if len(seen) == 2:
            both.set()
        raise RuntimeError("callback bug")

    runner = HookRunner({"h": sh("true")}, max_concurrent_exec=1)
    await runner.start()
    try:
        runner.submit("h", alarm(), on_result=on_result)
        runner.submit("h", alarm(), on_result=on_result)
        await asyncio.wait_for(both.wait(), 5)
    finally:
        await runner.close()
    assert seen == ["ok", "ok"]


async def test_submit_after_close_is_dropped() -> None:
    async with running([sh("true")]) as (runner, results):
        pass
    runner.submit("h", alarm(), on_result=results)
    assert results.results == ["dropped"]
