"""The linear time-to-full forecast: accuracy under noise, resets, bounded memory."""

from __future__ import annotations

import pytest

from poolwatch.policies.forecast import (
    MAX_TIME_TO_FULL,
    MIB,
    UsageHistory,
    segment_reset_margin,
    theil_sen_slope,
)

GIB = 1024**3
HOUR = 3600.0
T0 = 1_700_000_000.0
CAPACITY = 1024 * GIB
RATE = GIB / HOUR  # 1 GiB/h


def noise(i: int, amplitude: int = 256 * MIB) -> int:
    """A fixed, zero-mean, uncorrelated-looking sequence in [-amplitude, +amplitude]."""
    return (((i * 7919 + 13) * 104729) % 2001 - 1000) * amplitude // 1000


def feed_growth(
    history: UsageHistory,
    *,
    start: float,
    duration: float,
    step: float,
    base: int,
    rate: float = RATE,
) -> tuple[float, int]:
    """Linear growth plus noise; returns the time and the true (noise-free) usage at the end."""
    i, at, true_used = 0, start, base
    while at <= start + duration:
        true_used = base + round(rate * (at - start))
        history.add(at, true_used + noise(i), CAPACITY)
        i += 1
        at = start + i * step
    return at - step, true_used


def test_linear_growth_with_noise_is_forecast_within_five_percent() -> None:
    history = UsageHistory(window=6 * HOUR)
    now, true_used = feed_growth(history, start=T0, duration=6 * HOUR, step=60, base=500 * GIB)
    free = CAPACITY - true_used

    truth = free / RATE
    forecast = history.time_to_full(now, free)

    assert forecast is not None
    assert forecast == pytest.approx(truth, rel=0.05)
    assert history.growth_rate(now) == pytest.approx(RATE, rel=0.05)


def test_outliers_do_not_bend_the_forecast() -> None:
    history = UsageHistory(window=6 * HOUR)
    for i in range(360):
        at = T0 + i * 60
        value = 500 * GIB + round(RATE * i * 60)
        if i % 5 == 0:
            value += 8 * GIB  # a scan that caught a large temporary file, below the reset margin
        history.add(at, value, CAPACITY)

    rate = history.growth_rate(T0 + 359 * 60)

    assert rate == pytest.approx(RATE, rel=0.01)


def test_a_volume_deletion_starts_a_new_segment() -> None:
    history = UsageHistory(window=24 * HOUR)
    # Slow growth for a day, then 300 GiB deleted, then fast growth.
    now, used = feed_growth(history, start=T0, duration=20 * HOUR, step=60, base=400 * GIB)
    before = history.growth_rate(now)
    assert before == pytest.approx(RATE, rel=0.05)

    fast = 10 * RATE
    start = now + 60
    now, used = feed_growth(
        history, start=start, duration=2 * HOUR, step=60, base=used - 300 * GIB, rate=fast
    )

    assert history.growth_rate(now) == pytest.approx(fast, rel=0.05)
    forecast = history.time_to_full(now, CAPACITY - used)
    assert forecast == pytest.approx((CAPACITY - used) / fast, rel=0.05)


def test_the_new_segment_needs_enough_data_of_its_own() -> None:
    history = UsageHistory(window=24 * HOUR)
    now, used = feed_growth(history, start=T0, duration=10 * HOUR, step=60, base=400 * GIB)

    history.add(now + 60, used - 100 * GIB, CAPACITY)

    assert len(history) == 1
    assert history.time_to_full(now + 60, CAPACITY - used + 100 * GIB) is None


def test_small_decreases_are_kept_as_samples() -> None:
    history = UsageHistory(window=HOUR, min_span=0)
    margin = segment_reset_margin(CAPACITY)
    history.add(T0, 500 * GIB, CAPACITY)
    history.add(T0 + 60, 500 * GIB - margin, CAPACITY)  # exactly the margin: not a deletion
    history.add(T0 + 120, 500 * GIB - margin + GIB, CAPACITY)

    assert len(history) == 3


def test_segment_reset_margin() -> None:
    assert segment_reset_margin(CAPACITY) == CAPACITY // 100
    assert segment_reset_margin(GIB) == 64 * MIB
    assert segment_reset_margin(0) == 64 * MIB


@pytest.mark.parametrize("rate", [0.0, -RATE], ids=["flat", "shrinking"])
def test_no_growth_has_no_time_to_full(rate: float) -> None:
    history = UsageHistory(window=6 * HOUR)
    # Shrinking by 1 GiB/h is 17 MiB a minute: far below the reset margin.
    now, used = feed_growth(
        history, start=T0, duration=6 * HOUR, step=60, base=800 * GIB, rate=rate
    )

    assert history.time_to_full(now, CAPACITY - used) is None
    growth = history.growth_rate(now)
    assert growth is not None
    assert growth == pytest.approx(rate, abs=RATE / 20)


def test_growth_too_slow_to_matter_has_no_time_to_full() -> None:
    history = UsageHistory(window=HOUR, min_span=0)
    for i in range(10):
        history.add(T0 + i * 60, 1000 + i, CAPACITY)  # one byte a minute

    assert history.growth_rate(T0 + 540) == pytest.approx(1 / 60)
    assert history.time_to_full(T0 + 540, CAPACITY) is None
    assert history.time_to_full(T0 + 540, 6000) == pytest.approx(360_000)
    assert MAX_TIME_TO_FULL < CAPACITY * 60


def test_too_few_samples_have_no_forecast() -> None:
    history = UsageHistory(window=6 * HOUR)
    history.add(T0, GIB, CAPACITY)
    history.add(T0 + HOUR, 2 * GIB, CAPACITY)

    assert history.growth_rate(T0 + HOUR) is None
    assert history.time_to_full(T0 + HOUR, CAPACITY) is None


