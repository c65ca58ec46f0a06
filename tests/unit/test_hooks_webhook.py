"""Webhooks against a real aiohttp receiver: retries, idempotency keys, timeouts, secrets."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from poolwatch.hooks.webhook import redact_url, webhook_body
from poolwatch.policies.rules import Hook, WebhookHook
from tests.helpers import serving
from tests.unit.hook_runs import alarm, hook_actions, running, sh


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
        runner.submit("w", alarm(episode="ep-7", action="critical"), on_result=results)
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
        "guest",
        "guests",
        "sent_at",
    }
    assert (body["guest"], body["guests"]) == (None, [])
    assert body["action"] == "critical"
    assert body["snapshot"] == {"name": "tank", "capacity_bytes": 100, "state": "running"}
    assert body["used_ratio"] == 0.8734


async def test_webhook_client_error_fails_at_once() -> None:
    with structlog.testing.capture_logs() as logs:
        async with (
            receiving(Receiver(statuses=[400])) as receiver,
            running([webhook(receiver.url)]) as (runner, results),
        ):
            runner.submit("w", alarm(), on_result=results)
            assert await results.wait(1) == ["failed"]
    assert len(receiver.requests) == 1
    [finished] = hook_actions(logs)
    assert finished["status"] == 400
    assert finished["attempts"] == 1


async def test_webhook_redirect_is_not_followed() -> None:
    async with (
        receiving(Receiver(statuses=[307])) as receiver,
        running([webhook(receiver.url)]) as (runner, results),
    ):
        runner.submit("w", alarm(), on_result=results)
        assert await results.wait(1) == ["failed"]
    assert len(receiver.requests) == 1


async def test_hung_webhook_times_out_with_bounded_retries() -> None:
    async with (
        receiving(Receiver(hang=True)) as receiver,
        running([webhook(receiver.url, timeout=0.1, retries=2)]) as (runner, results),
    ):
        runner.submit("w", alarm(), on_result=results)
        assert await results.wait(1) == ["timeout"]
    assert receiver.keys == ["ep-1:warning"] * 3


async def test_unreachable_webhook_fails_after_its_retries() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with structlog.testing.capture_logs() as logs:
        async with running([webhook(f"http://127.0.0.1:{port}/", retries=2)]) as (r, results):
            r.submit("w", alarm(), on_result=results)
            assert await results.wait(1) == ["failed"]
    [finished] = hook_actions(logs)
    assert finished["attempts"] == 3


async def test_hung_webhook_with_a_full_queue_drops_and_keeps_the_loop_responsive(
    tmp_path: Path,
) -> None:
    out = tmp_path / "exec-ran"
    hooks: list[Hook] = []
    async with receiving(Receiver(hang=True)) as receiver:
        hooks = [webhook(receiver.url, timeout=30, retries=5), sh('echo ran > "$1"', out)]
        async with running(hooks, queue_size=2) as (runner, results):
            runner.submit("w", alarm(episode="ep-0"), on_result=results)
            await asyncio.wait_for(receiver.arrived.wait(), 5)  # the worker is stuck on it
            started = time.monotonic()
            for index in range(1, 11):
                runner.submit("w", alarm(episode=f"ep-{index}"), on_result=results)
            assert time.monotonic() - started < 0.05
            assert results.results == ["dropped"] * 8
            # Other hooks are not held up by the stuck one.
            runner.submit("h", alarm(), on_result=results)
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
                runner.submit("w", alarm(), on_result=results)
                assert await results.wait(1) == ["failed"]
                runner.update({"w": replace(hook, url="http://pw-s3cret@[::1")})  # bad URL
                runner.submit("w", alarm(), on_result=results)
                assert await results.wait(2) == ["failed", "failed"]
    headers, _ = receiver.requests[0]
    assert headers["X-Api-Key"] == header_value
    assert headers["Authorization"].startswith("Basic ")
    assert len(receiver.requests) == 2
    finished = hook_actions(logs)
    assert finished[0]["url"] == receiver.url
    assert len(finished) == 2
    for entry in logs:
        assert "s3cret" not in repr(entry)


async def test_removed_webhook_still_delivers_what_was_queued() -> None:
    async with (
        receiving(Receiver()) as receiver,
        running([webhook(receiver.url)]) as (runner, results),
    ):
        runner.submit("w", alarm(), on_result=results)
        runner.update({})
        assert await results.wait(1) == ["ok"]
        runner.submit("w", alarm(), on_result=results)
        assert results.results == ["ok", "failed"]  # unknown now


def test_webhook_body_and_redaction() -> None:
    body = webhook_body(alarm(used_ratio=float("nan")), sent_at=0.0)
    assert body["used_ratio"] is None
    assert body["sent_at"] == "1970-01-01T00:00:00.000+00:00"
    assert (
        redact_url("https://u:p@example.org:8443/a/b?token=t#f") == "https://example.org:8443/a/b"
    )
