"""Our encoder writes, byte for byte, what prometheus_client's encoders write."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.samples import Exemplar, Sample, Timestamp

from poolwatch.exporter.encoding import ENCODINGS, Encoder, library_encode
from tests.unit.factories import HOSTILE

AWKWARD_VALUES: list[float] = [
    0,
    -0.0,
    0.0,
    1,
    -1,
    True,
    False,
    1 << 30,
    (1 << 63) + 1,
    10**30,
    123456.0,
    1234567.0,
    12345678.9,
    1e21,
    1e22,
    1.5e300,
    5e-324,
    1e-7,
    -2.5e-10,
    math.inf,
    -math.inf,
    math.nan,
    0.1 + 0.2,
]
AWKWARD_STRINGS = [
    "",
    "plain",
    HOSTILE,
    'quote " backslash \\ newline \n tab \t cr \r',
    "\\n literally",
    "ünïcødé ☃ 𝄞 中文",
    "trailing backslash \\",
    "\x00 nul and \x7f del",
]


def awkward_families() -> list[Metric]:
    gauge = GaugeMetricFamily(
        "pw_gauge", 'help with "quotes", \\ and\nnewline', labels=("b", "a", "storage_pool")
    )
    for i, value in enumerate(AWKWARD_VALUES):
        gauge.add_metric((str(i), AWKWARD_STRINGS[i % len(AWKWARD_STRINGS)], "p"), value)
    for text in AWKWARD_STRINGS:
        gauge.add_metric((text, text, text), 1)
    shared = {"host": "h", "volume": HOSTILE}  # one dict behind several samples, as volumes do
    capacity = Metric("pw_volume_capacity_bytes", "capacity", "gauge")
    allocation = Metric("pw_volume_allocation_bytes", "allocation", "gauge")
    for family, value in ((capacity, -0.0), (allocation, 0.0)):
        family.samples += [Sample(family.name, shared, value), Sample(family.name, shared, 7)]
    unlabelled = GaugeMetricFamily("pw_unlabelled", "", value=math.nan)
    counter = CounterMetricFamily("pw_events", "events", labels=("event",))
    counter.add_metric(["started"], 3)
    counter.add_metric(["stopped"], 0)
    with_created = CounterMetricFamily("pw_resets", "resets", labels=("x",))
    with_created.add_metric(["1"], 2, created=1700000000.5)
    histogram = HistogramMetricFamily("pw_seconds", "durations", labels=("kind",))
    histogram.add_metric(["info"], [("0.005", 1), ("0.1", 3), ("+Inf", 4)], 0.25)
    summary = SummaryMetricFamily("pw_summary", "a summary", count_value=3, sum_value=1.5)
    info = InfoMetricFamily("pw_build", "build", value={"version": "1.0", "odd": 'a"b'})
    stateset = StateSetMetricFamily("pw_states", "states", value={"up": True, "down": False})
    unit = GaugeMetricFamily("pw_space", "with a unit", value=1.0, unit="bytes")
    odd_names = Metric("pw:recorded:rule", "colons in the name", "unknown")
    odd_names.samples.append(Sample("pw:recorded:rule", {"a.b": "x", "1st": "y"}, 4))
    stamped = GaugeMetricFamily("pw_stamped", "timestamps", labels=("t",))
    stamped.add_metric(["float"], 1, timestamp=1700000000.123)
    stamped.add_metric(["object"], 2, timestamp=Timestamp(1700000000, 5))
    exemplar = Metric("pw_exemplar", "an exemplar", "counter")
    exemplar.samples.append(
        Sample("pw_exemplar_total", {}, 1, exemplar=Exemplar({"trace": "a\\b"}, 0.5, 17.0))
    )
    empty = GaugeMetricFamily("pw_empty", "no samples")
    return [
        gauge,
        capacity,
        allocation,
        unlabelled,
        counter,
        with_created,
        histogram,
        summary,
        info,
        stateset,
        unit,
        odd_names,
        stamped,
        exemplar,
        empty,
    ]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_awkward_families_encode_as_prometheus_client_encodes_them(encoding: str) -> None:
    families = awkward_families()
    assert Encoder(encoding).page(families) == library_encode(encoding, families)
    for family in families:  # each alone too: nothing carried over from a neighbour
        alone = Encoder(encoding).page([family])
        assert alone == library_encode(encoding, [family]), family.name


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_parts_encoded_apart_join_into_the_family(encoding: str) -> None:
    """What the exposition does: a family's header, then each part's lines, encoded apart."""
    family = awkward_families()[0]
    encoder = Encoder(encoding)
    samples = family.samples
    parts = [encoder.samples(family, samples[i : i + 5]) for i in range(0, len(samples), 5)]
    assert None not in parts
    joined = encoder.header(family) + b"".join(p for p in parts if p is not None)
    assert joined + encoder.trailer == library_encode(encoding, [family])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_samples_the_fast_path_does_not_cover_are_left_to_prometheus_client(
    encoding: str,
) -> None:
    families = {family.name: family for family in awkward_families()}
    encoder = Encoder(encoding)
    for name in ("pw_stamped", "pw_exemplar"):
        family = families[name]
        assert encoder.samples(family, family.samples) is None
    # The text format writes a counter's _created sample in a family of its own.
    resets = families["pw_resets"]
    assert (encoder.samples(resets, resets.samples) is None) == (encoding == "text")


label_text = st.text(st.characters(codec="utf-8"), max_size=12)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**25), max_value=10**25),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(label_text, label_text, values), max_size=12),
    documentation=label_text,
)
def test_any_labels_and_values_encode_as_prometheus_client_encodes_them(
    rows: list[tuple[str, str, float]], documentation: str
) -> None:
    gauge = Metric("pw_any", documentation, "gauge")
    shared: dict[str, str] = {}
    for pool, volume, value in rows:
        labels = shared if volume == "" else {"storage_pool": pool, "volume": volume}
        gauge.samples.append(Sample("pw_any", labels, value))
    for encoding in ENCODINGS:
        assert Encoder(encoding).page([gauge]) == library_encode(encoding, [gauge])
