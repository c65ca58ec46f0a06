"""The hook runner: queues alarm events for the operator's hooks and runs them in the background.

Policies decide that a hook should run; the runner makes sure running it can never hold up the
daemon. `submit` only enqueues (a full queue drops the event, counted, rather than wait or grow).
Exec hooks share one bounded queue drained by `max_concurrent_exec` workers; each webhook has a
bounded queue and one worker of its own, so a dead receiver delays nobody but itself. Every event
ends in exactly one call of the `on_result` it was submitted with, with its final result, and one
`policy_action` log event (action "hook:NAME"), keyed like the actuator's other actions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from poolwatch.hooks.event import HookEvent, HookResult, ResultCallback
from poolwatch.hooks.execute import DEFAULT_KILL_GRACE, hook_environment, run_exec
from poolwatch.hooks.webhook import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_MAX,
    WebhookSender,
    redact_url,
)
from poolwatch.policies.rules import ExecHook, Hook, WebhookHook

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class _Job:
    name: str
    hook: Hook  # the definition in force when the event was submitted
    event: HookEvent
    on_result: ResultCallback


class _WebhookLane:
    """One webhook's queue and its single worker."""

    def __init__(self, queue_size: int) -> None:
        # One slot beyond queue_size is kept for the sentinel that retires the lane.
        self.queue: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=queue_size + 1)
        self.worker: asyncio.Task[None] | None = None


