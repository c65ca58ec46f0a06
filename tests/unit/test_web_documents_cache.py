"""The pools document cache: one build per generation and variant, shared by every request."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from poolwatch.documents import InventorySnapshot, pools_document
from poolwatch.inventory import Inventory
from poolwatch.web.document_parts import Encoded, PoolsDocumentEncoder
from poolwatch.web.documents_cache import PoolsDocumentCache
from tests.unit.factories import HOST_A, sample_inventory


@pytest.fixture
async def cache() -> AsyncIterator[tuple[Inventory, PoolsDocumentCache]]:
    inventory = sample_inventory()
    cache = PoolsDocumentCache(inventory)
    yield inventory, cache
    cache.close()


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Every document build, as (generation, with volumes)."""
    seen: list[tuple[int, bool]] = []
    build = PoolsDocumentEncoder.encode

    def counted(
        encoder: PoolsDocumentEncoder, snapshot: InventorySnapshot, *, with_volumes: bool
    ) -> Encoded:
        seen.append((snapshot.generation, with_volumes))
        return build(encoder, snapshot, with_volumes=with_volumes)

    monkeypatch.setattr(PoolsDocumentEncoder, "encode", counted)
    return seen


def _decoded(answer: tuple[bytes, dict[str, str]]) -> Any:
    body, headers = answer
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return json.loads(body)


def _default_volumes(document: Any) -> Any:
    return next(p for p in document["hosts"][0]["pools"] if p["name"] == "default")["volumes"]


def _touch(inventory: Inventory) -> None:
    """A change of the inventory: the default pool's allocation grows by one byte."""
    pool = inventory.pool(HOST_A, "default")
    assert pool is not None
    inventory.put_pool(HOST_A, replace(pool, allocation=pool.allocation + 1))


async def test_concurrent_requests_share_one_build_per_generation(
    cache: tuple[Inventory, PoolsDocumentCache], builds: list[tuple[int, bool]]
) -> None:
    inventory, documents = cache
    answers = await asyncio.gather(
        *(documents.answer(with_volumes=True, accept_encoding=None) for _ in range(20))
    )
    assert builds == [(inventory.generation, True)]
    assert all(body is answers[0][0] for body, _ in answers)  # the same bytes for everyone
    assert _decoded(answers[0]) == json.loads(
        json.dumps(pools_document(inventory, with_volumes=True))
    )
    assert answers[0][1] == {"Content-Type": "application/json; charset=utf-8"}
    await documents.answer(with_volumes=True, accept_encoding=None)
    assert len(builds) == 1


async def test_a_change_is_in_the_next_answer(
    cache: tuple[Inventory, PoolsDocumentCache], builds: list[tuple[int, bool]]
) -> None:
    inventory, documents = cache
    before = _decoded(await documents.answer(with_volumes=False, accept_encoding=None))
    _touch(inventory)
    after = _decoded(await documents.answer(with_volumes=False, accept_encoding=None))
    assert after["generation"] == inventory.generation > before["generation"]
    assert after == json.loads(json.dumps(pools_document(inventory)))
    assert len(builds) == 2


async def test_variants_are_cached_apart_and_gzip_is_the_plain_document(
    cache: tuple[Inventory, PoolsDocumentCache], builds: list[tuple[int, bool]]
) -> None:
    inventory, documents = cache
    plain = await documents.answer(with_volumes=True, accept_encoding=None)
    zipped = await documents.answer(with_volumes=True, accept_encoding="gzip, deflate")
    summary = await documents.answer(with_volumes=False, accept_encoding="gzip")
    assert zipped[1]["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped[0]) == plain[0]
    assert "list" not in _default_volumes(_decoded(summary))
    assert "list" in _default_volumes(_decoded(plain))
    for _ in range(3):
        await documents.answer(with_volumes=True, accept_encoding="gzip")
    assert sorted(builds) == [(inventory.generation, False), (inventory.generation, True)]


class _InlineExecutor(concurrent.futures.Executor):
    """Builds at once, in the caller: the build is done before its asyncio future says so."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


@pytest.mark.timeout(20)
async def test_a_request_that_meets_a_finished_build_before_its_callback_is_answered() -> None:
    inventory = sample_inventory()
    documents = PoolsDocumentCache(inventory, builder=_InlineExecutor())
    first = asyncio.ensure_future(documents.answer(with_volumes=False, accept_encoding=None))
    await asyncio.sleep(0)  # the first request started its build, whose future completes next
    _touch(inventory)
    # Queued behind that completion and before its done callback: it finds the build finished
    # but not settled, and too old. (It used to spin there for ever, the loop with it.)
    second = asyncio.ensure_future(documents.answer(with_volumes=False, accept_encoding=None))
    answers = await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert _decoded(answers[1])["generation"] == inventory.generation


async def test_requests_during_constant_change_all_finish_with_a_fresh_document(
    cache: tuple[Inventory, PoolsDocumentCache],
) -> None:
    # Builds finish while other requests are already queued on the loop: a request that meets a
    # finished build before its completion callback ran must not spin (it once did, for ever).
    inventory, documents = cache

    async def client() -> None:
        for _ in range(30):
            wanted = inventory.generation
            answer = await documents.answer(with_volumes=True, accept_encoding="gzip")
            assert _decoded(answer)["generation"] >= wanted
            _touch(inventory)
            await asyncio.sleep(0)

    async with asyncio.timeout(60):
        await asyncio.gather(*(client() for _ in range(8)))
