"""The /metrics page: content negotiation, rendering, and the cache that makes scrapes cheap.

A page is rendered at most once per generation and negotiated format (the generation is the
collector's: see ``InventoryCollector.generation``); every further scrape of an unchanged
inventory and telemetry is a dict lookup, so the cost of /metrics does not grow with the number
of scrapers (spec §3). A render encodes again only what changed: the text of each pool's part of
every per-pool family (its pool-level gauges, volumes, policy gauges and event counters; see
exporter/parts.py) is kept until that part changes, so a pool event costs the encoding of that
pool's lines and of the few per-connection and daemon families, not of every pool.
``render`` is called on the event loop thread only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gzip
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample

from poolwatch.exporter.parts import PartedFamily

# zlib's default level. Measured on a 50 pools x 200 volumes page (3.4 MB): level 9, gzip's
# default, takes 50 ms against 13 ms here, for a page only a fifth smaller.
GZIP_LEVEL = 6

# Accept headers can name arbitrary OpenMetrics versions, each its own content type; a bound
# keeps a client that varies them from growing the cache within one generation.
MAX_CACHED_VARIANTS = 16

# Formats whose per-pool text is kept between renders (the most recently used ones).
# Prometheus asks for one format; a few more cover people with curl. Each costs about the
# size of the plain page.
MAX_PARTED_FORMATS = 3


class _Collected:
    """Metric families collected on the loop, handed to an encoder in another thread."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


Page = tuple[bytes, dict[str, str]]


class Exposition:
    """Renders ``registry`` in the format a scraper asks for, cached per ``generation()``.

    Collecting reads the inventory and telemetry, so it runs on the loop (a few ms); encoding is the
    expensive part (prometheus_client escapes every sample in Python: ~130 ms for 30,000
    series) and runs in a thread of its own, so scrapes and events are not held up behind it,
    and only for the parts of the page that changed. Concurrent scrapes share one render in
    flight; a gzip page is compressed from the plain one.
    """

    def __init__(self, registry: CollectorRegistry, generation: Callable[[], int]) -> None:
        self._registry = registry
        self._generation = generation
        self._cached_generation: int | None = None
        self._cache: dict[tuple[str, bool], Page] = {}
        self._rendering: dict[tuple[str, bool], asyncio.Future[Page]] = {}
        self._encoder = concurrent.futures.ThreadPoolExecutor(1, "metrics-render")
        # Touched by the render thread only.
        self._parts: OrderedDict[str, _PartCache] = OrderedDict()

    async def render(self, accept: str | None, accept_encoding: str | None) -> Page:
        """Body and headers (Content-Type, Content-Encoding) for one scrape.

        The returned objects are shared with other scrapes: callers must not mutate them.
        """
        # Negotiated exactly as prometheus_client's own HTTP server does, so scrapers see the
        # same behaviour as from any Python exporter.
        encoder, content_type = choose_encoder(accept or "")
        compress = gzip_accepted(accept_encoding or "")

        generation = self._generation()
        if generation != self._cached_generation:
            self._cache.clear()
            self._cached_generation = generation

        def encode() -> Callable[[], Page]:
            families = list(self._registry.collect())  # on the loop
            return functools.partial(self._encode, encoder, families, content_type)

        plain = await self._page((content_type, False), encode)
        if not compress:
            return plain
        return await self._page((content_type, True), lambda: functools.partial(_gzip, plain))

    async def _page(self, key: tuple[str, bool], prepare: Callable[[], Callable[[], Page]]) -> Page:
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        # A render still in flight, even of an older generation, is awaited rather than
        # joined by another: under constant change the work stays one render at a time, and
        # the page served is at most one render old.
        rendering = self._rendering.get(key)
        if rendering is None:
            work = prepare()
            rendering = asyncio.get_running_loop().run_in_executor(self._encoder, work)
            self._rendering[key] = rendering
            done = functools.partial(self._rendered, self._cached_generation, key)
            rendering.add_done_callback(done)
        return await asyncio.shield(rendering)

    def _rendered(
        self, generation: int | None, key: tuple[str, bool], rendering: asyncio.Future[Page]
    ) -> None:
        del self._rendering[key]
        if rendering.cancelled() or rendering.exception() is not None:
            return
        if generation == self._cached_generation and len(self._cache) < MAX_CACHED_VARIANTS:
            self._cache[key] = rendering.result()

    def close(self) -> None:
        self._encoder.shutdown(wait=False, cancel_futures=True)

    def _encode(self, encoder: _Encoder, families: list[Metric], content_type: str) -> Page:
        """In the render thread: the page, from each family's text in order."""
        parts = self._parts.pop(content_type, None) or {}
        self._parts[content_type] = parts  # the most recently used last
        while len(self._parts) > MAX_PARTED_FORMATS:
            self._parts.popitem(last=False)
        # OpenMetrics ends the page with "# EOF", once; the text format ends with nothing.
        trailer = encoder(_Collected([]))  # type: ignore[arg-type]
        chunks: list[bytes] = []
        seen = set()
        for family in families:
            if not isinstance(family, PartedFamily):
                chunks.append(_encode_family(encoder, family, trailer))
                continue
            name = family.name
            seen.add(name)
            cache = parts.get(name)
            if cache is None:
                cache = parts[name] = {}
            header = _encode_family(encoder, _with_samples(family, []), trailer)
            chunks.append(header)
            family_parts = family.parts
            # The loops below run once per pool and family on every render (~9,000 times at
            # 500 pools): kept to a dict lookup and an identity check each.
            stale = [
                (key, samples)
                for key, samples in family_parts
                if (cached := cache.get(key)) is None or cached[0] is not samples
            ]
            if stale:
                _encode_parts(encoder, family, stale, header, trailer, cache)
            chunks.extend([cache[key][1] for key, _samples in family_parts])
            if len(cache) > len(family_parts):  # pools gone since the last render
                keep = {key for key, _samples in family_parts}
                for gone in cache.keys() - keep:
                    del cache[gone]
        for gone_family in parts.keys() - seen:
            del parts[gone_family]
        chunks.append(trailer)
        return b"".join(chunks), {"Content-Type": content_type}


