"""Units: durations, sizes, ratios, limits and clear margins, parsed and formatted."""

from __future__ import annotations

import re

import pytest

from poolwatch.config import (
    Hysteresis,
    format_clear,
    format_duration,
    format_limit,
    format_ratio,
    format_size,
    parse_clear,
    parse_duration,
    parse_limit,
    parse_ratio,
    parse_size,
)
from poolwatch.policies.rules import FreeBelow, UsedRatio
from tests.unit.config.support import GiB

# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("15s", 15.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1s500ms", 1.5),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["15", "", "-5s", "5x", "5m1h", "1.5s", "15 s", "5M", "1h1h"])
def test_parse_duration_rejects_with_the_accepted_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid duration .*\(use e\.g\. \"15s\""):
        parse_duration(text)


@pytest.mark.parametrize("text", ["365d1s", "99999999999999999999d", "1" + "0" * 5000 + "s"])
def test_parse_duration_refuses_more_than_a_year(text: str) -> None:
    with pytest.raises(ValueError, match="longer than the maximum of 365d"):
        parse_duration(text)


def test_parse_duration_takes_a_year_and_ascii_digits_only() -> None:
    assert parse_duration("365d") == 365 * 86400
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("\u0661\u0665s")  # Arabic-Indic "15"


# --- sizes and ratios -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0B", 0),
        ("512B", 512),
        ("1KiB", 1024),
        ("50GiB", 50 * 2**30),
        ("1.5MiB", 1572864),
        ("2TiB", 2 * 2**40),
        ("1KB", 1000),
        ("2.05MB", 2050000),
        ("500GB", 500 * 10**9),
        ("2TB", 2 * 10**12),
        ("20 GiB", 20 * 2**30),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["50", "50gb", "50G", "5XB", "-1GiB", "GiB", "1,5GiB", ""])
def test_parse_size_rejects_with_the_accepted_form(text: str) -> None:
    with pytest.raises(ValueError, match=r'invalid size .*\(use e\.g\. "512MiB", "50GiB"'):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "ratio"), [("85%", 0.85), ("0%", 0.0), ("100%", 1.0), ("92.5%", 0.925)]
)
def test_parse_ratio(text: str, ratio: float) -> None:
    assert parse_ratio(text) == pytest.approx(ratio)


@pytest.mark.parametrize("text", ["0.85", "85", "-5%", "%", "eighty%"])
def test_parse_ratio_rejects_with_the_accepted_form(text: str) -> None:
    with pytest.raises(ValueError, match=r'use a percentage such as "85%"'):
        parse_ratio(text)


def test_parse_ratio_rejects_more_than_everything() -> None:
    with pytest.raises(ValueError, match="between 0% and 100%"):
        parse_ratio("101%")


# --- policies: limits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("85%", UsedRatio(0.85)),
        ("100%", UsedRatio(1.0)),
        ("0.5%", UsedRatio(0.005)),
        ("< 20GiB", FreeBelow(20 * GiB)),
        ("<20GiB", FreeBelow(20 * GiB)),
        ("< 500GB", FreeBelow(500 * 10**9)),
    ],
)
def test_parse_limit(text: str, limit: UsedRatio | FreeBelow) -> None:
    assert parse_limit(text) == limit


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("20GiB", 'invalid limit "20GiB": free space needs a "<": write "< 20GiB"'),
        ("0%", 'invalid limit "0%": a used ratio must be more than 0%'),
        ("101%", 'invalid ratio "101%": must be between 0% and 100%'),
        ("< 0B", 'invalid limit "< 0B": free space is never below 0 bytes'),
        ("> 20GiB", 'invalid limit "> 20GiB" (use a used ratio such as "85%" or free space'),
        ("< 20", 'invalid size " 20" (use e.g.'),
        ("0.85", 'invalid limit "0.85" (use a used ratio'),
    ],
)
def test_parse_limit_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_limit(text)


@pytest.mark.parametrize(
    ("text", "clear"),
    [("2%", Hysteresis(ratio=0.02)), ("5GiB", Hysteresis(bytes=5 * GiB))],
)
def test_parse_clear(text: str, clear: Hysteresis) -> None:
    assert parse_clear(text) == clear


# --- formatting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5400.0, "1h30m"), (0.25, "250ms"), (0.0, "0s"), (90061.5, "1d1h1m1s500ms"), (600.0, "10m")],
)
def test_format_duration_is_the_inverse_of_parse(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("size", "text"),
    [(20 * GiB, "20GiB"), (2_000_000, "2MB"), (1536, "1536B"), (0, "0B"), (10**12, "1TB")],
)
def test_format_size_is_the_shortest_exact_spelling(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size


def test_format_ratio_limit_and_clear() -> None:
    assert format_ratio(0.925) == "92.5%"
    assert format_limit(UsedRatio(0.85)) == "85%"
    assert format_limit(FreeBelow(20 * GiB)) == "< 20GiB"
    assert format_clear(Hysteresis(ratio=0.02)) == "2%"
    assert format_clear(Hysteresis(bytes=5 * GiB)) == "5GiB"
    for text in ("85%", "< 20GiB", "< 500GB"):
        assert format_limit(parse_limit(text)) == text
