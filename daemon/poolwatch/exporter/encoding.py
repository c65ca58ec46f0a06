"""The text (0.0.4 and 1.0.0) and OpenMetrics 1.0.0 encodings of metric families, byte for byte
what prometheus_client's encoders write, several times faster.

prometheus_client escapes every name and label of every sample in Python (~5 µs a sample): a
pool's 3,000 volume series cost ~15 ms, and the render thread is busy that long before the page
after an event can be encoded. Here what repeats is done once: a name's escaped form and a
family's HELP/TYPE lines are computed by prometheus_client's own functions and kept; a labels
dict shared by several samples (a volume's three series) is encoded once per call; and an
integer value is formatted once per call. What is left per sample is one string join.

Anything this fast path does not cover, a sample with a timestamp, an exemplar or a native
histogram, a value of None, or (in the text format) the `_created`/`_gsum`/`_gcount` samples
that prometheus_client moves into families of their own, sends the whole family through
prometheus_client's encoder, so the output stays theirs. tests/unit/test_encoding.py compares
both over awkward inputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

TEXT = "text"
OPENMETRICS = "openmetrics"
ENCODINGS = (TEXT, OPENMETRICS)

# Untyped upstream; typed names keep mypy --strict honest without ignore comments.
_go_float: Callable[[Any], str] = floatToGoString
_om: Any = openmetrics

# prometheus_client's encoder of each encoding, escaping underscores (their default).
_LIBRARY: dict[str, Callable[[Any], bytes]] = {
    TEXT: generate_latest,
    OPENMETRICS: functools.partial(openmetrics.generate_latest, version="1.0.0"),
}
# The samples the text encoder moves out of their family, into a gauge family at its end.
_TEXT_MOVED_SUFFIXES = ("_created", "_gsum", "_gcount")


class _Families:
    """Metric families in the shape prometheus_client's encoders read (anything with collect)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def library_encode(encoding: str, families: list[Metric]) -> bytes:
    """prometheus_client's own encoding of ``families``: the reference this module equals."""
    return _LIBRARY[encoding](_Families(families))


TRAILERS = {encoding: library_encode(encoding, []) for encoding in ENCODINGS}


def trailer(encoding: str) -> bytes:
    """What ends a page: OpenMetrics' ``# EOF`` line; nothing in the text format."""
    return TRAILERS[encoding]


@functools.lru_cache(maxsize=1024)
def header(encoding: str, name: str, documentation: str, typ: str, unit: str) -> bytes:
    """A family's HELP, TYPE (and UNIT) lines, as prometheus_client writes them."""
    family = Metric(name, documentation, typ, unit)
    text = library_encode(encoding, [family])
    return text[: len(text) - len(TRAILERS[encoding])]


@functools.lru_cache(maxsize=4096)
def _sample_name(encoding: str, name: str) -> str:
    # The two encoders escape a sample's name differently (OpenMetrics with the label-name
    # rules, so a colon becomes "_"): each one's own expression, as it writes it.
    if encoding == TEXT:
        return str(_om.escape_metric_name(name, _om.UNDERSCORES))
    return str(_om._escape(name, _om.UNDERSCORES, _om._is_legacy_labelname_rune))


@functools.lru_cache(maxsize=4096)
def _label_name(name: str) -> str:
    return str(_om.escape_label_name(name, _om.UNDERSCORES))


class Encoder:
    """Encodes families in one encoding, for one page: what it memoizes (a labels dict's text,
    keyed by the dict's id; an integer's text) is valid while the samples it was made from are
    alive, so an encoder lives for one render and is then dropped."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.trailer = TRAILERS[encoding]
        self._moved = encoding == TEXT
        self._labels: dict[int, tuple[dict[str, str], str]] = {}
        self._ints: dict[int, str] = {}
        self._names: dict[str, str] = {}

    def header(self, family: Metric) -> bytes:
        """The family's HELP, TYPE (and UNIT) lines."""
        return header(self.encoding, family.name, family.documentation, family.type, family.unit)

    def family(self, family: Metric) -> bytes:
        """One family's text (its header, then its samples), without the page's trailer."""
        lines = self.samples(family, family.samples)
        if lines is None:
            text = library_encode(self.encoding, [family])
            return text[: len(text) - len(self.trailer)]
        return self.header(family) + lines

    def page(self, families: Iterable[Metric]) -> bytes:
        """A whole page: every family, then the trailer (what prometheus_client's encoder
        writes for a collector returning ``families``)."""
        return b"".join([*(self.family(family) for family in families), self.trailer])

    def samples(self, family: Metric, samples: Sequence[Sample]) -> bytes | None:
        """The sample lines of ``samples`` (of ``family``) in page order; None when one of
        them needs prometheus_client's encoder (see the module docstring): encode the family
        with :meth:`family` then, which falls back to it."""
        moved = (
            {family.name + suffix for suffix in _TEXT_MOVED_SUFFIXES}
            if self._moved
            else frozenset()
        )
        encoding = self.encoding
        lines: list[str] = []
        append = lines.append
        labels_memo = self._labels
        ints = self._ints
        names = self._names
        for sample in samples:
            name, labels, value, timestamp, exemplar, native = sample
            if (
                timestamp is not None
                or exemplar is not None
                or native is not None
                or value is None
                or name in moved
            ):
                return None
            escaped_name = names.get(name)
            if escaped_name is None:
                escaped_name = names[name] = _sample_name(encoding, name)
            if labels:
                # The dict is kept beside its text, so its id cannot be reused meanwhile.
                memo = labels_memo.get(id(labels))
                if memo is None or memo[0] is not labels:
                    memo = labels_memo[id(labels)] = (labels, _labels(labels))
                label_text = memo[1]
            else:
                label_text = ""
            if type(value) is int:
                value_text = ints.get(value)
                if value_text is None:
                    value_text = ints[value] = _go_float(value)
            else:
                # Floats are formatted every time: -0.0 equals 0.0 but is written "-0.0".
                value_text = _go_float(value)
            append(f"{escaped_name}{label_text} {value_text}\n")
        return "".join(lines).encode()


def _labels(labels: dict[str, str]) -> str:
    pairs = []
    for key, value in sorted(labels.items()):
        if "\\" in value or "\n" in value or '"' in value:
            value = value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
        pairs.append(f'{_label_name(key)}="{value}"')
    return "{" + ",".join(pairs) + "}"
