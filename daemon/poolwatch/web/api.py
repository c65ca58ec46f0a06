"""The query parameters of /api/v1: how the handlers read ``limit`` and flags like ``volumes``.

The documents the handlers answer with are built in :mod:`poolwatch.documents`; the handlers
themselves live in :mod:`poolwatch.web.app`.
"""

from __future__ import annotations

DEFAULT_EVENTS_LIMIT = 100
MAX_EVENTS_LIMIT = 500


def parse_limit(raw: str | None) -> int:
    """The ``limit`` query parameter: a positive integer, capped at MAX_EVENTS_LIMIT."""
    if raw is None or raw == "":
        return DEFAULT_EVENTS_LIMIT
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise ValueError(f"limit must be a positive integer, not {raw!r}")
    return min(int(raw), MAX_EVENTS_LIMIT)


def parse_flag(raw: str | None) -> bool:
    return raw is not None and raw.lower() in {"1", "true", "yes", "on"}