# An encoder of prometheus_client (text or OpenMetrics, as negotiated) over anything with collect()
_Encoder = Callable[[CollectorRegistry], bytes]
# Per (host, pool): the samples a part of one family was encoded from, and its text.
_FamilyParts = dict[tuple[str, str], tuple[list[Sample], bytes]]
# Per family name: its parts.
_PartCache = dict[str, _FamilyParts]


def _encode_parts(
    encoder: _Encoder,
    family: Metric,
    stale: list[tuple[tuple[str, str], list[Sample]]],
    header: bytes,
    trailer: bytes,
    parts: _FamilyParts,
) -> None:
    """Encode the changed parts of one family into ``parts``, in one encoder call.

    One call per part would cost more than the whole family at once where many parts changed
    (a filesystem shared by hundreds of pools moves all their figures at every info poll): the
    encoder's fixed cost per call is many times that of a sample. Each of these samples is one
    line in both formats (label values escape their newlines), so the text splits back into
    the parts by their sample counts; should it not, each part is encoded on its own.
    """
    samples = [sample for _key, part in stale for sample in part]
    text = _encode_family(encoder, _with_samples(family, samples), trailer)[len(header) :]
    lines = text.splitlines(keepends=True)
    if len(lines) != len(samples):
        for key, part in stale:
            alone = _encode_family(encoder, _with_samples(family, part), trailer)
            parts[key] = (part, alone[len(header) :])
        return
    start = 0
    for key, part in stale:
        end = start + len(part)
        parts[key] = (part, b"".join(lines[start:end]))
        start = end


def _encode_family(encoder: _Encoder, family: Metric, trailer: bytes) -> bytes:
    """The text of one family (HELP and TYPE lines, then its samples), escaped by
    prometheus_client's own encoder, without the page's trailer."""
    text = encoder(_Collected([family]))  # type: ignore[arg-type]  # collect() will do
    return text[: len(text) - len(trailer)]


def _with_samples(family: Metric, samples: list[Sample]) -> Metric:
    copy = Metric(family.name, family.documentation, family.type, family.unit)
    copy.samples = samples
    return copy


def _gzip(plain: Page) -> Page:
    # mtime=0: the same page compresses to the same bytes.
    body = gzip.compress(plain[0], compresslevel=GZIP_LEVEL, mtime=0)
    return body, {**plain[1], "Content-Encoding": "gzip"}
