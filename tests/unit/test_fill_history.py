"""The fill history a pool publishes for its chart: bounded, downsampled, stable, and made again
only when it can have changed."""

from __future__ import annotations

import itertools

from poolwatch.actuator.fill_history import CHART_SPAN, MAX_POINTS, FillHistory, downsample
from poolwatch.policies.forecast import UsageHistory

GIB = 1024**3
CAPACITY = 100 * GIB
T0 = 1_700_000_000.0


def test_few_samples_are_kept_as_they_are_as_fill_ratios() -> None:
    samples = [(T0, 40 * GIB), (T0 + 15, 41 * GIB), (T0 + 30, 45 * GIB)]
    assert downsample(samples, CAPACITY, now=T0 + 30) == (
        (T0, 0.4),
        (T0 + 15, 0.41),
        (T0 + 30, 0.45),
    )


def test_only_the_last_hour_is_kept() -> None:
    samples = [(T0 + 60 * i, i * GIB) for i in range(100)]  # 99 minutes
    now = T0 + 60 * 99
    points = downsample(samples, CAPACITY, now=now)
    assert points[0][0] >= now - CHART_SPAN
    assert points[-1] == (now, 0.99)
    assert len(points) == MAX_POINTS  # minute samples over the hour: 61, one too many


def test_many_samples_are_bounded_and_keep_the_newest() -> None:
    samples = [(T0 + 2 * i, (40 * GIB) + i * 2**20) for i in range(1800)]  # an hour at 2 s
    now = samples[-1][0]
    points = downsample(samples, CAPACITY, now=now)
    assert len(points) <= MAX_POINTS
    assert len(points) >= MAX_POINTS - 1
    assert points[-1] == (now, round(samples[-1][1] / CAPACITY, 4))
    times = [at for at, _ in points]
    assert times == sorted(times)
    # Evenly spread: no gap is much wider than the average one.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 2 * (times[-1] - times[0]) / (len(times) - 1)


def test_points_stay_put_as_new_samples_arrive() -> None:
    samples = [(T0 + 2 * i, 40 * GIB + i * 2**20) for i in range(1000)]
    before = downsample(samples, CAPACITY, now=samples[-1][0])
    samples.append((samples[-1][0] + 2, 41 * GIB))
    after = downsample(samples, CAPACITY, now=samples[-1][0])
    # Buckets are aligned to the clock: only the newest point moved on.
    assert set(before[1:-1]) <= set(after)


def test_nothing_without_a_capacity_or_samples() -> None:
    assert downsample([(T0, GIB)], 0, now=T0) == ()
    assert downsample([], CAPACITY, now=T0) == ()


def test_the_published_copy_follows_the_history() -> None:
    history = UsageHistory(window=6 * 3600.0)
    published = FillHistory()
    assert published.points(None, None, T0) == ()
    assert published.points(history, None, T0) == ()
    history.add(T0, 40 * GIB, CAPACITY)
    first = published.points(history, T0, T0)
    assert first == ((T0, 0.4),)
    # Asked again without a new sample: the same copy, not a new one.
    assert published.points(history, T0, T0 + 1) is first
    history.add(T0 + 15, 42 * GIB, CAPACITY)
    assert published.points(history, T0 + 15, T0 + 15) == ((T0, 0.4), (T0 + 15, 0.42))
    # Without new samples (a stopped pool) the points still leave the chart after an hour.
    assert published.points(history, T0 + 15, T0 + CHART_SPAN + 10) == ((T0 + 15, 0.42),)
