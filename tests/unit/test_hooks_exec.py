"""Exec hooks run for real, as real process groups: their environment, output, exit and kill."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import structlog

from poolwatch.hooks.execute import OUTPUT_TAIL_BYTES, hook_environment, run_exec
from poolwatch.policies.rules import ExecHook
from tests.helpers import unavailable
from tests.unit.hook_runs import (
    HOSTILE_POOL,
    KILL_GRACE,
    alarm,
    has_line,
    hook_actions,
    orphans_reaped_late,
    process_gone,
    running,
    running_members,
    sh,
    wait_for_line,
)


async def test_exec_hook_gets_the_event_in_its_environment_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOLWATCH_TEST_DAEMON_SECRET", "do-not-pass")
    out = tmp_path / "env"
    async with running([sh('env -0 > "$1"', out)]) as (runner, results):
        runner.submit("h", alarm(time_to_full_seconds=None), on_result=results)
        assert await results.wait(1) == ["ok"]
    env = dict(item.split("=", 1) for item in out.read_text().split("\0") if item)
    assert env["PATH"] == os.environ["PATH"]
    assert "POOLWATCH_TEST_DAEMON_SECRET" not in env
    poolwatch = {name: value for name, value in env.items() if name.startswith("POOLWATCH_")}
    run = poolwatch.pop("POOLWATCH_HOOK_RUN")  # a token of this run, to find its processes
    assert len(run) == 16
    assert poolwatch == {
        "POOLWATCH_ACTION": "warning",
        "POOLWATCH_HOST": "alpha",
        "POOLWATCH_POOL": "tank",
        "POOLWATCH_POOL_UUID": "8f0c0d8e-2f4b-4d5e-9a51-0c1f2a3b4c5d",
        "POOLWATCH_LEVEL": "warning",
        "POOLWATCH_PREVIOUS_LEVEL": "ok",
        "POOLWATCH_USED_RATIO": "0.873",
        "POOLWATCH_AVAILABLE_BYTES": "21474836480",
        "POOLWATCH_TIME_TO_FULL_SECONDS": "",
        "POOLWATCH_EPISODE": "ep-1",
        "POOLWATCH_GUEST": "",
        "POOLWATCH_GUESTS": "",
    }


def test_environment_formats_figures_for_shells() -> None:
    env = hook_environment(
        alarm(used_ratio=None, available_bytes=None, time_to_full_seconds=86399.7),
        inherited={"PATH": "/bin", "LANG": "C.UTF-8", "HOME": "/root"},
    )
    assert env["PATH"] == "/bin"
    assert env["LANG"] == "C.UTF-8"
    assert "HOME" not in env
    assert env["POOLWATCH_USED_RATIO"] == ""
    assert env["POOLWATCH_AVAILABLE_BYTES"] == ""
    assert env["POOLWATCH_TIME_TO_FULL_SECONDS"] == "86400"
    assert (
        hook_environment(alarm(time_to_full_seconds=float("inf")), inherited={})[
            "POOLWATCH_TIME_TO_FULL_SECONDS"
        ]
        == ""
    )


async def test_hostile_pool_name_arrives_verbatim_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where `touch x` would land if anything evaluated the name
    out, host_out = tmp_path / "pool", tmp_path / "host"
    hook = sh(
        'printf %s "$POOLWATCH_POOL" > "$1"; printf %s "$POOLWATCH_HOST" > "$2"', out, host_out
    )
    async with running([hook]) as (runner, results):
        runner.submit("h", alarm(pool=HOSTILE_POOL, host=HOSTILE_POOL), on_result=results)
        assert await results.wait(1) == ["ok"]
    assert out.read_bytes().decode() == HOSTILE_POOL
    assert host_out.read_bytes().decode() == HOSTILE_POOL
    assert not (tmp_path / "x").exists()


async def test_nonzero_exit_is_failed_and_its_stderr_is_logged() -> None:
    with structlog.testing.capture_logs() as logs:
        async with running([sh("echo working; echo 'disk on fire' >&2; exit 3")]) as (r, results):
            r.submit("h", alarm(), on_result=results)
            assert await results.wait(1) == ["failed"]
    [finished] = hook_actions(logs)
    assert finished["result"] == "failed"
    assert finished["exit_code"] == 3
    assert finished["stdout"] == "working\n"
    assert finished["stderr"] == "disk on fire\n"
    assert finished["action"] == "hook:h"
    assert finished["pool"] == "tank"
    assert finished["alarm"] == "warning"
    assert finished["attempts"] == 1
    assert finished["duration"] >= 0


async def test_missing_program_is_failed() -> None:
    hook = ExecHook(name="h", argv=("/nonexistent/poolwatch-hook",), timeout=5)
    with structlog.testing.capture_logs() as logs:
        async with running([hook]) as (runner, results):
            runner.submit("h", alarm(), on_result=results)
            assert await results.wait(1) == ["failed"]
    [finished] = hook_actions(logs)
    assert "FileNotFoundError" in finished["error"]


async def test_chatty_hook_keeps_only_a_tail_of_its_output() -> None:
    hook = sh("head -c 3000000 /dev/zero | tr '\\0' a; echo; echo the-end")
    with structlog.testing.capture_logs() as logs:
        async with running([hook]) as (runner, results):
            runner.submit("h", alarm(), on_result=results)
            assert await results.wait(1) == ["ok"]
    [finished] = hook_actions(logs)
    assert len(finished["stdout"]) == OUTPUT_TAIL_BYTES
    assert finished["stdout"].endswith("aaa\nthe-end\n")


async def test_timeout_kills_the_hook_and_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The background sleep inherits the output pipes: reading them to EOF would wait forever.
    hook = sh('sleep 300 & echo "$$ $!" > "$1"; sleep 300', pids, timeout=0.3)
    async with running([hook]) as (runner, results):
        started = time.monotonic()
        runner.submit("h", alarm(), on_result=results)
        assert await results.wait(1) == ["timeout"]
        elapsed = time.monotonic() - started
    assert elapsed < 0.3 + KILL_GRACE + 1.0
    leader, child = map(int, pids.read_text().split())
    assert process_gone(leader)
    assert process_gone(child)


async def test_a_killed_hook_reports_the_time_it_ran_not_the_kill_grace(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    timeout, grace = 0.5, 5.0
    hook = sh('sleep 300 & echo "$$ $!" > "$1"; sleep 300', pids, timeout=timeout)
    # The killed child is an orphan: a zombie in the hook's group until init reaps it, which
    # some containers' init does only seconds later. It runs no more: the hook ended with it.
    with orphans_reaped_late(), structlog.testing.capture_logs() as logs:
        async with running([hook], exec_kill_grace=grace) as (runner, results):
            runner.submit("h", alarm(), on_result=results)
            assert await results.wait(1, within=2 * grace) == ["timeout"]
        leader, child = map(int, pids.read_text().split())
        assert process_gone(child)
        assert running_members(leader) == []
    [action] = hook_actions(logs)
    assert action["killed"] is True
    assert timeout <= action["duration"] < timeout + grace / 5


async def test_hook_that_exits_but_leaves_a_child_on_its_pipes_is_bounded(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    hook = sh('sleep 300 & echo "$!" > "$1"; exit 0', pids, timeout=0.3)
    with structlog.testing.capture_logs() as logs:
        async with running([hook]) as (runner, results):
            runner.submit("h", alarm(), on_result=results)
            # The hook's own verdict stands; its leftover was killed when the time ran out.
            assert await results.wait(1) == ["ok"]
    assert process_gone(int(pids.read_text()))
    [finished] = hook_actions(logs)
    assert finished["killed"] is True


async def test_hook_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hook = sh('trap \'\' TERM; echo "$$" > "$1"; while :; do sleep 0.05; done', pids, timeout=0.2)
    async with running([hook]) as (runner, results):
        started = time.monotonic()
        runner.submit("h", alarm(), on_result=results)
        assert await results.wait(1) == ["timeout"]
        assert time.monotonic() - started < 0.2 + 2 * KILL_GRACE + 1.0
    assert process_gone(int(pids.read_text()))


def _setsid() -> None:
    if shutil.which("setsid") is None:
        unavailable("setsid is missing (Debian package util-linux)")


async def test_descendant_in_a_session_of_its_own_is_killed_on_timeout(tmp_path: Path) -> None:
    _setsid()
    pids = tmp_path / "pids"
    # setsid leaves the hook's process group (and session), so killing the group missed it;
    # it stays the hook's child, and a grandchild of its own session is found through it.
    hook = sh(
        'setsid sh -c "setsid sleep 300 & echo \\$\\$ \\$! >> $1; wait" &'
        ' while [ ! -s "$1" ]; do sleep 0.01; done; sleep 300',
        pids,
        timeout=0.3,
    )
    try:
        async with running([hook]) as (runner, results):
            started = time.monotonic()
            runner.submit("h", alarm(), on_result=results)
            assert await results.wait(1) == ["timeout"]
            assert time.monotonic() - started < 0.3 + 2 * KILL_GRACE + 1.0
        escaped = [int(pid) for pid in pids.read_text().split()]
        assert len(escaped) == 2
        assert all(process_gone(pid) for pid in escaped)
    finally:
        _kill_all(pids)


async def test_double_forked_daemon_that_left_the_tree_is_killed_on_timeout(
    tmp_path: Path,
) -> None:
    _setsid()
    pids = tmp_path / "pids"
    # fork, setsid, fork, exit: the daemon's parent is init now, in no group of the hook's.
    hook = sh('(setsid sh -c "sleep 300 & echo \\$! >> $1" &); sleep 300', pids, timeout=0.3)
    try:
        async with running([hook]) as (runner, results):
            runner.submit("h", alarm(), on_result=results)
            await wait_for_line(pids)
            daemon = int(pids.read_text())
            assert _parent(daemon) != os.getpid()
            assert await results.wait(1) == ["timeout"]
        assert process_gone(daemon)
    finally:
        _kill_all(pids)


async def test_detached_child_of_a_hook_that_exits_in_time_is_left_running(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    hook = sh('setsid sleep 300 >/dev/null 2>&1 & echo "$!" > "$1"; exit 0', pids, timeout=0.3)
    try:
        async with running([hook]) as (runner, results):
            runner.submit("h", alarm(), on_result=results)
            assert await results.wait(1) == ["ok"]
            await asyncio.sleep(0.5)  # past the timeout: nothing was left to kill
        assert not process_gone(int(pids.read_text()))
    finally:
        _kill_all(pids)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _kill_all(pids: Path) -> None:
    for pid in pids.read_text().split() if pids.exists() else ():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


async def test_cancelled_while_starting_stops_the_group_and_returns(tmp_path: Path) -> None:
    # A daemon stopping (or a reload retiring a worker) can cancel a hook while asyncio is still
    # connecting its pipes. The hook must not outlive that, nor hang the cancellation.
    pids = tmp_path / "pids"
    hook = sh('sleep 300 & echo "$$ $!" > "$1"; sleep 300', pids, timeout=60)
    task = asyncio.create_task(run_exec(hook, {"PATH": os.environ["PATH"]}, kill_grace=0.3))
    for _ in range(2):  # forked by now; asyncio connects the pipes on the loop's next turns
        await asyncio.sleep(0)
    # Hold the loop (as a busy daemon would) while the hook starts its child on those pipes.
    deadline = time.monotonic() + 5
    while not has_line(pids) and time.monotonic() < deadline:
        time.sleep(0.01)  # noqa: ASYNC251 - blocking the loop on purpose
    task.cancel()
    async with asyncio.timeout(10):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert all(process_gone(int(pid)) for pid in pids.read_text().split())
