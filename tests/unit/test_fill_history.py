"""The fill history a pool publishes for its chart: its own record of allocation / capacity,
bounded, downsampled, stable, and made again only when it can have changed."""

from __future__ import annotations

import itertools

from poolwatch.actuator.fill_history import (
    BUCKET_SECONDS,
    CHART_SPAN,
    MAX_POINTS,
    FillHistory,
    downsample,
)

T0 = 1_700_000_000.0  # a multiple of BUCKET_SECONDS


def test_few_samples_are_kept_as_they_are() -> None:
    samples = [(T0, 0.4), (T0 + 15, 0.41), (T0 + 30, 0.45)]
    assert downsample(samples, now=T0 + 30) == ((T0, 0.4), (T0 + 15, 0.41), (T0 + 30, 0.45))


def test_only_the_last_hour_is_kept() -> None:
    samples = [(T0 + 60 * i, i / 100) for i in range(100)]  # 99 minutes
    now = T0 + 60 * 99
    points = downsample(samples, now=now)
    assert points[0][0] >= now - CHART_SPAN
    assert points[-1] == (now, 0.99)
    assert len(points) == MAX_POINTS  # minute samples over the hour: 61, one too many


def test_many_samples_are_bounded_and_keep_the_newest() -> None:
    samples = [(T0 + 2 * i, 0.4 + i / 10_000) for i in range(1800)]  # an hour at 2 s
    now = samples[-1][0]
    points = downsample(samples, now=now)
    assert MAX_POINTS - 1 <= len(points) <= MAX_POINTS
    assert points[-1] == (now, round(samples[-1][1], 4))
    times = [at for at, _ in points]
    assert times == sorted(times)
    # Evenly spread: no gap is much wider than the average one.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 2 * (times[-1] - times[0]) / (len(times) - 1)


def test_points_stay_put_as_new_samples_arrive() -> None:
    samples = [(T0 + 2 * i, 0.4 + i / 10_000) for i in range(1000)]
    before = downsample(samples, now=samples[-1][0])
    samples.append((samples[-1][0] + 2, 0.41))
    after = downsample(samples, now=samples[-1][0])
    # Buckets are aligned to the clock: only the newest point moved on.
    assert set(before[1:-1]) <= set(after)


def test_the_record_keeps_one_reading_per_bucket_the_newest() -> None:
    history = FillHistory()
    assert history.points(T0) == ()
    history.add(T0, 0.40)
    history.add(T0 + 1, 0.41)  # same bucket: replaces
    history.add(T0 + 1, 0.99)  # the same reading again: ignored
    history.add(T0 + BUCKET_SECONDS, 0.42)
    assert history.points(T0 + BUCKET_SECONDS) == ((T0 + 1, 0.41), (T0 + BUCKET_SECONDS, 0.42))


def test_a_drop_does_not_restart_the_record() -> None:
    # Unlike the forecast's history, which starts again after a cleanup.
    history = FillHistory()
    for i, ratio in enumerate((0.5, 0.7, 0.9, 0.2, 0.3)):
        history.add(T0 + i * BUCKET_SECONDS, ratio)
    assert [ratio for _, ratio in history.points(T0 + 4 * BUCKET_SECONDS)] == [
        0.5,
        0.7,
        0.9,
        0.2,
        0.3,
    ]


def test_the_record_is_bounded_and_the_copy_reused() -> None:
    history = FillHistory()
    for i in range(10 * MAX_POINTS):
        history.add(T0 + i * BUCKET_SECONDS, (i % 100) / 100)
    now = T0 + (10 * MAX_POINTS - 1) * BUCKET_SECONDS
    first = history.points(now)
    assert len(first) <= MAX_POINTS
    assert first[0][0] >= now - CHART_SPAN
    assert history.points(now + 1) is first  # asked again without a new sample: the same copy
    # Without new samples (a stopped pool) the points still leave the chart after an hour.
    assert history.points(now + CHART_SPAN + RECHECK) == ()


RECHECK = 60.0
