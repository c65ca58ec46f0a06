"""The pool.refresh() passes: which pools, in what order, and what a failure does."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from poolwatch.config import PollConfig
from poolwatch.model import PoolState
from poolwatch.refreshes import refresh_pools, urgent_refresh_interval
from poolwatch.source import PoolNotFound, SourceError
from tests.unit.factories import pool


class Source:
    def __init__(self, *, read_only: bool = False, failing: tuple[str, ...] = ()) -> None:
        self.read_only = read_only
        self.failing = failing
        self.refreshed: list[str] = []

    async def refresh_pool(self, name: str, *, urgent: bool = False) -> None:
        if name == "gone":
            raise PoolNotFound(name)
        if name in self.failing:
            raise SourceError("directory vanished", code=38)
        self.refreshed.append(name)


def pools(*names: str, stopped: tuple[str, ...] = ()) -> list[Any]:
    return [
        pool(name, state=PoolState.INACTIVE, active=False) if name in stopped else pool(name)
        for name in names
    ]


async def refresh(source: Source, names: list[Any], only: frozenset[str] | None = None) -> None:
    log = structlog.get_logger()
    await refresh_pools(source, names, only=only, detached=lambda: False, log=log)  # type: ignore[arg-type]


async def test_running_pools_are_refreshed_one_after_another() -> None:
    source = Source()
    await refresh(source, pools("a", "b", "gone", "c", stopped=("b",)))
    assert source.refreshed == ["a", "c"]


async def test_only_the_pools_asked_for() -> None:
    source = Source()
    await refresh(source, pools("a", "b", "c"), only=frozenset({"c"}))
    assert source.refreshed == ["c"]


async def test_a_failure_does_not_stop_the_others_and_is_reported() -> None:
    source = Source(failing=("a",))
    with pytest.raises(SourceError, match="refresh failed for a"):
        await refresh(source, pools("a", "b"))
    assert source.refreshed == ["b"]


async def test_a_read_only_connection_refreshes_nothing() -> None:
    source = Source(read_only=True)
    await refresh(source, pools("a"))
    assert source.refreshed == []


@pytest.mark.parametrize(
    ("interval", "refresh_interval", "urgent"),
    [(15.0, 300.0, 30.0), (60.0, 300.0, 60.0), (15.0, 20.0, 20.0), (15.0, 0.0, 0.0)],
)
def test_pools_near_a_limit_are_refreshed_sooner_but_not_too_often(
    interval: float, refresh_interval: float, urgent: float
) -> None:
    poll = PollConfig(interval=interval, refresh_interval=refresh_interval)
    assert urgent_refresh_interval(poll) == urgent
