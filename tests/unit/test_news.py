"""PoolNews: what a connection's pool events said that its readings may not show yet."""

from __future__ import annotations

from poolwatch.model import PoolEventKind
from poolwatch.news import PoolNews


async def test_a_poll_begun_before_an_event_knows_it_is_outdated() -> None:
    news = PoolNews()
    news.heard("images", PoolEventKind.STOPPED)
    seq = news.seq  # a poll begins
    assert news.since(seq, "images") is None
    news.heard("images", PoolEventKind.UNDEFINED)
    assert news.since(seq, "images") is PoolEventKind.UNDEFINED
    assert news.since(seq, "isos") is None


async def test_only_a_definition_or_a_policy_makes_the_next_reading_ask_for_the_flags() -> None:
    news = PoolNews()
    news.heard("images", PoolEventKind.STARTED)
    assert not news.take_flags_unknown("images")
    news.heard("images", PoolEventKind.DEFINED)
    assert news.take_flags_unknown("images")
    assert not news.take_flags_unknown("images")  # taken by the reading that asks
    news.flags_unknown("images")  # a policy set autostart
    assert news.take_flags_unknown("images")


async def test_a_start_is_awaited_until_a_reading_finds_the_pool_running() -> None:
    news = PoolNews()
    news.heard("images", PoolEventKind.STARTED)
    [started] = news.in_flight()
    news.read("images", active=False)  # a re-read begun before the start
    assert not started.done()
    news.read("images", active=True)
    assert started.done()
    assert news.in_flight() == []


async def test_a_definition_is_awaited_until_any_reading_and_ends_with_the_pool() -> None:
    news = PoolNews()
    news.heard("images", PoolEventKind.DEFINED)
    news.read("images", active=False)
    assert news.in_flight() == []
    news.heard("isos", PoolEventKind.DEFINED)
    news.heard("isos", PoolEventKind.STOPPED)  # says nothing of the definition
    [defined] = news.in_flight()
    news.heard("isos", PoolEventKind.UNDEFINED)  # the pool leaves the inventory at once
    assert defined.done()
    assert news.in_flight() == []
