"""The /api/v1/pools answer: built once per inventory generation, served as bytes to every request.

On a big host (50 pools x 200 volumes: 1 MB of JSON) building the document with its volume list
and encoding it is ~100 ms of Python; built on the loop inside each request, 8 parallel clients
held /healthz at 0.4-0.9 s p99 (tests/reliability/test_pools_document_load.py). Here a build
happens at most once per generation and variant (with or without volumes, plain or gzip), in a
thread of its own, from a copy of the inventory taken on the loop; concurrent requests share the
build in flight, and a request is answered with a document at least as new as the inventory was
when it arrived. A build encodes only the pools that changed since the previous one
(`poolwatch.web.document_parts`): a poll moves the generation once per pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gzip
from collections import deque
from collections.abc import Callable

from prometheus_client.exposition import gzip_accepted

from poolwatch.documents import InventorySnapshot, snapshot_of
from poolwatch.inventory import Inventory
from poolwatch.web.document_parts import GZIP_LEVEL, Encoded, PoolsDocumentEncoder

CONTENT_TYPE = "application/json; charset=utf-8"
# Builds of a variant kept for compressing their body from its parts.
RECENT_BUILDS = 4

Answer = tuple[bytes, dict[str, str]]  # body and headers; shared, never to be mutated
_Key = tuple[bool, bool]  # (with volumes, gzip)


class PoolsDocumentCache:
    """The pools document of ``inventory`` in each variant, cached per generation.

    One entry per variant (four at most), replaced when a newer generation is built: memory is
    bounded by the size of the documents, not by the number of clients. ``answer`` is called on
    the event loop thread only.
    """

    def __init__(
        self, inventory: Inventory, *, builder: concurrent.futures.Executor | None = None
    ) -> None:
        self._inventory = inventory
        self._answers: dict[_Key, tuple[int, Answer]] = {}
        self._building: dict[_Key, tuple[int, asyncio.Future[Answer]]] = {}
        # One thread: builds queue behind each other instead of competing for the GIL, and the
        # encoder's per-pool texts are touched by that thread only.
        self._builder = builder or concurrent.futures.ThreadPoolExecutor(1, "pools-document")
        self._encoder = PoolsDocumentEncoder()
        # The last few builds of each variant, for their gzip answers: under constant change a
        # newer build can run between a build and its compression.
        self._encoded: dict[bool, deque[Encoded]] = {
            False: deque(maxlen=RECENT_BUILDS),
            True: deque(maxlen=RECENT_BUILDS),
        }

    async def answer(self, *, with_volumes: bool, accept_encoding: str | None) -> Answer:
        """Body and headers (Content-Type, Content-Encoding) for one request."""
        wanted = self._inventory.generation

        def build() -> tuple[int, Callable[[], Answer]]:
            snapshot = snapshot_of(self._inventory)  # on the loop: the mappings change there
            return snapshot.generation, functools.partial(self._encode, snapshot, with_volumes)

        generation, plain = await self._get((with_volumes, False), wanted, build)
        if not gzip_accepted(accept_encoding or ""):
            return plain
        compress = (generation, functools.partial(self._gzip, plain, with_volumes))
        _, zipped = await self._get((with_volumes, True), generation, lambda: compress)
        return zipped

    async def _get(
        self, key: _Key, wanted: int, prepare: Callable[[], tuple[int, Callable[[], Answer]]]
    ) -> tuple[int, Answer]:
        # At most two builds' wait: a build of an older generation in flight is awaited (not
        # joined by a second one), then one of the current generation is.
        while True:
            cached = self._answers.get(key)
            if cached is not None and cached[0] >= wanted:
                return cached
            building = self._building.get(key)
            if building is not None and building[1].done():
                # Finished, but its done callback has not run yet: awaiting a done future does
                # not yield, so looping on it would spin the loop for ever. Settle it here.
                self._built(key, building[1])
                continue
            if building is None:
                generation, work = prepare()
                future = asyncio.get_running_loop().run_in_executor(self._builder, work)
                building = self._building[key] = (generation, future)
                future.add_done_callback(functools.partial(self._built, key))
            generation, future = building
            answer = await asyncio.shield(future)
            if generation >= wanted:
                return generation, answer

    def _built(self, key: _Key, future: asyncio.Future[Answer]) -> None:
        """Move a finished build into the cache; called once or twice per build (idempotent)."""
        building = self._building.get(key)
        if building is None or building[1] is not future:
            return
        del self._building[key]
        if future.cancelled() or future.exception() is not None:
            return
        cached = self._answers.get(key)
        if cached is None or cached[0] < building[0]:
            self._answers[key] = (building[0], future.result())

    def close(self) -> None:
        self._builder.shutdown(wait=False, cancel_futures=True)

    def _encode(self, snapshot: InventorySnapshot, with_volumes: bool) -> Answer:
        """In the build thread: the document as JSON, as aiohttp's json_response spells it."""
        encoded = self._encoder.encode(snapshot, with_volumes=with_volumes)
        self._encoded[with_volumes].append(encoded)
        return encoded.body, {"Content-Type": CONTENT_TYPE}

    def _gzip(self, plain: Answer, with_volumes: bool) -> Answer:
        """In the build thread: ``plain`` compressed, from its pools' parts when it is one of
        the documents built last (it is, unless many newer builds came in between)."""
        encoded = next((e for e in self._encoded[with_volumes] if e.body is plain[0]), None)
        if encoded is not None:
            body = encoded.gzip()
        else:
            # mtime=0: the same document compresses to the same bytes.
            body = gzip.compress(plain[0], compresslevel=GZIP_LEVEL, mtime=0)
        return body, {**plain[1], "Content-Encoding": "gzip"}
