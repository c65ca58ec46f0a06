"""Exec hooks: run an operator's argv, never through a shell, as a process group of its own.

Pool facts reach the hook only as POOLWATCH_* environment variables, so a pool name is data and
never code. The hook and everything it spawns share one process group (a new session), which is
what a timeout kills: SIGTERM, a grace period (cut short as soon as no process of the group runs
any more), then SIGKILL. Output is kept only as a short tail for the log, so a chatty hook cannot
grow the daemon's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import structlog

from poolwatch.hooks.event import HookEvent
from poolwatch.policies.rules import ExecHook

log = structlog.get_logger()

OUTPUT_TAIL_BYTES = 4096
# The daemon's own environment may hold secrets (credentials for libvirt, proxies); a hook gets
# only what it needs to find programs and decode text.
INHERITED_VARIABLES = ("PATH", "LANG")
DEFAULT_KILL_GRACE = 2.0
# How often to look whether a signalled process group is gone.
_GROUP_POLL_INTERVAL = 0.05
# After a kill, how long to let the pipes deliver what the hook wrote just before it died: at
# once, unless a descendant that left the group still holds them open.
_DRAIN_TIMEOUT = 0.1

ExecResult = Literal["ok", "failed", "timeout"]


@dataclass(frozen=True, slots=True)
class ExecOutcome:
    result: ExecResult
    exit_code: int | None  # negative: ended by that signal; None: never started, or not reaped
    stdout: str  # the last OUTPUT_TAIL_BYTES, decoded leniently
    stderr: str
    killed: bool = False  # the process group was signalled (timeout, or leftovers holding pipes)
    error: str | None = None  # why the hook could not be started
    # Seconds from the start until the hook's output closed or, when it was killed, until no
    # process of its group ran any more.
    duration: float = 0.0


def hook_environment(
    event: HookEvent, inherited: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The complete environment of an exec hook: PATH and LANG, and the event's facts.

    Unknown figures are empty strings, so a hook can test them with `[ -n "$VAR" ]`.
    """
    source = os.environ if inherited is None else inherited
    env = {name: source[name] for name in INHERITED_VARIABLES if name in source}
    env.update(
        POOLWATCH_ACTION=event.action,
        POOLWATCH_HOST=event.host,
        POOLWATCH_POOL=event.pool,
        POOLWATCH_POOL_UUID=event.pool_uuid,
        POOLWATCH_LEVEL=event.level,
        POOLWATCH_PREVIOUS_LEVEL=event.previous_level,
        # The two figures behind a level (see HookEvent): allocation / capacity, and the
        # smaller of available and f_bavail. They differ by the filesystem's reserved blocks.
        POOLWATCH_USED_RATIO=_fixed(event.used_ratio, 3),
        POOLWATCH_AVAILABLE_BYTES=_fixed(event.available_bytes, 0),
        # Whole seconds: what a shell's `[ "$X" -lt 3600 ]` can compare.
        POOLWATCH_TIME_TO_FULL_SECONDS=_fixed(event.time_to_full_seconds, 0),
        POOLWATCH_EPISODE=event.episode,
        POOLWATCH_GUEST=event.guest,
        # One name per line: a guest's name may hold spaces, never a newline (libvirt refuses).
        POOLWATCH_GUESTS="\n".join(event.guests),
    )
    return env


def _fixed(value: float | int | None, digits: int) -> str:
    if isinstance(value, int):
        return str(value)
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.{digits}f}"


class _Tail:
    """The last `limit` bytes written to one pipe."""

    def __init__(self, limit: int = OUTPUT_TAIL_BYTES) -> None:
        self._limit = limit
        self._data = bytearray()

    def append(self, data: bytes) -> None:
        if len(data) >= self._limit:
            self._data[:] = data[-self._limit :]
            return
        self._data += data
        if len(self._data) > self._limit:
            del self._data[: len(self._data) - self._limit]

    def text(self) -> str:
        return self._data.decode("utf-8", errors="replace")


