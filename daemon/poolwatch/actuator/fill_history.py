"""A pool's fill level over the last hour, as its policy status publishes it for the landing
page's chart.

Each pool keeps its own short record of allocation / capacity (the figure its fill bar shows and
ratio limits compare): the forecast's history cannot serve, since it starts again after every
large drop (a deleted volume) and spans the forecast window rather than an hour. The record holds
at most `MAX_SAMPLES` readings a pool: it keeps every reading at first, and when it is full it
keeps one reading per ever wider step of time (the newest of each), so it covers the first
minutes at the poll's own pace and the hour evenly at a coarser one. The published copy holds at
most `MAX_POINTS` points.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

CHART_SPAN = 3600.0  # seconds of history the chart shows
MAX_POINTS = 60
MAX_SAMPLES = 2 * MAX_POINTS
# Old points leave the chart even while no sample arrives (a stopped pool): look again this
# often at the latest.
RECHECK_SECONDS = 60.0

FillPoints = tuple[tuple[float, float], ...]


def downsample(
    samples: Iterable[tuple[float, float]],
    *,
    now: float,
    span: float = CHART_SPAN,
    max_points: int = MAX_POINTS,
) -> FillPoints:
    """The (time, fill ratio) points of ``samples`` (time-ordered) in the ``span`` seconds up to
    ``now``, at most ``max_points`` of them.

    Beyond ``max_points`` the time they cover is cut into buckets of whole seconds, aligned to
    the clock, and each bucket keeps its newest sample: a point stays where it is when new
    samples arrive, so the chart does not jitter from one page load to the next, and the newest
    sample is always the last point.
    """
    if max_points < 1:
        return ()
    start = now - span
    recent = [(at, ratio) for at, ratio in samples if start <= at <= now]
    if len(recent) > max_points:
        width = max(1.0, math.ceil((recent[-1][0] - recent[0][0]) / max_points))
        newest: dict[int, tuple[float, float]] = {}
        for at, ratio in recent:
            newest[math.floor(at / width)] = (at, ratio)
        # Aligned buckets can number one more than max_points: the oldest one goes.
        recent = list(newest.values())[-max_points:]
    return tuple((at, round(ratio, 4)) for at, ratio in recent)


class FillHistory:
    """One pool's record, and the published copy, made again only when it can have changed."""

    __slots__ = ("_key", "_points", "_samples", "_step")

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque()
        self._step = 0.0  # seconds of time per reading kept; 0: every reading
        self._key: tuple[float, float] | None = None
        self._points: FillPoints = ()

    def add(self, at: float, ratio: float) -> None:
        """Record a reading taken at ``at`` (a reading already recorded is ignored)."""
        samples = self._samples
        if samples and at <= samples[-1][0]:
            return
        if samples and self._step and _slot(samples[-1][0], self._step) == _slot(at, self._step):
            samples[-1] = (at, ratio)  # the newest reading of its step stands for it
        else:
            samples.append((at, ratio))
        while samples[0][0] < at - CHART_SPAN:
            samples.popleft()
        while len(samples) > MAX_SAMPLES:
            covered = samples[-1][0] - samples[0][0]
            self._step = max(1.0, 2 * self._step, math.ceil(covered / (MAX_SAMPLES // 2)))
            newest = {_slot(when, self._step): (when, value) for when, value in samples}
            samples = self._samples = deque(newest.values())

    def points(self, now: float) -> FillPoints:
        """The chart's points. The actuator asks on every evaluation, several times a second;
        the copy changes only with a new sample, and as time moves old points out of the span."""
        if not self._samples:
            return ()
        key = (self._samples[-1][0], now // RECHECK_SECONDS)
        if key != self._key:
            self._key = key
            self._points = downsample(self._samples, now=now)
        return self._points


def _slot(at: float, step: float) -> int:
    return math.floor(at / step)
