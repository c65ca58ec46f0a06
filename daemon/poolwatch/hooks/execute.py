"""Exec hooks: run an operator's argv, never through a shell, as a process group of its own.

Pool facts reach the hook only as POOLWATCH_* environment variables, so a pool name is data and
never code. The hook starts a session and process group of its own. A timeout kills the hook's
processes: SIGTERM, a grace period (cut short as soon as none of them runs any more), then
SIGKILL. Its processes are its process group, every descendant of the hook by parent links (a
child that called setsid() left the group, not the tree), and every process whose environment
carries the run's POOLWATCH_HOOK_RUN token (a double-forked daemon that left the tree for init).
Only a process that both left the tree and replaced its environment escapes: catching that too
needs a cgroup per hook, which the unit's sandbox (ProtectControlGroups=) and a plain shell do
not give; becoming a child subreaper instead would make poolwatch reap every orphan of libvirt's
children too, beside the child watcher and libvirt's own waitpid(). Output is kept only as a
short tail for the log, so a chatty hook cannot grow the daemon's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
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
# Set in every exec hook's environment to a token of its own run: inherited by whatever the hook
# starts, so its processes can be found after they left its process group and its tree.
RUN_VARIABLE = "POOLWATCH_HOOK_RUN"
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
    killed: bool = False  # the hook's processes were signalled (timeout, or leftovers on pipes)
    error: str | None = None  # why the hook could not be started
    # Seconds from the start until the hook's output closed or, when it was killed, until none
    # of its processes ran any more.
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
    """Run one exec hook to completion or timeout; cancellation also stops its processes.

    The run lasts until the hook exits AND its output pipes close, at most `hook.timeout`:
    a background child that keeps the pipes open is killed with the hook's other processes then
    (the result still follows the hook's own exit status if it had exited). Children that detach
    from the pipes (`cmd >/dev/null 2>&1 &`) of a hook that exits in time are left running.
    """
    if not hook.argv:
        return ExecOutcome("failed", None, "", "", error="empty argv")
    loop = asyncio.get_running_loop()
    started = loop.time()
    token = secrets.token_hex(8)
    # loop.subprocess_exec is what asyncio.create_subprocess_exec wraps; its protocol keeps only
    # output tails (no unbounded stream buffers) and its transport can stop reading at once.
    start = asyncio.ensure_future(
        loop.subprocess_exec(
            lambda: _HookProcess(loop),
            *hook.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**env, RUN_VARIABLE: token},
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
            await _stop(_HookRun(transport.get_pid(), token), process, kill_grace)
            transport.close()
        raise
    except (OSError, ValueError) as exc:  # not found, not executable, NUL in an argument...
        return ExecOutcome("failed", None, "", "", error=f"{type(exc).__name__}: {exc}")
    # start_new_session makes the hook a session and process group leader: pgid == pid.
    run = _HookRun(transport.get_pid(), token)
    timed_out = False
    killed = False
    try:
        done, _ = await asyncio.wait({process.finished}, timeout=hook.timeout)
        ended = loop.time()
        if not done:
            timed_out = not process.exited.done()
            killed = True
            ended = await _stop(run, process, kill_grace)
    except asyncio.CancelledError:
        await _stop(run, process, kill_grace)
        raise
    finally:
        # Stop reading: a process that escaped the kill may still hold the pipes.
        transport.close()
    exit_code = transport.get_returncode()
    stdout, stderr = process.stdout.text(), process.stderr.text()
    duration = ended - started
    if timed_out or exit_code is None:
        return ExecOutcome("timeout", exit_code, stdout, stderr, killed=killed, duration=duration)
    result: ExecResult = "ok" if exit_code == 0 else "failed"
    return ExecOutcome(result, exit_code, stdout, stderr, killed=killed, duration=duration)


class _HookRun:
    """The processes of one hook run, found in /proc; and which of them were signalled."""

    def __init__(self, pid: int, token: str) -> None:
        self.pgid = pid  # the hook leads its process group (and session)
        self._marker = f"{RUN_VARIABLE}={token}".encode()
        self._signalled: dict[signal.Signals, set[int]] = {}

    def signal(self, signum: signal.Signals) -> None:
        """Send `signum` to every process of the run that has not had it yet."""
        done = self._signalled.setdefault(signum, set())
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            pass  # the whole group is gone already
        except PermissionError:
            # Every remaining member changed its user (a setuid program): nothing to be done.
            log.warning("hook_kill_denied", pgid=self.pgid, signal=signum.name)
        for pid in self.running() - done:
            done.add(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def running(self) -> set[int]:
        """The run's processes that still run: its group, the descendants of the hook and of
        those, and the processes that carry its token. A dead process (a zombie) runs no more
        and holds nothing, so it does not count, even while init takes seconds to reap it."""
        procs = _processes()
        if procs is None:  # no /proc: the group is all that can be found
            return {self.pgid} if _group_exists(self.pgid) else set()
        children: dict[int, list[int]] = {}
        for pid, (_, ppid, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        found = {pid for pid, (_, _, pgrp) in procs.items() if pgrp == self.pgid}
        # Not "the process with the hook's pid": once asyncio reaped the hook, that pid may be
        # anyone's. The hook leads its session, so it cannot leave its group while it lives.
        found |= {pid for pid in procs if pid not in found and self._carries_token(pid)}
        stack = list(found)
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        found.discard(os.getpid())
        running = {pid for pid in found if procs[pid][0] not in (b"Z", b"X")}
        if not found and _group_exists(self.pgid):
            # A group that kill() finds but this /proc does not show is in another PID namespace.
            return {self.pgid}
        return running

    def _carries_token(self, pid: int) -> bool:
        try:
            # Only our own user's processes can have it; others' environ is not readable anyway.
            if os.stat(f"/proc/{pid}").st_uid != os.geteuid():
                return False
            with open(f"/proc/{pid}/environ", "rb") as environ:
                return self._marker in environ.read().split(b"\0")
        except OSError:
            return False  # gone meanwhile, or not ours to read


async def _stop(run: _HookRun, process: _HookProcess, grace: float) -> float:
    """SIGTERM the run's processes, give them up to `grace` seconds to go, SIGKILL what is left.

    Returns the loop time at which none of them ran any more (or the kill gave up).
    """
    loop = asyncio.get_running_loop()
    run.signal(signal.SIGTERM)
    gone = await _until_gone(run, grace)
    if not gone:
        run.signal(signal.SIGKILL)
        # SIGKILL cannot be refused, but a process in uninterruptible sleep (a dead NFS server)
        # dies only when the I/O returns; do not wait for that forever. A process started after
        # the first SIGKILL (a fork on its way) gets one too.
        gone = await _until_gone(run, grace, signal.SIGKILL)
    ended = loop.time()
    if gone:
        # The leader is dead, so asyncio reaps it at once: its exit status follows.
        await asyncio.wait({process.exited}, timeout=grace)
        await asyncio.wait({process.finished}, timeout=_DRAIN_TIMEOUT)
    return ended


async def _until_gone(run: _HookRun, grace: float, repeat: signal.Signals | None = None) -> bool:
    """Wait until none of the run's processes runs; False if some still does after `grace` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    # No notification exists for "these processes are gone": most are not our children.
    while run.running():
        if loop.time() >= deadline:
            return False
        if repeat is not None:
            run.signal(repeat)
        await asyncio.sleep(_GROUP_POLL_INTERVAL)
    return True


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _processes() -> dict[int, tuple[bytes, int, int]] | None:
    """(state, ppid, pgrp) of every process /proc shows; None without a readable /proc."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    procs = {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
                fields = stat.read().rsplit(b")", 1)[1].split()
            procs[int(name)] = (fields[0], int(fields[1]), int(fields[2]))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return procs
