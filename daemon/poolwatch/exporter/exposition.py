"""The /metrics page: content negotiation, rendering, and the cache that makes scrapes cheap.

An Accept header is first negotiated to one of the few formats that exist (`negotiate`): the
text format 0.0.4 or 1.0.0, or OpenMetrics 1.0.0; whatever a client makes up, malformed
versions included, ends in one of them, so it can neither grow the cache nor fail the scrape.
A page is rendered at most once per generation and encoding (the generation is the
collector's: see ``InventoryCollector.generation``); every further scrape of an unchanged
inventory and telemetry is a dict lookup, so the cost of /metrics does not grow with the number
of scrapers (spec §3). A render encodes again only what changed: the text of each pool's part of
every per-pool family (its pool-level gauges, volumes, policy gauges and event counters; see
exporter/parts.py) is kept until that part changes, so a pool event costs the encoding of that
pool's lines and of the few per-connection and daemon families, not of every pool; its gzip
deflates again only the segments of the page that hold them (exporter/page_gzip.py).
``render`` is called on the event loop thread only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
from collections.abc import Callable
from typing import NamedTuple

from prometheus_client.exposition import (
    CONTENT_TYPE_LATEST,
    CONTENT_TYPE_PLAIN_0_0_4,
    gzip_accepted,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample

from poolwatch.exporter.encoding import Encoder
from poolwatch.exporter.page_gzip import PageGzip, PlainPage, ends_segment, mark
from poolwatch.exporter.parts import PartedFamily


class Format(NamedTuple):
    """A format a scraper can get: the encoding of the body, and the Content-Type it is sent as."""

    encoding: str  # "text" or "openmetrics": two formats of one encoding share their page
    content_type: str


# Every name poolwatch exports is a legacy (pre-UTF-8) Prometheus name, so each escaping scheme
# a client may ask for gives the same text as "underscores", except "dots" (which would double
# every underscore): "underscores" is answered to all, and the Content-Type says so.
TEXT_0_0_4 = Format("text", CONTENT_TYPE_PLAIN_0_0_4)
TEXT_1_0_0 = Format("text", f"{CONTENT_TYPE_LATEST}; escaping={openmetrics.UNDERSCORES}")
OPENMETRICS_1_0_0 = Format(
    "openmetrics", f"{openmetrics.CONTENT_TYPE_LATEST}; escaping={openmetrics.UNDERSCORES}"
)
# OpenMetrics asked for without a version: prometheus_client's answer, without escaping.
OPENMETRICS = Format("openmetrics", openmetrics.CONTENT_TYPE_LATEST)
FORMATS = (TEXT_0_0_4, TEXT_1_0_0, OPENMETRICS_1_0_0, OPENMETRICS)


def negotiate(accept: str | None) -> Format:
    """The format for an Accept header, as prometheus_client's own server picks it (the first
    media range it can serve, q-values aside), but from a closed set: any OpenMetrics version
    from 1.0.0 up is answered with 1.0.0, any text version from 1.0.0 up with 1.0.0, and a
    range whose version is malformed (`version=zz`) or older (OpenMetrics 0.0.1) is skipped,
    so a header with nothing else falls back to the text format 0.0.4."""
    for media_range in (accept or "").split(","):
        media_type, *parameters = (part.strip() for part in media_range.split(";"))
        version = _version(parameters)
        if media_type == "application/openmetrics-text":
            if not any(key == "version" for key, _ in _pairs(parameters)):
                return OPENMETRICS
            if version is not None and version >= (1, 0, 0):
                return OPENMETRICS_1_0_0
        elif media_type == "text/plain" and version is not None and version >= (1, 0, 0):
            return TEXT_1_0_0
    return TEXT_0_0_4


def _pairs(parameters: list[str]) -> list[tuple[str, str]]:
    pairs = (parameter.partition("=") for parameter in parameters)
    return [(key.strip().lower(), value.strip().strip('"')) for key, eq, value in pairs if eq]


def _version(parameters: list[str]) -> tuple[int, ...] | None:
    """The version parameter as numbers; None when absent or not dotted digits."""
    for key, value in _pairs(parameters):
        if key == "version":
            parts = value.split(".")
            if all(part.isdigit() and part.isascii() for part in parts):
                return tuple(int(part) for part in parts)
            return None
    return None


Page = tuple[bytes, dict[str, str]]

# A render that encodes at most this many samples again (~1 µs each: an event's render, which
# encodes one pool's lines) runs on the loop. In the render thread it is slower, and so is the
# loop: while that thread runs Python, every other thread waits for the GIL, which changes
# hands every 5 ms (sys.getswitchinterval). Measured at 500 pools under 10 scrapers: a 1 ms
# render took 3-7 ms there, and the loop served nothing meanwhile, events included.
INLINE_SAMPLES = 1000


class Exposition:
    """Renders ``registry`` in the format a scraper asks for, cached per ``generation()``.

    Collecting reads the inventory and telemetry, so it runs on the loop (under a ms at 500
    pools); encoding (exporter/encoding.py: ~1 µs a sample) is done only for the parts of the
    page that changed, on the loop when they are few (`INLINE_SAMPLES`), else in a thread of
    its own, so scrapes and events are not held up behind a long one. Compressing
    runs in another thread (zlib releases the GIL), so a plain render, the one that shows an
    event to a scraper without gzip, never waits behind a gzip of an older page. Concurrent
    scrapes share one render in flight; a gzip page is compressed from the plain one, deflating
    again only the segments that changed (exporter/page_gzip.py). The cache holds at most a
    plain and a gzip body per encoding, whatever the clients send, and, per encoding, the
    compressed segments of its last gzip page (about one more gzip body).
    """

    def __init__(self, registry: CollectorRegistry, generation: Callable[[], int]) -> None:
        self._registry = registry
        self._generation = generation
        self._cached_generation: int | None = None
        self._cache: dict[str, PlainPage] = {}  # encoding -> plain page of the cached generation
        # encoding -> the generation being rendered, and its render in flight
        self._rendering: dict[str, tuple[int | None, asyncio.Future[PlainPage]]] = {}
        # encoding -> the render to start when the one in flight ends
        self._queued: dict[str, asyncio.Future[PlainPage]] = {}
        # encoding -> (the cached plain page, its gzip); compressions in flight by plain page,
        # so a gzip page is always the compression of the very page it was asked for
        self._gzipped: dict[str, tuple[PlainPage, bytes]] = {}
        self._compressing: dict[str, tuple[PlainPage, asyncio.Future[bytes]]] = {}
        self._encoder = concurrent.futures.ThreadPoolExecutor(1, "metrics-render")
        self._compressor = concurrent.futures.ThreadPoolExecutor(1, "metrics-gzip")
        # Per encoding; touched by its render, one at a time (on the loop or in the render
        # thread).
        self._parts: dict[str, _PartCache] = {}
        # Per encoding and family name: the parts list last encoded, and its run of the page.
        self._runs: dict[str, dict[str, tuple[object, _Run]]] = {}
        # Per encoding: the compressed segments of its last gzip page; compression thread only.
        self._gzips: dict[str, PageGzip] = {fmt.encoding: PageGzip() for fmt in FORMATS}
        self._headers = {
            (fmt, compress): {
                "Content-Type": fmt.content_type,
                **({"Content-Encoding": "gzip"} if compress else {}),
            }
            for fmt in FORMATS
            for compress in (False, True)
        }

    async def render(self, accept: str | None, accept_encoding: str | None) -> Page:
        """Body and headers (Content-Type, Content-Encoding) for one scrape.

        The returned objects are shared with other scrapes: callers must not mutate them.
        """
        fmt = negotiate(accept)
        compress = gzip_accepted(accept_encoding or "")

        self._sync_generation()

        def collect() -> list[Metric]:
            return list(self._registry.collect())  # on the loop

        plain = await self._page(fmt.encoding, collect)
        body = await self._gzip(fmt.encoding, plain) if compress else plain.body
        return body, self._headers[(fmt, compress)]

    def _sync_generation(self) -> None:
        """Drop the cached pages when what they show has changed since they were rendered."""
        generation = self._generation()
        if generation != self._cached_generation:
            self._cache.clear()
            self._gzipped.clear()
            self._cached_generation = generation

    async def _page(self, key: str, prepare: Callable[[], list[Metric]]) -> PlainPage:
        """The plain page of encoding ``key``: cached, or the render in flight or queued.

        A render in flight of an older generation is not joined by a second one running beside
        it: under constant change the work stays one render at a time. A scrape that finds one
        waits for the render queued after it, which collects when it starts, so the page is
        never older than the scrape (at most one render is queued per encoding, shared by all
        who wait).
        """
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        flight = self._rendering.get(key)
        if flight is None:
            return await asyncio.shield(self._start(key, prepare))
        generation, rendering = flight
        if generation == self._cached_generation:
            return await asyncio.shield(rendering)
        queued = self._queued.get(key)
        if queued is None:
            queued = self._queued[key] = asyncio.get_running_loop().create_future()
            rendering.add_done_callback(lambda _done: self._start_queued(key, prepare))
        return await asyncio.shield(queued)

    def _start(self, key: str, prepare: Callable[[], list[Metric]]) -> asyncio.Future[PlainPage]:
        self._sync_generation()
        generation = self._cached_generation
        families = prepare()
        loop = asyncio.get_running_loop()
        if self._small(key, families):
            rendering = loop.create_future()
            try:
                rendering.set_result(self._encode(key, families))
            except Exception as exc:
                rendering.set_exception(exc)
        else:
            rendering = loop.run_in_executor(self._encoder, self._encode, key, families)
        self._rendering[key] = (generation, rendering)
        rendering.add_done_callback(functools.partial(self._rendered, generation, key))
        return rendering

    def _start_queued(self, key: str, prepare: Callable[[], list[Metric]]) -> None:
        """After the render in flight: the queued one starts, collecting what is current now."""
        queued = self._queued.pop(key)
        if queued.done():
            return
        try:
            rendering = self._start(key, prepare)
        except Exception as exc:  # a failed collect, or the executor shut down at close
            queued.set_exception(exc)
            return

        def deliver(done: asyncio.Future[PlainPage]) -> None:
            if queued.done():
                return
            if done.cancelled():
                queued.cancel()
            elif (error := done.exception()) is not None:
                queued.set_exception(error)
            else:
                queued.set_result(done.result())

        rendering.add_done_callback(deliver)

    def _rendered(
        self, generation: int | None, key: str, rendering: asyncio.Future[PlainPage]
    ) -> None:
        if self._rendering.get(key, (None, None))[1] is rendering:
            del self._rendering[key]
        if rendering.cancelled() or rendering.exception() is not None:
            return
        if generation == self._cached_generation:
            self._cache[key] = rendering.result()

    async def _gzip(self, key: str, plain: PlainPage) -> bytes:
        """``plain`` compressed, once per plain page: scrapes that got the same page share it."""
        done = self._gzipped.get(key)
        if done is not None and done[0] is plain:
            return done[1]
        flight = self._compressing.get(key)
        if flight is None or flight[0] is not plain:
            compressing = asyncio.get_running_loop().run_in_executor(
                self._compressor, self._gzips[key].compress, plain
            )
            flight = self._compressing[key] = (plain, compressing)
            compressing.add_done_callback(functools.partial(self._compressed, key, plain))
        return await asyncio.shield(flight[1])

    def _compressed(self, key: str, plain: PlainPage, compressing: asyncio.Future[bytes]) -> None:
        flight = self._compressing.get(key)
        if flight is not None and flight[1] is compressing:
            del self._compressing[key]
        if compressing.cancelled() or compressing.exception() is not None:
            return
        # Kept only beside the plain page it compresses, and dropped with it.
        if self._cache.get(key) is plain:
            self._gzipped[key] = (plain, compressing.result())

    def close(self) -> None:
        self._encoder.shutdown(wait=False, cancel_futures=True)
        self._compressor.shutdown(wait=False, cancel_futures=True)

    def _small(self, encoding: str, families: list[Metric]) -> bool:
        """Whether encoding ``families`` again means at most `INLINE_SAMPLES` samples (the
        parts that changed since the last render of ``encoding``, and the families made
        anew every collect): such a render runs on the loop, the others in the render thread."""
        runs_of = self._runs.get(encoding, {})
        budget = INLINE_SAMPLES
        for family in families:
            if isinstance(family, PartedFamily):
                last = runs_of.get(family.name)
                if last is not None and last[0] is family.parts:
                    continue
                if last is None or family.base is not last[0]:
                    return False  # every part looked at, in the thread
                parts = family.parts
                budget -= sum(len(parts[position][1]) for position in family.changed)
            else:
                budget -= len(family.samples)
            if budget < 0:
                return False
        return True

    def _encode(self, encoding: str, families: list[Metric]) -> PlainPage:
        """On the loop or in the render thread (`_small`), one render of an encoding at a time:
        the page, from each family's text in order."""
        encoder = Encoder(encoding)
        parts = self._parts.setdefault(encoding, {})
        runs_of = self._runs.setdefault(encoding, {})
        runs: list[_Run] = []
        seen = set()
        for family in families:
            if not isinstance(family, PartedFamily):
                runs.append(([encoder.family(family)], [False]))
                continue
            name = family.name
            seen.add(name)
            cache = parts.get(name)
            if cache is None:
                cache = parts[name] = {}
            run = _parted_run(encoder, family, cache, runs_of.get(name))
            if run is None:
                runs.append(([encoder.family(family)], [False]))  # prometheus_client's text
                cache.clear()
                runs_of.pop(name, None)
                continue
            runs.append(run)
            runs_of[name] = (family.parts, run)
        for gone_family in parts.keys() - seen:
            del parts[gone_family]
        for gone_family in runs_of.keys() - seen:
            del runs_of[gone_family]
        runs.append(([encoder.trailer], [False]))
        body = b"".join(itertools.chain.from_iterable(pieces for pieces, _ends in runs))
        return PlainPage(body, runs)


