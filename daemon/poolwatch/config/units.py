"""The config's units: durations, sizes, ratios, threshold limits and clear margins.

Each is parsed from the operator's spelling ("1h30m", "50GiB", "85%", "< 20GiB") and formatted
back to the shortest exact spelling, for messages and dumps: `parse_x(format_x(v)) == v`. Plain
functions raising ValueError, usable outside pydantic (the command line parses `--timeout` here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from poolwatch.config.messages import quote
from poolwatch.policies.rules import FreeBelow, Limit, UsedRatio

DURATION_HINT = '(use e.g. "15s", "5m", "1h30m")'
# ASCII digits only: \d would also take other scripts' digits, which int() accepts.
_DURATION_RE = re.compile(
    r"(?:(?P<d>[0-9]+)d)?(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m(?!s))?(?:(?P<s>[0-9]+)s)?"
    r"(?:(?P<ms>[0-9]+)ms)?"
)
_DURATION_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# The longest duration any setting takes: a year. Longer ones are typos, and sleeping for
# "99999999999999999999d" overflows asyncio's timers (OverflowError) instead of failing here.
MAX_DURATION = 365 * 86400.0

_SIZE_RE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]i?B|B)")
_SIZE_UNIT_BYTES = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}
_RATIO_RE = re.compile(r"(?P<percent>\d+(?:\.\d+)?)\s*%")

_LIMIT_HINT = '(use a used ratio such as "85%" or free space such as "< 20GiB")'
_CLEAR_HINT = (
    '(use a ratio such as "2%" for used-ratio limits or a size such as "5GiB" for free-space '
    "limits)"
)


@dataclass(frozen=True, slots=True)
class Hysteresis:
    """A threshold's `clear`: how far back past its limit a level must go before it clears.

    Exactly one of the two is set: `ratio` (points of used ratio, "2%") for used-ratio limits,
    `bytes` ("5GiB") for free-space limits.
    """

    ratio: float = 0.0
    bytes: int = 0


# --- parsing ----------------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus-style duration such as "250ms", "15s" or "1h30m"."""
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None:
        why = ": must not be negative" if text.lstrip().startswith("-") else ""
        raise ValueError(f"invalid duration {quote(text)}{why} {DURATION_HINT}")
    counts = {unit: count for unit, count in match.groupdict().items() if count is not None}
    # Very long digit strings are over the limit anyway; int() of 4,300+ digits would raise.
    if any(len(count.lstrip("0")) > 12 for count in counts.values()):
        raise ValueError(too_long(text))
    seconds = sum(int(count) * _DURATION_UNIT_SECONDS[unit] for unit, count in counts.items())
    if seconds > MAX_DURATION:
        raise ValueError(too_long(text))
    return seconds


def too_long(value: object) -> str:
    """The message for a duration over MAX_DURATION."""
    shown = quote(value) if isinstance(value, str) else value
    return f"invalid duration {shown}: longer than the maximum of 365d"


def parse_size(text: str) -> int:
    """Bytes in a size such as "50GiB" (binary units) or "500GB" (decimal units)."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f'invalid size {quote(text)} (use e.g. "512MiB", "50GiB", "2TB"; '
            "units B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
        )
    # Decimal keeps "2.05MB" at 2050000 bytes where float arithmetic gives 2049999.
    return int(Decimal(match["number"]) * _SIZE_UNIT_BYTES[match["unit"]])


def parse_ratio(text: str) -> float:
    """A percentage such as "85%" as a ratio between 0 and 1."""
    match = _RATIO_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f'invalid ratio {quote(text)} (use a percentage such as "85%")')
    percent = float(match["percent"])
    if percent > 100:
        raise ValueError(f"invalid ratio {quote(text)}: must be between 0% and 100%")
    return percent / 100


def parse_limit(text: str) -> Limit:
    """A threshold limit: a used ratio ("85%") or free space below a size ("< 20GiB")."""
    stripped = text.strip()
    if stripped.startswith("<"):
        size = parse_size(stripped[1:])
        if size == 0:
            raise ValueError(f"invalid limit {quote(text)}: free space is never below 0 bytes")
        return FreeBelow(size)
    if stripped.endswith("%"):
        ratio = parse_ratio(stripped)
        if ratio == 0:
            raise ValueError(f"invalid limit {quote(text)}: a used ratio must be more than 0%")
        return UsedRatio(ratio)
    if _SIZE_RE.fullmatch(stripped):
        # A bare size is ambiguous (used? free?); the "<" says "alarm when free space is below".
        raise ValueError(
            f'invalid limit {quote(text)}: free space needs a "<": write "< {stripped}"'
        )
    raise ValueError(f"invalid limit {quote(text)} {_LIMIT_HINT}")


def parse_clear(text: str) -> Hysteresis:
    """A threshold's `clear`: a ratio ("2%") for used-ratio limits, a size ("5GiB") for
    free-space limits; never zero."""
    stripped = text.strip()
    if stripped.startswith("<"):
        raise ValueError(
            f'invalid clear {quote(text)}: a clear margin takes no "<"; '
            f"write {quote(stripped[1:].strip())}"
        )
    if stripped.endswith("%"):
        clear = Hysteresis(ratio=parse_ratio(stripped))
    elif _SIZE_RE.fullmatch(stripped):
        clear = Hysteresis(bytes=parse_size(stripped))
    else:
        raise ValueError(f"invalid clear {quote(text)} {_CLEAR_HINT}")
    if clear.ratio == 0 and clear.bytes == 0:
        raise ValueError(f"must be greater than 0 (got {quote(text)})")
    return clear


# --- formatting: the inverse of the parsers, for messages and dumps ---------------------------


def format_duration(seconds: float) -> str:
    """A duration as the config writes it: 5400.0 is "1h30m"."""
    remaining = round(seconds * 1000)
    parts = []
    for unit, unit_seconds in _DURATION_UNIT_SECONDS.items():
        count, remaining = divmod(remaining, round(unit_seconds * 1000))
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def format_size(size: int) -> str:
    """The shortest exact spelling of a size: 21474836480 is "20GiB", 2000000 is "2MB"."""
    spellings = [
        f"{size // unit}{name}"
        for name, unit in sorted(_SIZE_UNIT_BYTES.items(), key=lambda item: -item[1])
        if size % unit == 0
    ]
    return min(spellings, key=len)


def format_ratio(ratio: float) -> str:
    """A ratio as a percentage: 0.85 is "85%"."""
    return f"{ratio * 100:.10g}%"


def format_limit(limit: Limit) -> str:
    """A threshold limit as the config writes it: "85%" or "< 20GiB"."""
    if isinstance(limit, UsedRatio):
        return format_ratio(limit.ratio)
    return f"< {format_size(limit.bytes)}"


def format_clear(clear: Hysteresis) -> str:
    """A clear margin as the config writes it: "2%" or "5GiB"."""
    return format_ratio(clear.ratio) if clear.ratio else format_size(clear.bytes)
