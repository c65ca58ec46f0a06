"""Hooks run for real: exec hooks as real process groups, webhooks against a real aiohttp receiver.

Timeouts, kill grace and backoff bases are small so the whole file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from poolwatch.hooks import HookEvent, HookResult, HookRunner
from poolwatch.hooks.execute import OUTPUT_TAIL_BYTES, hook_environment
from poolwatch.hooks.webhook import redact_url, webhook_body
from poolwatch.policies.rules import ExecHook, Hook, WebhookHook
from tests.helpers import serving, unavailable

HOSTILE_POOL = "a'b\"c$(touch x);\nd ü"
KILL_GRACE = 0.3


def alarm(**overrides: Any) -> HookEvent:
    values: dict[str, Any] = {
        "action": "warning",
        "host": "alpha",
        "pool": "tank",
        "pool_uuid": "8f0c0d8e-2f4b-4d5e-9a51-0c1f2a3b4c5d",
        "level": "warning",
        "previous_level": "ok",
        "used_ratio": 0.8734,
        "available_bytes": 21_474_836_480,
        "time_to_full_seconds": 3600.4,
        "episode": "ep-1",
        "snapshot": {"name": "tank", "capacity_bytes": 100, "state": "running"},
    }
    values.update(overrides)
    return HookEvent(**values)


def sh(script: str, *args: str | Path, timeout: float = 5.0, name: str = "h") -> ExecHook:
    """An exec hook running `script` with sh; `args` become $1, $2...: never spliced into it."""
    return ExecHook(name=name, argv=("sh", "-c", script, "hook", *map(str, args)), timeout=timeout)


class Results:
    """on_result, recorded, with a way to wait for a number of final results."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, HookEvent, HookResult]] = []
        self._changed = asyncio.Event()

    def __call__(self, hook_name: str, event: HookEvent, result: HookResult) -> None:
        self.calls.append((hook_name, event, result))
        self._changed.set()

    @property
    def results(self) -> list[HookResult]:
        return [result for _, _, result in self.calls]

    async def wait(self, count: int, within: float = 5.0) -> list[HookResult]:
        async with asyncio.timeout(within):
            while len(self.calls) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.results


@asynccontextmanager
async def running(
    hooks: Mapping[str, Hook] | list[Hook], **options: Any
) -> AsyncIterator[tuple[HookRunner, Results]]:
    if isinstance(hooks, list):
        hooks = {hook.name: hook for hook in hooks}
    results = Results()
    options.setdefault("exec_kill_grace", KILL_GRACE)
    options.setdefault("webhook_backoff_base", 0.01)
    runner = HookRunner(hooks, on_result=results, **options)
    await runner.start()
    try:
        yield runner, results
    finally:
        await runner.close()


async def wait_for_line(path: Path) -> None:
    """Wait until a hook has written a complete line to `path`."""
    for _ in range(500):
        if _has_line(path):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} was never written")


def _has_line(path: Path) -> bool:
    return path.exists() and path.read_text().endswith("\n")


