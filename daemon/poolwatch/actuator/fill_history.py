"""A pool's fill level over the last hour, as its policy status publishes it for the landing
page's chart: a bounded, downsampled copy of the usage history the forecast keeps.

The copy holds (unix time, used / capacity) points, oldest first, with "used" as the forecast
stores it (capacity minus free space). It inherits the history's limits: it covers at most the
forecast window (when that is shorter than an hour), and starts again after a large drop in
usage (a deleted volume), which is where the forecast starts its line again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from poolwatch.policies.forecast import UsageHistory

CHART_SPAN = 3600.0  # seconds of history the chart shows at most
MAX_POINTS = 60
# Old points leave the chart even while no sample arrives (a stopped pool): look again this
# often at the latest.
RECHECK_SECONDS = 60.0

FillPoints = tuple[tuple[float, float], ...]


def downsample(
    samples: Iterable[tuple[float, int]],
    capacity: int,
    *,
    now: float,
    span: float = CHART_SPAN,
    max_points: int = MAX_POINTS,
) -> FillPoints:
    """The (time, used / capacity) points of ``samples`` (time-ordered (time, used bytes)) in
    the ``span`` seconds up to ``now``, at most ``max_points`` of them.

    Beyond ``max_points`` the time they cover is cut into buckets of whole seconds, aligned to
    the clock, and each bucket keeps its newest sample: a point stays where it is when new
    samples arrive, so the chart does not jitter from one page load to the next, and the newest
    sample is always the last point.
    """
    if capacity <= 0 or max_points < 1:
        return ()
    start = now - span
    recent = [(at, used) for at, used in samples if start <= at <= now]
    if len(recent) > max_points:
        width = max(1.0, math.ceil((recent[-1][0] - recent[0][0]) / max_points))
        newest: dict[int, tuple[float, int]] = {}
        for at, used in recent:
            newest[math.floor(at / width)] = (at, used)
        # Aligned buckets can number one more than max_points: the oldest one goes.
        recent = list(newest.values())[-max_points:]
    return tuple((at, round(used / capacity, 4)) for at, used in recent)


class FillHistory:
    """The published copy of one pool's history, made again only when it can have changed."""

    __slots__ = ("_key", "_points")

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._points: FillPoints = ()

    def points(self, history: UsageHistory | None, newest: float | None, now: float) -> FillPoints:
        """The chart's points for ``history``, whose newest sample was taken at ``newest``.

        The actuator asks on every evaluation, several times a second; the copy changes only
        with a new sample, and as time moves old points out of the span.
        """
        if history is None or history.capacity is None:
            return ()
        key = (id(history), newest, len(history), history.capacity, now // RECHECK_SECONDS)
        if key != self._key:
            self._key = key
            self._points = downsample(history.samples(), history.capacity, now=now)
        return self._points
