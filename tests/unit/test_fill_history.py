"""The fill history a pool publishes for its chart: its own record of allocation / capacity,
bounded, downsampled, stable, and made again only when it can have changed."""

from __future__ import annotations

import itertools

from poolwatch.actuator.fill_history import (
    CHART_SPAN,
    MAX_POINTS,
    MAX_SAMPLES,
    FillHistory,
    downsample,
)

T0 = 1_700_000_000.0


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


def test_the_record_ignores_a_reading_it_has() -> None:
    history = FillHistory()
    assert history.points(T0) == ()
    history.add(T0, 0.40)
    history.add(T0, 0.99)  # the same reading again (a re-evaluation): ignored
    history.add(T0 + 15, 0.42)
    assert history.points(T0 + 15) == ((T0, 0.4), (T0 + 15, 0.42))


def test_a_drop_does_not_restart_the_record() -> None:
    # Unlike the forecast's history, which starts again after a cleanup.
    history = FillHistory()
    for i, ratio in enumerate((0.5, 0.7, 0.9, 0.2, 0.3)):
        history.add(T0 + i * 15, ratio)
    assert [ratio for _, ratio in history.points(T0 + 60)] == [0.5, 0.7, 0.9, 0.2, 0.3]


def test_fast_readings_are_thinned_to_cover_the_hour() -> None:
    history = FillHistory()
    for i in range(3600):  # an hour of readings every second
        history.add(T0 + i, i / 3600)
        assert len(history._samples) <= MAX_SAMPLES
    now = T0 + 3599
    points = history.points(now)
    assert MAX_POINTS // 2 <= len(points) <= MAX_POINTS
    assert points[0][0] < now - CHART_SPAN / 2  # the start of the hour is still there
    assert points[-1] == (now, round(3599 / 3600, 4))


def test_the_copy_is_reused_and_old_points_leave() -> None:
    history = FillHistory()
    for i in range(10):
        history.add(T0 + i * 15, i / 10)
    now = T0 + 9 * 15
    first = history.points(now)
    assert history.points(now + 1) is first  # asked again without a new sample: the same copy
    # Without new samples (a stopped pool) the points still leave the chart after an hour.
    assert history.points(now + CHART_SPAN + 60) == ()