def test_samples_spanning_too_short_a_time_have_no_forecast() -> None:
    history = UsageHistory(window=6 * HOUR)
    assert history.min_span == 600.0  # min(window / 10, 10 min)
    for i in range(10):
        history.add(T0 + i * 60, GIB + i * GIB, CAPACITY)  # 9 minutes of data

    assert history.time_to_full(T0 + 540, CAPACITY) is None
    history.add(T0 + 600, 11 * GIB, CAPACITY)
    assert history.time_to_full(T0 + 600, 60 * GIB) == pytest.approx(3600.0)


def test_min_span_defaults_to_a_tenth_of_a_short_window() -> None:
    assert UsageHistory(window=HOUR).min_span == 360.0
    assert UsageHistory(window=HOUR, min_span=0).min_span == 0


def test_samples_older_than_the_window_are_not_used() -> None:
    history = UsageHistory(window=HOUR, min_span=0)
    for i in range(4):
        history.add(T0 + i * 60, GIB + i * GIB, CAPACITY)

    assert history.growth_rate(T0 + 180) is not None
    assert history.growth_rate(T0 + HOUR + 61) is None  # two of the four are out of the window


def test_pool_is_already_full() -> None:
    history = UsageHistory(window=HOUR, min_span=0)
    for i in range(4):
        history.add(T0 + i * 60, GIB + i * GIB, CAPACITY)

    assert history.time_to_full(T0 + 180, 0) == 0.0
    assert history.time_to_full(T0 + 180, -5) == 0.0


def test_memory_stays_bounded_whatever_the_poll_rate() -> None:
    history = UsageHistory(window=6 * HOUR, max_samples=360)
    for i in range(100_000):
        history.add(T0 + i * 0.5, 100 * GIB + i * 1000 + noise(i, MIB), CAPACITY)
        assert len(history) <= 360

    now = T0 + 99_999 * 0.5
    # 13.9 hours at two polls a second, thinned to one sample a minute or so.
    assert len(history) >= 300
    assert history.growth_rate(now) == pytest.approx(2000.0, rel=0.05)


def test_thinning_keeps_the_newest_sample() -> None:
    history = UsageHistory(window=HOUR, max_samples=12, min_span=0)  # 6 minutes apart
    base = 500 * GIB
    for i in range(100):
        history.add(T0 + i, base + i, CAPACITY)

    assert len(history) == 2
    # A deletion in the very next sample is still seen against the last reading.
    history.add(T0 + 100, base + 99 - segment_reset_margin(CAPACITY) - 1, CAPACITY)
    assert len(history) == 1


def test_capacity_change_resets() -> None:
    history = UsageHistory(window=6 * HOUR)
    now, used = feed_growth(history, start=T0, duration=6 * HOUR, step=60, base=500 * GIB)
    assert history.time_to_full(now, CAPACITY - used) is not None

    history.add(now + 60, used, 2 * CAPACITY)

    assert len(history) == 1
    assert history.time_to_full(now + 60, 2 * CAPACITY - used) is None


def test_a_clock_stepping_back_resets() -> None:
    history = UsageHistory(window=HOUR, min_span=0)
    for i in range(4):
        history.add(T0 + i * 60, GIB + i * GIB, CAPACITY)

    history.add(T0 - 3600, GIB, CAPACITY)

    assert len(history) == 1


def test_a_second_reading_of_the_same_instant_replaces_the_first() -> None:
    history = UsageHistory(window=HOUR, min_span=0)
    history.add(T0, GIB, CAPACITY)
    history.add(T0, 2 * GIB, CAPACITY)

    assert len(history) == 1


def test_reset_forgets_everything() -> None:
    history = UsageHistory(window=HOUR)
    history.add(T0, GIB, CAPACITY)
    history.reset()

    assert len(history) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "window"),
        ({"window": HOUR, "max_samples": 2}, "max_samples"),
        ({"window": HOUR, "min_span": 2 * HOUR}, "min_span"),
        ({"window": HOUR, "min_span": -1}, "min_span"),
    ],
)
def test_invalid_parameters_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UsageHistory(**kwargs)  # type: ignore[arg-type]


def test_theil_sen_uses_every_pair_when_few() -> None:
    # Slopes 1, 1, 1 between consecutive points and one wild point: the median ignores it.
    samples = [(0.0, 0), (1.0, 1), (2.0, 2), (3.0, 100), (4.0, 4), (5.0, 5)]

    assert theil_sen_slope(samples) == pytest.approx(1.0)


def test_theil_sen_subsampling_is_deterministic_and_bounded() -> None:
    samples = [(float(i), 3 * i + noise(i, 10)) for i in range(1000)]

    first = theil_sen_slope(samples, max_pairs=500)

    assert first == theil_sen_slope(samples, max_pairs=500)
    assert first == pytest.approx(3.0, rel=0.01)


def test_theil_sen_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="two samples"):
        theil_sen_slope([(0.0, 0)])


def test_slope_is_computed_once_per_new_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    from poolwatch.policies import forecast

    calls = []
    real = forecast.theil_sen_slope

    def counting(samples: list[tuple[float, int]], max_pairs: int = 2000) -> float:
        calls.append(len(samples))
        return real(samples, max_pairs)

    monkeypatch.setattr(forecast, "theil_sen_slope", counting)
    history = UsageHistory(3600.0, min_span=0)
    for i in range(5):
        history.add(i * 60.0, i * 1000, 10**9)
    for _ in range(10):  # the actuator asks on every evaluation
        assert history.time_to_full(300.0, 10**6) is not None
        assert history.growth_rate(300.0) is not None
    assert len(calls) == 1
    history.add(360.0, 6000, 10**9)
    history.growth_rate(360.0)
    assert len(calls) == 2