class HookRunner:
    """Runs hooks for submitted events in background workers; see the module docstring.

    The `on_result(hook_name, event, result)` given to `submit` runs on the event loop once,
    with the event's final result: from a worker after the run (and any retries), or
    synchronously inside `submit` for "dropped", "dry_run" and an unknown hook name ("failed").
    """

    def __init__(
        self,
        hooks: Mapping[str, Hook],
        *,
        dry_run: bool = False,
        max_concurrent_exec: int = 4,
        queue_size: int = 100,
        exec_kill_grace: float = DEFAULT_KILL_GRACE,
        webhook_backoff_base: float = DEFAULT_BACKOFF_BASE,
        webhook_backoff_max: float = DEFAULT_BACKOFF_MAX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_concurrent_exec < 1 or queue_size < 1:
            raise ValueError("max_concurrent_exec and queue_size must be at least 1")
        self._dry_run = dry_run
        self._max_concurrent_exec = max_concurrent_exec
        self._queue_size = queue_size
        self._exec_kill_grace = exec_kill_grace
        self._webhook_backoff_base = webhook_backoff_base
        self._webhook_backoff_max = webhook_backoff_max
        self._clock = clock
        self._hooks: dict[str, Hook] = {}
        self._exec_queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self._exec_workers: list[asyncio.Task[None]] = []
        self._lanes: dict[str, _WebhookLane] = {}
        # Workers of webhooks removed by a reload, finishing what was queued before it.
        self._retiring: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._sender: WebhookSender | None = None
        self._started = False
        self._closed = False
        self.update(hooks)

    def update(self, hooks: Mapping[str, Hook]) -> None:
        """Use new hook definitions for events submitted from now on (config reload).

        Events already queued run with the definition they were submitted under.
        """
        self._hooks = dict(hooks)
        webhooks = {name for name, hook in self._hooks.items() if isinstance(hook, WebhookHook)}
        for name in webhooks - self._lanes.keys():
            lane = self._lanes[name] = _WebhookLane(self._queue_size)
            if self._started and not self._closed:
                lane.worker = self._start_lane(name, lane)
        for name in self._lanes.keys() - webhooks:
            lane = self._lanes.pop(name)
            lane.queue.put_nowait(None)  # the spare slot guarantees room
            if lane.worker is not None:
                self._retiring.add(lane.worker)
                lane.worker.add_done_callback(self._retiring.discard)

    def submit(self, hook_name: str, event: HookEvent, *, on_result: ResultCallback) -> None:
        """Queue `event` for the hook; never blocks. A full queue reports "dropped" at once."""
        hook = self._hooks.get(hook_name)
        if hook is None:
            # Config validation makes rules name existing hooks; a reload race can still do it.
            _log_action(log.error, hook_name, event, "failed", {"error": "unknown hook"})
            _report(on_result, hook_name, event, "failed")
            return
        job = _Job(hook_name, hook, event, on_result)
        if self._closed:
            _drop(job, reason="closed")
            return
        if self._dry_run:
            _log_action(log.info, hook_name, event, "dry_run", _describe(hook))
            _report(on_result, hook_name, event, "dry_run")
            return
        if isinstance(hook, ExecHook):
            if self._exec_queue.full():
                _drop(job, reason="queue_full")
                return
            self._exec_queue.put_nowait(job)
            return
        lane = self._lanes[hook_name]
        if lane.queue.qsize() >= self._queue_size:
            _drop(job, reason="queue_full")
            return
        lane.queue.put_nowait(job)

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("HookRunner.start() called twice")
        self._started = True
        # One session for every webhook: its connection pool is reused across events.
        self._session = aiohttp.ClientSession()
        self._sender = WebhookSender(
            self._session,
            backoff_base=self._webhook_backoff_base,
            backoff_max=self._webhook_backoff_max,
            clock=self._clock,
        )
        self._exec_workers = [
            asyncio.create_task(self._exec_worker(), name=f"hook-exec-{index}")
            for index in range(self._max_concurrent_exec)
        ]
        for name, lane in self._lanes.items():
            lane.worker = self._start_lane(name, lane)

    async def close(self) -> None:
        """Stop every worker; running exec hooks have their processes killed.

        Events still queued or running are abandoned without their `on_result` call.
        """
        self._closed = True
        tasks = [*self._exec_workers, *self._retiring]
        tasks += [lane.worker for lane in self._lanes.values() if lane.worker is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _start_lane(self, name: str, lane: _WebhookLane) -> asyncio.Task[None]:
        return asyncio.create_task(self._webhook_worker(lane), name=f"hook-webhook-{name}")

    async def _exec_worker(self) -> None:
        while True:
            job = await self._exec_queue.get()
            await self._run(job)

    async def _webhook_worker(self, lane: _WebhookLane) -> None:
        while (job := await lane.queue.get()) is not None:
            await self._run(job)

    async def _run(self, job: _Job) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        fields: dict[str, Any]
        result: HookResult
        try:
            if isinstance(job.hook, ExecHook):
                ran = await run_exec(
                    job.hook, hook_environment(job.event), kill_grace=self._exec_kill_grace
                )
                result = ran.result
                fields = {"attempts": 1, "exit_code": ran.exit_code, "duration": ran.duration}
                fields |= {"killed": True} if ran.killed else {}
                fields |= {"stdout": ran.stdout} if ran.stdout else {}
                fields |= {"stderr": ran.stderr} if ran.stderr else {}
                fields |= {"error": ran.error} if ran.error else {}
            else:
                assert self._sender is not None  # workers run only after start()
                sent = await self._sender.send(job.hook, job.event)
                result = sent.result
                fields = {"attempts": sent.attempts, "url": redact_url(job.hook.url)}
                fields |= {"status": sent.status} if sent.status is not None else {}
                fields |= {"error": sent.error} if sent.error else {}
        except Exception as exc:
            # A bug must cost one event, not the worker. A webhook's traceback is not logged:
            # its locals and messages could quote the configured secrets.
            if isinstance(job.hook, ExecHook):
                log.exception("hook_internal_error", hook=job.name)
            result = "failed"
            fields = {"attempts": 1, "error": f"internal error: {type(exc).__name__}"}
        if "duration" not in fields:
            fields["duration"] = loop.time() - started
        fields["duration"] = round(fields["duration"], 3)
        emit = log.info if result == "ok" else log.warning
        _log_action(emit, job.name, job.event, result, fields)
        _report(job.on_result, job.name, job.event, result)


def _drop(job: _Job, *, reason: str) -> None:
    _log_action(log.warning, job.name, job.event, "dropped", {"reason": reason})
    _report(job.on_result, job.name, job.event, "dropped")


def _log_action(
    emit: Callable[..., Any],
    hook_name: str,
    event: HookEvent,
    result: HookResult,
    details: Mapping[str, Any],
) -> None:
    """The one `policy_action` log event of a hook run, whatever its result.

    The keys shared with the actuator's libvirt actions come first, so one log filter on
    `event=policy_action` sees every action; `alarm` is the transition the hook was run for.
    A guest action's run (guest_paused, guest_resumed...) names the guest, as the resume does.
    """
    guest = {"guest": event.guest} if event.guest else {}
    emit(
        "policy_action",
        host=event.host,
        pool=event.pool,
        action=f"hook:{hook_name}",
        result=result,
        alarm=event.action,
        episode=event.episode,
        **guest,
        **details,
    )


def _report(
    on_result: ResultCallback, hook_name: str, event: HookEvent, result: HookResult
) -> None:
    try:
        on_result(hook_name, event, result)
    except Exception:
        log.exception("hook_result_callback_failed", hook=hook_name, result=result)


def _describe(hook: Hook) -> dict[str, Any]:
    """What a hook would run, as it may be logged (no webhook headers, no URL credentials)."""
    if isinstance(hook, ExecHook):
        return {"argv": list(hook.argv), "timeout": hook.timeout}
    return {"url": redact_url(hook.url), "timeout": hook.timeout, "retries": hook.retries}
