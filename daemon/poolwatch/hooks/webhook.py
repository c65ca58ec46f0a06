"""Webhooks: POST an alarm as JSON, retrying with backoff under one idempotency key per event.

Every attempt for one event carries the same `Idempotency-Key` ({episode}:{action}), so a
receiver that saw an attempt whose answer was lost can tell the retry is no new alarm.
Configured headers (typically Authorization) and URL credentials are secrets: they never appear
in a log line or an error message this module produces.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from poolwatch.hooks.event import HookEvent
from poolwatch.policies.rules import WebhookHook

DEFAULT_BACKOFF_BASE = 1.0
DEFAULT_BACKOFF_MAX = 30.0

WebhookResult = Literal["ok", "failed", "timeout"]


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    result: WebhookResult
    attempts: int
    status: int | None  # HTTP status of the last answer, if any attempt got one
    error: str | None = None  # the last attempt's error, free of credentials


def idempotency_key(event: HookEvent) -> str:
    return f"{event.episode}:{event.action}"


def webhook_body(event: HookEvent, *, sent_at: float) -> dict[str, Any]:
    return {
        "action": event.action,
        "host": event.host,
        "pool": event.pool,
        "pool_uuid": event.pool_uuid,
        "level": event.level,
        "previous_level": event.previous_level,
        # allocation / capacity (the snapshot's fill_ratio) and min(available, f_bavail) (its
        # free_bytes): the figures ratio and free-space limits compare.
        "used_ratio": _finite(event.used_ratio),
        "available_bytes": event.available_bytes,
        "time_to_full_seconds": _finite(event.time_to_full_seconds),
        "episode": event.episode,
        "snapshot": dict(event.snapshot),  # any Mapping; json.dumps takes only dicts
        "guest": event.guest or None,
        "guests": list(event.guests),
        "sent_at": datetime.fromtimestamp(sent_at, UTC).isoformat(timespec="milliseconds"),
    }


def _finite(value: float | None) -> float | None:
    # JSON has no NaN or Infinity; "unknown" is null.
    return value if value is not None and math.isfinite(value) else None


def redact_url(url: str) -> str:
    """The URL as it may be logged: without user, password, query and fragment.

    Query strings often carry tokens (`?token=...`), so they go with the userinfo.
    """
    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        return "<invalid url>"
    return str(parsed.with_user(None).with_query(None).with_fragment(None))


def _redact_text(text: str, url: str) -> str:
    """`text` with every part of `url` that may be secret replaced."""
    text = text.replace(url, redact_url(url))
    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        return text
    for secret in (parsed.raw_user, parsed.raw_password, parsed.raw_query_string):
        if secret:
            text = text.replace(secret, "***")
    return text


def _is_retryable(status: int) -> bool:
    return status == 429 or status >= 500


class WebhookSender:
    """Delivers one event to one webhook, attempt by attempt, over a shared session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._clock = clock
        self._rng = random.Random() if rng is None else rng  # noqa: S311 - jitter, not crypto

    async def send(self, hook: WebhookHook, event: HookEvent) -> WebhookOutcome:
        headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/json"})
        for name, value in hook.headers:
            headers[name] = value
        headers["Idempotency-Key"] = idempotency_key(event)
        timeout = aiohttp.ClientTimeout(total=hook.timeout)
        allowed = 1 + max(0, hook.retries)
        result: WebhookResult = "failed"
        status: int | None = None
        error: str | None = None
        for attempt in range(1, allowed + 1):
            try:
                body = json.dumps(webhook_body(event, sent_at=self._clock()), allow_nan=False)
            except (TypeError, ValueError) as exc:
                return WebhookOutcome("failed", attempt - 1, status, f"body not JSON: {exc}")
            retry_after: str | None = None
            try:
                # Redirects are refused: a webhook that moved is a config error, and following
                # one would carry the configured headers to wherever it points.
                async with self._session.post(
                    hook.url,
                    data=body.encode(),
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
            except TimeoutError:
                result, status, error = "timeout", None, f"no answer within {hook.timeout:g}s"
            except ValueError as exc:
                # A malformed URL, or credentials both in the URL and in an Authorization
                # header: no retry can fix that.
                error = _redact_text(f"{type(exc).__name__}: {exc}", hook.url)
                return WebhookOutcome("failed", attempt, None, error)
            except aiohttp.ClientError as exc:
                result, status = "failed", None
                error = _redact_text(f"{type(exc).__name__}: {exc}", hook.url)
            else:
                if 200 <= status < 300:
                    return WebhookOutcome("ok", attempt, status)
                if not _is_retryable(status):
                    return WebhookOutcome("failed", attempt, status, f"HTTP {status}")
                result, error = "failed", f"HTTP {status}"
            if attempt < allowed:
                await asyncio.sleep(self._delay(attempt, retry_after))
        return WebhookOutcome(result, allowed, status, error)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Exponential backoff with jitter, stretched to a receiver's Retry-After seconds."""
        # The exponent is capped so a large `retries` cannot overflow a float.
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** min(attempt - 1, 30))
        delay = self._rng.uniform(ceiling / 2, ceiling)
        if retry_after is not None and retry_after.strip().isdigit():
            delay = max(delay, min(float(retry_after), self._backoff_max))
        return delay
