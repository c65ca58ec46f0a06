"""When will a storage pool fill? A bounded history of its used bytes and a linear forecast.

One `UsageHistory` per pool collects `(at, used)` samples and estimates the growth rate over the
last `window` seconds; `time_to_full` divides the free space by that rate. The module is pure: time
is always a parameter, nothing here reads a clock.

What "robust" means here, and its limits:

- Noise: the slope is the Theil-Sen estimate, the median of the slopes between pairs of samples.
  Up to about 29 % of the samples can be arbitrarily wrong (a scan that caught a half-written
  image, a transient snapshot) without moving the estimate much, where a least-squares fit would
  follow every outlier. Above `MAX_SLOPE_PAIRS` pairs (64 samples) the pairs are subsampled with
  a fixed stride over every pair, so the cost is bounded and the result deterministic.
- Volume deletions: used bytes that fall by more than `segment_reset_margin(capacity)` between two
  consecutive samples start a new segment; the history before the drop is discarded, because the
  growth after a cleanup is what predicts the next fill. Smaller decreases (noise, discarded
  blocks, hole punching in sparse images) stay in the history as ordinary samples. Many small
  deletions in a row do not reset anything: they flatten the slope until growth dominates again.
- Poll rate: samples closer together than about `window / max_samples` are thinned, so memory
  and cost stay bounded whatever the poll rate; the newest sample is always kept.
- Pool changes: a different capacity (pool resized, or another pool under the same name) and a
  clock that steps backwards both reset the history: neither fits the old line.

The forecast is a straight line: it cannot predict a burst (a backup starting at midnight), and
right after a reset it says nothing until `min_span` seconds and three samples are in. A pool that
does not grow, or shrinks, has no time to full (None): the metric is then absent, not infinite.
"""

from __future__ import annotations

import statistics
from collections import deque

MIB = 1024**2

# A deleted volume must show as a drop larger than ordinary churn. 1 % of the pool is above the
# allocation jitter of thin images and hole punching on any pool of real size, yet far below a
# deleted guest disk; the 64 MiB floor keeps small (test, boot-image) pools from resetting on a
# rotated log or a removed scratch file.
SEGMENT_RESET_RATIO = 0.01
SEGMENT_RESET_MIN_BYTES = 64 * MIB

# Beyond this a "time to full" is noise around a flat line, and no operator plans that far.
MAX_TIME_TO_FULL = 10 * 365.25 * 86400.0

MIN_SAMPLES = 3
MAX_SLOPE_PAIRS = 2000
# The default `min_span` is window / 10, but never more than this: a week-long window should not
# keep the forecast silent for most of a day after each cleanup.
DEFAULT_MIN_SPAN_CAP = 600.0


def segment_reset_margin(capacity: int) -> int:
    """The drop in used bytes, between consecutive samples, that starts a new segment."""
    return max(int(capacity * SEGMENT_RESET_RATIO), SEGMENT_RESET_MIN_BYTES)


def theil_sen_slope(samples: list[tuple[float, int]], max_pairs: int = MAX_SLOPE_PAIRS) -> float:
    """The median of the pairwise slopes of samples sorted by strictly increasing time.

    With more than `max_pairs` pairs, every k-th pair of the full (i < j) enumeration is used:
    each sample still takes part and every time distance is represented, without randomness.
    """
    n = len(samples)
    if n < 2:
        raise ValueError("a slope needs at least two samples")
    total = n * (n - 1) // 2
    budget = min(total, max_pairs)
    slopes: list[float] = []
    q = 0  # index of the next pair to take among `budget` evenly spread over `total`
    row_start = 0  # index, in the full enumeration, of the pair (i, i + 1)
    for i in range(n - 1):
        row_end = row_start + (n - 1 - i)
        while q < budget:
            pair = q * total // budget
            if pair >= row_end:
                break
            j = i + 1 + (pair - row_start)
            (t_i, u_i), (t_j, u_j) = samples[i], samples[j]
            slopes.append((u_j - u_i) / (t_j - t_i))
            q += 1
        row_start = row_end
    return float(statistics.median(slopes))


class UsageHistory:
    """Used bytes of one pool over the last `window` seconds, and where they are heading."""

    __slots__ = (
        "_capacity",
        "_min_span",
        "_samples",
        "_slope",
        "_spacing",
        "max_samples",
        "window",
    )

    def __init__(
        self, window: float, max_samples: int = 360, *, min_span: float | None = None
    ) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        if max_samples < MIN_SAMPLES:
            raise ValueError(f"max_samples must be at least {MIN_SAMPLES}")
        if min_span is None:
            min_span = min(window / 10, DEFAULT_MIN_SPAN_CAP)
        if not 0 <= min_span <= window:
            raise ValueError("min_span must be between 0 and window")
        self.window = window
        self.max_samples = max_samples
        self._min_span = min_span
        # Settled samples at least this far apart, plus the newest one, fit `max_samples` within
        # the window: (max_samples - 2) gaps span at most the window.
        self._spacing = window / (max_samples - 2)
        self._samples: deque[tuple[float, int]] = deque()
        self._capacity: int | None = None
        # (first and last sample in the window, their count) -> the slope computed for them
        self._slope: tuple[tuple[tuple[float, int], tuple[float, int], int], float] | None = None

    @property
    def min_span(self) -> float:
        """Seconds the samples must span before there is a forecast."""
        return self._min_span

    def __len__(self) -> int:
        return len(self._samples)

    def reset(self) -> None:
        self._samples.clear()
        self._capacity = None

    def add(self, at: float, used: int, capacity: int) -> None:
        """Record the pool's used bytes at unix time `at`."""
        samples = self._samples
        if capacity != self._capacity:
            samples.clear()
            self._capacity = capacity
        elif samples:
            last_at, last_used = samples[-1]
            if at < last_at or last_used - used > segment_reset_margin(capacity):
                samples.clear()
            elif at == last_at:
                # A second reading of the same instant: the newer one is the better one.
                samples[-1] = (at, used)
                return
        # The newest sample is provisional until it is `spacing` after the one before: until
        # then each new sample replaces it, so a fast poll rate cannot grow the history.
        if len(samples) >= 2 and samples[-1][0] - samples[-2][0] < self._spacing:
            samples[-1] = (at, used)
        else:
            samples.append((at, used))
        horizon = at - self.window
        while samples[0][0] < horizon:
            samples.popleft()

    def growth_rate(self, now: float) -> float | None:
        """Bytes per second the pool grows by (negative when it shrinks); None without enough data.

        Enough data means at least three samples in the window ending at `now`, spanning at least
        `min_span` seconds.
        """
        horizon = now - self.window
        recent = [s for s in self._samples if horizon <= s[0] <= now]
        if len(recent) < MIN_SAMPLES or recent[-1][0] - recent[0][0] < self._min_span:
            return None
        # The actuator asks on every evaluation (several times a second, on the event loop):
        # the slope only changes when the samples in the window do.
        key = (recent[0], recent[-1], len(recent))
        if self._slope is None or self._slope[0] != key:
            self._slope = (key, theil_sen_slope(recent))
        return self._slope[1]

    def time_to_full(self, now: float, free: int) -> float | None:
        """Seconds until `free` bytes are used at the current growth rate.

        None when there is not enough data, when the pool is not growing, or when the answer is
        beyond `MAX_TIME_TO_FULL`: all three mean "no fill in sight".
        """
        rate = self.growth_rate(now)
        if rate is None or rate <= 0:
            return None
        seconds = max(free, 0) / rate
        if seconds > MAX_TIME_TO_FULL:
            return None
        return seconds