# One family's pieces of the page, and whether each ends a segment of its gzip.
_Run = tuple[list[bytes], list[bool]]
# Per (host, pool): the samples a part of one family was encoded from, its text, its mark and
# whether it ends a segment of the page's gzip (exporter/page_gzip.py).
_FamilyParts = dict[tuple[str, str], tuple[list[Sample], bytes, int, bool]]
# Per family name: its parts.
_PartCache = dict[str, _FamilyParts]


def _parted_run(
    encoder: Encoder,
    family: PartedFamily,
    cache: _FamilyParts,
    last: tuple[object, _Run] | None,
) -> _Run | None:
    """The run of ``family``: the last one as it was when its parts are the very list it was
    encoded from (the collector keeps it while none of the family's parts changed); that run
    with the changed positions swapped when the family was made from that list; else from
    each part's text, encoding the parts that changed. None when a sample needs
    prometheus_client's own encoder (never for the samples the collector makes)."""
    family_parts = family.parts
    if last is not None and last[0] is family_parts:
        return last[1]
    if last is not None and family.base is last[0]:
        changed = [family_parts[position] for position in family.changed]
        if not _encode_parts(encoder, family, changed, cache):
            return None
        pieces, ends = list(last[1][0]), list(last[1][1])
        for position, (key, _samples) in zip(family.changed, changed, strict=True):
            entry = cache[key]
            pieces[position + 1] = entry[1]  # after the family's header
            ends[position + 1] = entry[3]
        return pieces, ends
    # The loops below run once per pool: kept to a dict lookup and an identity check each.
    stale = [
        (key, samples)
        for key, samples in family_parts
        if (cached := cache.get(key)) is None or cached[0] is not samples
    ]
    if stale and not _encode_parts(encoder, family, stale, cache):
        return None
    entries = [cache[key] for key, _samples in family_parts]
    if len(cache) > len(family_parts):  # pools gone since the last render
        keep = {key for key, _samples in family_parts}
        for gone in cache.keys() - keep:
            del cache[gone]
    return (
        [encoder.header(family), *[entry[1] for entry in entries]],
        [False, *[entry[3] for entry in entries]],
    )


def _encode_parts(
    encoder: Encoder,
    family: Metric,
    stale: list[tuple[tuple[str, str], list[Sample]]],
    parts: _FamilyParts,
) -> bool:
    """Encode the changed parts of one family into ``parts`` (an empty part as no text); False
    when a sample needs prometheus_client's own encoder, so the family must be encoded whole."""
    for key, samples in stale:
        text = encoder.samples(family, samples)
        if text is None:
            return False
        cached = parts.get(key)
        part_mark = mark(family.name, key) if cached is None else cached[2]
        parts[key] = (samples, text, part_mark, ends_segment(part_mark, text))
    return True