def process_gone(pid: int) -> bool:
    """Dead: no such process, or a zombie (reaping orphans is init's job, not the hook's)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


# --- exec hooks ---------------------------------------------------------------------------------


async def test_exec_hook_gets_the_event_in_its_environment_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOLWATCH_TEST_DAEMON_SECRET", "do-not-pass")
    out = tmp_path / "env"
    async with running([sh('env -0 > "$1"', out)]) as (runner, results):
        runner.submit("h", alarm(time_to_full_seconds=None))
        assert await results.wait(1) == ["ok"]
    env = dict(item.split("=", 1) for item in out.read_text().split("\0") if item)
    assert env["PATH"] == os.environ["PATH"]
    assert "POOLWATCH_TEST_DAEMON_SECRET" not in env
    poolwatch = {name: value for name, value in env.items() if name.startswith("POOLWATCH_")}
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
        runner.submit("h", alarm(pool=HOSTILE_POOL, host=HOSTILE_POOL))
        assert await results.wait(1) == ["ok"]
    assert out.read_bytes().decode() == HOSTILE_POOL
    assert host_out.read_bytes().decode() == HOSTILE_POOL
    assert not (tmp_path / "x").exists()


async def test_nonzero_exit_is_failed_and_its_stderr_is_logged() -> None:
    with structlog.testing.capture_logs() as logs:
        async with running([sh("echo working; echo 'disk on fire' >&2; exit 3")]) as (r, results):
            r.submit("h", alarm())
            assert await results.wait(1) == ["failed"]
    [finished] = [entry for entry in logs if entry["event"] == "hook_finished"]
    assert finished["result"] == "failed"
    assert finished["exit_code"] == 3
    assert finished["stdout"] == "working\n"
    assert finished["stderr"] == "disk on fire\n"
    assert finished["hook"] == "h"
    assert finished["pool"] == "tank"
    assert finished["action"] == "warning"
    assert finished["attempts"] == 1
    assert finished["duration"] >= 0


async def test_missing_program_is_failed() -> None:
    hook = ExecHook(name="h", argv=("/nonexistent/poolwatch-hook",), timeout=5)
    with structlog.testing.capture_logs() as logs:
        async with running([hook]) as (runner, results):
            runner.submit("h", alarm())
            assert await results.wait(1) == ["failed"]
    [finished] = [entry for entry in logs if entry["event"] == "hook_finished"]
    assert "FileNotFoundError" in finished["error"]


async def test_chatty_hook_keeps_only_a_tail_of_its_output() -> None:
    hook = sh("head -c 3000000 /dev/zero | tr '\\0' a; echo; echo the-end")
    with structlog.testing.capture_logs() as logs:
        async with running([hook]) as (runner, results):
            runner.submit("h", alarm())
            assert await results.wait(1) == ["ok"]
    [finished] = [entry for entry in logs if entry["event"] == "hook_finished"]
    assert len(finished["stdout"]) == OUTPUT_TAIL_BYTES
    assert finished["stdout"].endswith("aaa\nthe-end\n")


async def test_timeout_kills_the_hook_and_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The background sleep inherits the output pipes: reading them to EOF would wait forever.
    hook = sh('sleep 300 & echo "$$ $!" > "$1"; sleep 300', pids, timeout=0.3)
    async with running([hook]) as (runner, results):
        started = time.monotonic()
        runner.submit("h", alarm())
        assert await results.wait(1) == ["timeout"]
        elapsed = time.monotonic() - started
    assert elapsed < 0.3 + KILL_GRACE + 1.0
    leader, child = map(int, pids.read_text().split())
    assert process_gone(leader)
    assert process_gone(child)


async def test_hook_that_exits_but_leaves_a_child_on_its_pipes_is_bounded(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    hook = sh('sleep 300 & echo "$!" > "$1"; exit 0', pids, timeout=0.3)
    with structlog.testing.capture_logs() as logs:
        async with running([hook]) as (runner, results):
            runner.submit("h", alarm())
            # The hook's own verdict stands; its leftover was killed when the time ran out.
            assert await results.wait(1) == ["ok"]
    assert process_gone(int(pids.read_text()))
    [finished] = [entry for entry in logs if entry["event"] == "hook_finished"]
    assert finished["killed"] is True


async def test_hook_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hook = sh('trap \'\' TERM; echo "$$" > "$1"; while :; do sleep 0.05; done', pids, timeout=0.2)
    async with running([hook]) as (runner, results):
        started = time.monotonic()
        runner.submit("h", alarm())
        assert await results.wait(1) == ["timeout"]
        assert time.monotonic() - started < 0.2 + 2 * KILL_GRACE + 1.0
    assert process_gone(int(pids.read_text()))


async def test_escaped_descendant_holding_the_pipes_does_not_hang_the_runner(
    tmp_path: Path,
) -> None:
    if shutil.which("setsid") is None:
        unavailable("setsid is missing (Debian package util-linux)")
    pids = tmp_path / "pids"
    # setsid leaves the hook's process group, so killing the group cannot reach it; the runner
    # must stop reading its pipes instead of waiting for their EOF.
    hook = sh('setsid sleep 300 & echo "$!" > "$1"; sleep 300', pids, timeout=0.3)
    try:
        async with running([hook]) as (runner, results):
            started = time.monotonic()
            runner.submit("h", alarm())
            assert await results.wait(1) == ["timeout"]
            assert time.monotonic() - started < 0.3 + 2 * KILL_GRACE + 1.0
    finally:
        if pids.exists():
            os.kill(int(pids.read_text()), signal.SIGKILL)


async def test_exec_concurrency_is_bounded(tmp_path: Path) -> None:
    spans = tmp_path / "spans"
    hook = sh('start=$(date +%s.%N); sleep 0.2; echo "$start $(date +%s.%N)" >> "$1"', spans)
    async with running([hook], max_concurrent_exec=2) as (runner, results):
        for index in range(6):
            runner.submit("h", alarm(episode=f"ep-{index}"))
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
                runner.submit("h", alarm(episode=f"ep-{index}"))
            # Synchronously, before any worker ran: two queued, three dropped.
            assert results.results == ["dropped"] * 3
            assert [event.episode for _, event, _ in results.calls] == ["ep-2", "ep-3", "ep-4"]
            gate.touch()
            assert await results.wait(5) == ["dropped"] * 3 + ["ok"] * 2
    dropped = [entry for entry in logs if entry["event"] == "hook_dropped"]
    assert [entry["reason"] for entry in dropped] == ["queue_full"] * 3


async def test_close_kills_running_hooks_and_their_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hook = sh('sleep 300 & echo "$$ $!" > "$1"; sleep 300', pids, timeout=60)
    async with running([hook]) as (runner, results):
        runner.submit("h", alarm())
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
            runner.submit("h", alarm())
            runner.submit("w", alarm())
            assert results.results == ["dry_run", "dry_run"]
            await asyncio.sleep(0.1)
    assert not marker.exists()
    skipped = [entry for entry in logs if entry["event"] == "hook_skipped_dry_run"]
    assert skipped[0]["argv"] == ["sh", "-c", 'touch "$1"', "hook", str(marker)]
    assert skipped[1]["url"] == "http://127.0.0.1:9/x"
    assert "pw" not in repr(skipped)
    assert not [entry for entry in logs if entry["event"] == "hook_finished"]


async def test_unknown_hook_is_failed() -> None:
    async with running({}) as (runner, results):
        runner.submit("nope", alarm())
        assert results.results == ["failed"]


async def test_update_applies_to_later_events(tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with running([sh('echo one >> "$1"', out)]) as (runner, results):
        runner.submit("h", alarm())
        runner.update({"h": sh('echo two >> "$1"', out)})
        runner.submit("h", alarm())
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

    runner = HookRunner({"h": sh("true")}, on_result=on_result, max_concurrent_exec=1)
    await runner.start()
    try:
        runner.submit("h", alarm())
        runner.submit("h", alarm())
        await asyncio.wait_for(both.wait(), 5)
    finally:
        await runner.close()
    assert seen == ["ok", "ok"]


async def test_submit_after_close_is_dropped() -> None:
    async with running([sh("true")]) as (runner, results):
        pass
    runner.submit("h", alarm())
    assert results.results == ["dropped"]


# --- webhooks -----------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A webhook receiver: answers with `statuses` in turn (then 200), or hangs."""

    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    url: str = ""
    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.json()))
        self.arrived.set()
        if self.hang:
            await self.release.wait()
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    @property
    def keys(self) -> list[str]:
        return [headers["Idempotency-Key"] for headers, _ in self.requests]


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async with serving(app, shutdown_timeout=0.5) as url:
        receiver.url = f"{url}/hook"
        try:
            yield receiver
        finally:
            receiver.release.set()