class _HookProcess(asyncio.SubprocessProtocol):
    """Collects output tails as it arrives and tells when the hook has exited and gone quiet."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.stdout = _Tail()
        self.stderr = _Tail()
        self.exited: asyncio.Future[None] = loop.create_future()
        # The leader exited and every holder of the output pipes closed them.
        self.finished: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        (self.stdout if fd == 1 else self.stderr).append(raw)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_result(None)


async def run_exec(
    hook: ExecHook, env: Mapping[str, str], *, kill_grace: float = DEFAULT_KILL_GRACE
) -> ExecOutcome:
    """Run one exec hook to completion or timeout; cancellation also stops its process group.

    The run lasts until the hook exits AND its output pipes close, at most `hook.timeout`:
    a background child that keeps the pipes open is killed with the group then (the result
    still follows the hook's own exit status if it had exited). Children that detach from the
    pipes (`cmd >/dev/null 2>&1 &`) are left running.
    """
    if not hook.argv:
        return ExecOutcome("failed", None, "", "", error="empty argv")
    loop = asyncio.get_running_loop()
    started = loop.time()
    # loop.subprocess_exec is what asyncio.create_subprocess_exec wraps; its protocol keeps only
    # output tails (no unbounded stream buffers) and its transport can stop reading at once.
    start = asyncio.ensure_future(
        loop.subprocess_exec(
            lambda: _HookProcess(loop),
            *hook.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    )
    try:
        # Shielded: a cancellation while the pipes are being connected would make asyncio kill
        # the leader alone and then wait for pipes that its children still hold (for ever on
        # Python 3.11.2, whose transport waits for pipes that never connected). Let the start
        # finish, then stop the whole group as for any other cancellation.
        transport, process = await asyncio.shield(start)
    except asyncio.CancelledError:
        with contextlib.suppress(OSError, ValueError):
            transport, process = await start
            await _stop_group(transport.get_pid(), process, kill_grace)
            transport.close()
        raise
    except (OSError, ValueError) as exc:  # not found, not executable, NUL in an argument...
        return ExecOutcome("failed", None, "", "", error=f"{type(exc).__name__}: {exc}")
    # start_new_session makes the hook a session and process group leader: pgid == pid.
    pgid = transport.get_pid()
    timed_out = False
    killed = False
    try:
        done, _ = await asyncio.wait({process.finished}, timeout=hook.timeout)
        ended = loop.time()
        if not done:
            timed_out = not process.exited.done()
            killed = True
            ended = await _stop_group(pgid, process, kill_grace)
    except asyncio.CancelledError:
        await _stop_group(pgid, process, kill_grace)
        raise
    finally:
        # Stop reading: a descendant that escaped the group may still hold the pipes.
        transport.close()
    exit_code = transport.get_returncode()
    stdout, stderr = process.stdout.text(), process.stderr.text()
    duration = ended - started
    if timed_out or exit_code is None:
        return ExecOutcome("timeout", exit_code, stdout, stderr, killed=killed, duration=duration)
    result: ExecResult = "ok" if exit_code == 0 else "failed"
    return ExecOutcome(result, exit_code, stdout, stderr, killed=killed, duration=duration)


async def _stop_group(pgid: int, process: _HookProcess, grace: float) -> float:
    """SIGTERM the group, give it up to `grace` seconds to go, SIGKILL what is left.

    Returns the loop time at which no process of the group ran any more (or the kill gave up).
    """
    loop = asyncio.get_running_loop()
    _signal_group(pgid, signal.SIGTERM)
    gone = await _until_gone(pgid, grace)
    if not gone:
        _signal_group(pgid, signal.SIGKILL)
        # SIGKILL cannot be refused, but a process in uninterruptible sleep (a dead NFS server)
        # dies only when the I/O returns; do not wait for that forever.
        gone = await _until_gone(pgid, grace)
    ended = loop.time()
    if gone:
        # The leader is dead, so asyncio reaps it at once: its exit status follows.
        await asyncio.wait({process.exited}, timeout=grace)
        await asyncio.wait({process.finished}, timeout=_DRAIN_TIMEOUT)
    return ended


async def _until_gone(pgid: int, grace: float) -> bool:
    """Wait until no process of the group runs; False if some still does after `grace` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    # No notification exists for "the group is empty": descendants are not our children.
    while _group_running(pgid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_GROUP_POLL_INTERVAL)
    return True


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # the whole group is gone already
    except PermissionError:
        # Every remaining member changed its user (a setuid program): nothing poolwatch can do.
        log.warning("hook_kill_denied", pgid=pgid, signal=signum.name)


def _group_running(pgid: int) -> bool:
    """Whether a process of the group still runs.

    A dead process (a zombie) stays a member of its group until its parent reaps it, and for an
    orphaned descendant that parent is init, which in a container may take seconds: it runs no
    more and holds nothing, so it does not count.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        names = os.listdir("/proc")
    except OSError:
        return True
    seen = False
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid:
            if fields[0] not in (b"Z", b"X"):
                return True
            seen = True
    # A group that kill() finds but this /proc does not show is in another PID namespace.
    return not seen
