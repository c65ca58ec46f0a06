"""Running hooks in tests: a sample event, exec hooks written as shell scripts, a recorder of
final results, and a runner started and closed around a test.

Timeouts, kill grace and backoff bases are small so the hook tests run in a few seconds.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

from poolwatch.hooks import HookEvent, HookResult, HookRunner
from poolwatch.policies.rules import ExecHook, Hook

HOSTILE_POOL = "a'b\"c$(touch x);\nd ü"
KILL_GRACE = 0.3


def alarm(**overrides: Any) -> HookEvent:
    values: dict[str, Any] = {
        "action": "warning",
        "connection": "alpha-key",
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
    """An on_result callback that records, with a way to wait for a number of final results."""

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
    runner = HookRunner(hooks, **options)
    await runner.start()
    try:
        yield runner, results
    finally:
        await runner.close()


async def wait_for_line(path: Path) -> None:
    """Wait until a hook has written a complete line to `path`."""
    for _ in range(500):
        if has_line(path):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} was never written")


def has_line(path: Path) -> bool:
    return path.exists() and path.read_text().endswith("\n")


def hook_actions(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `policy_action` log events among captured logs: one per hook run."""
    return [entry for entry in logs if entry["event"] == "policy_action"]


def process_gone(pid: int) -> bool:
    """Dead: no such process, or a zombie (reaping orphans is init's job, not the hook's)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def running_members(pgid: int) -> list[int]:
    """The processes of a process group that still run (not zombies)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


_PR_SET_CHILD_SUBREAPER = 36


@contextmanager
def orphans_reaped_late() -> Iterator[None]:
    """Become the reaper of orphaned descendants, one that reaps them only at the end: as an init
    that reaps late (some containers' PID 1) does, which keeps them zombies in their group."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                with suppress(ChildProcessError):
                    os.waitpid(int(stat.parent.name), os.WNOHANG)