def webhook(url: str, *, timeout: float = 2.0, retries: int = 3, **kw: Any) -> WebhookHook:
    return WebhookHook(name="w", url=url, timeout=timeout, retries=retries, headers=(), **kw)


@pytest.mark.parametrize("transient", [503, 429])
async def test_webhook_retries_transient_errors_under_one_idempotency_key(transient: int) -> None:
    async with (
        receiving(Receiver(statuses=[transient, transient, 200])) as receiver,
        running([webhook(receiver.url)]) as (runner, results),
    ):
        runner.submit("w", alarm(episode="ep-7", action="critical"))
        assert await results.wait(1) == ["ok"]
    assert receiver.keys == ["ep-7:critical"] * 3
    headers, body = receiver.requests[0]
    assert headers["Content-Type"] == "application/json"
    assert set(body) == {
        "action",
        "host",
        "pool",
        "pool_uuid",
        "level",
        "previous_level",
        "used_ratio",
        "available_bytes",
        "time_to_full_seconds",
        "episode",
        "snapshot",
        "sent_at",
    }
    assert body["action"] == "critical"
    assert body["snapshot"] == {"name": "tank", "capacity_bytes": 100, "state": "running"}
    assert body["used_ratio"] == 0.8734


async def test_webhook_client_error_fails_at_once() -> None:
    with structlog.testing.capture_logs() as logs:
        async with (
            receiving(Receiver(statuses=[400])) as receiver,
            running([webhook(receiver.url)]) as (runner, results),
        ):
            runner.submit("w", alarm())
            assert await results.wait(1) == ["failed"]
    assert len(receiver.requests) == 1
    [finished] = [entry for entry in logs if entry["event"] == "hook_finished"]
    assert finished["status"] == 400
    assert finished["attempts"] == 1


async def test_webhook_redirect_is_not_followed() -> None:
    async with (
        receiving(Receiver(statuses=[307])) as receiver,
        running([webhook(receiver.url)]) as (runner, results),
    ):
        runner.submit("w", alarm())
        assert await results.wait(1) == ["failed"]
    assert len(receiver.requests) == 1


async def test_hung_webhook_times_out_with_bounded_retries() -> None:
    async with (
        receiving(Receiver(hang=True)) as receiver,
        running([webhook(receiver.url, timeout=0.1, retries=2)]) as (runner, results),
    ):
        runner.submit("w", alarm())
        assert await results.wait(1) == ["timeout"]
    assert receiver.keys == ["ep-1:warning"] * 3


async def test_unreachable_webhook_fails_after_its_retries() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with structlog.testing.capture_logs() as logs:
        async with running([webhook(f"http://127.0.0.1:{port}/", retries=2)]) as (r, results):
            r.submit("w", alarm())
            assert await results.wait(1) == ["failed"]
    [finished] = [entry for entry in logs if entry["event"] == "hook_finished"]
    assert finished["attempts"] == 3


async def test_hung_webhook_with_a_full_queue_drops_and_keeps_the_loop_responsive(
    tmp_path: Path,
) -> None:
    out = tmp_path / "exec-ran"
    hooks: list[Hook] = []
    async with receiving(Receiver(hang=True)) as receiver:
        hooks = [webhook(receiver.url, timeout=30, retries=5), sh('echo ran > "$1"', out)]
        async with running(hooks, queue_size=2) as (runner, results):
            runner.submit("w", alarm(episode="ep-0"))
            await asyncio.wait_for(receiver.arrived.wait(), 5)  # the worker is stuck on it
            started = time.monotonic()
            for index in range(1, 11):
                runner.submit("w", alarm(episode=f"ep-{index}"))
            assert time.monotonic() - started < 0.05
            assert results.results == ["dropped"] * 8
            # Other hooks are not held up by the stuck one.
            runner.submit("h", alarm())
            assert await results.wait(9) == ["dropped"] * 8 + ["ok"]
            assert out.read_text() == "ran\n"
            worst = 0.0
            for _ in range(50):
                tick = time.monotonic()
                await asyncio.sleep(0)
                worst = max(worst, time.monotonic() - tick)
            assert worst < 0.05
            assert len(receiver.requests) == 1


async def test_webhook_secrets_are_sent_but_never_logged() -> None:
    header_value = "Bearer s3cret-header-value"
    with structlog.testing.capture_logs() as logs:
        async with receiving(Receiver(statuses=[503, 400])) as receiver:
            url = receiver.url.replace("http://", "http://hookuser:pw-s3cret@") + "?token=tk-s3cret"
            hook = replace(webhook(url), headers=(("X-Api-Key", header_value),))
            async with running([hook]) as (runner, results):
                runner.submit("w", alarm())
                assert await results.wait(1) == ["failed"]
                runner.update({"w": replace(hook, url="http://pw-s3cret@[::1")})  # bad URL
                runner.submit("w", alarm())
                assert await results.wait(2) == ["failed", "failed"]
    headers, _ = receiver.requests[0]
    assert headers["X-Api-Key"] == header_value
    assert headers["Authorization"].startswith("Basic ")
    assert len(receiver.requests) == 2
    finished = [entry for entry in logs if entry["event"] == "hook_finished"]
    assert finished[0]["url"] == receiver.url
    assert len(finished) == 2
    for entry in logs:
        assert "s3cret" not in repr(entry)


async def test_removed_webhook_still_delivers_what_was_queued() -> None:
    async with (
        receiving(Receiver()) as receiver,
        running([webhook(receiver.url)]) as (runner, results),
    ):
        runner.submit("w", alarm())
        runner.update({})
        assert await results.wait(1) == ["ok"]
        runner.submit("w", alarm())
        assert results.results == ["ok", "failed"]  # unknown now


def test_webhook_body_and_redaction() -> None:
    body = webhook_body(alarm(used_ratio=float("nan")), sent_at=0.0)
    assert body["used_ratio"] is None
    assert body["sent_at"] == "1970-01-01T00:00:00.000+00:00"
    assert (
        redact_url("https://u:p@example.org:8443/a/b?token=t#f") == "https://example.org:8443/a/b"
    )
