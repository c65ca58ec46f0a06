"""The pools document encoded pool by pool: the bytes json.dumps gives, re-encoding only what
changed, and a gzip answer that decompresses to exactly those bytes."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from typing import Any

import pytest

from poolwatch.documents import pools_document_of, snapshot_of
from poolwatch.inventory import Inventory
from poolwatch.model import PoolPolicy, VolumeScan
from poolwatch.web import document_parts
from poolwatch.web.document_parts import PoolsDocumentEncoder
from tests.unit.factories import HOST_A, HOST_B, NOW, pool, sample_inventory, volume


def _big_inventory(pools: int = 6, volumes: int = 50) -> Inventory:
    """Pools that repeat each other's volume names, as the load test's host does."""
    inventory = sample_inventory()
    for i in range(pools):
        scan = VolumeScan(
            count=volumes,
            capacity_bytes=0,
            allocation_bytes=0,
            volumes=tuple(volume(f"v{j}.qcow2") for j in range(volumes)),
            scanned_at=NOW,
        )
        inventory.put_pool(HOST_A, pool(f"big-{i}", volumes=scan))
    return inventory


def _check(encoder: PoolsDocumentEncoder, inventory: Inventory, *, with_volumes: bool) -> bytes:
    """Encode the inventory; assert the bytes are json.dumps's and the gzip decompresses to
    them; return the gzip body."""
    snapshot = snapshot_of(inventory)
    encoded = encoder.encode(snapshot, with_volumes=with_volumes)
    assert encoded.generation == inventory.generation
    whole = json.dumps(pools_document_of(snapshot, with_volumes=with_volumes)).encode()
    assert encoded.body == whole
    zipped = encoded.gzip()
    assert gzip.decompress(zipped) == whole
    return zipped


@pytest.mark.parametrize("with_volumes", [False, True])
def test_the_document_is_byte_for_byte_what_json_dumps_gives(with_volumes: bool) -> None:
    # Two hosts (one disconnected), hostile names, a stopped pool, a capped scan.
    _check(PoolsDocumentEncoder(), _big_inventory(), with_volumes=with_volumes)


def test_a_host_without_pools_and_an_empty_inventory() -> None:
    inventory = Inventory()
    encoder = PoolsDocumentEncoder()
    _check(encoder, inventory, with_volumes=True)
    inventory.add_host(HOST_B, name=HOST_B, uri="test:///default")
    _check(encoder, inventory, with_volumes=True)


def test_a_change_re_encodes_that_pool_only(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[str] = []
    original = document_parts.pool_document

    def counted(p: Any, **kwargs: Any) -> Any:
        encoded.append(p.name)
        return original(p, **kwargs)

    monkeypatch.setattr(document_parts, "pool_document", counted)
    inventory = _big_inventory()
    encoder = PoolsDocumentEncoder()
    _check(encoder, inventory, with_volumes=True)
    first = len(encoded)
    assert first == sum(len(h.pools) for h in inventory.hosts.values())

    big = inventory.pool(HOST_A, "big-3")
    assert big is not None
    inventory.put_pool(HOST_A, replace(big, allocation=big.allocation + 1))
    _check(encoder, inventory, with_volumes=True)
    assert encoded[first:] == ["big-3"]

    # A policy is part of its pool's entry; an equal copy of a pool is not a change.
    inventory.set_policy(HOST_A, "big-1", PoolPolicy(level=2, episode="e1"))
    inventory.put_pool(HOST_A, replace(big, allocation=big.allocation + 1))
    _check(encoder, inventory, with_volumes=True)
    assert encoded[first:] == ["big-3", "big-1"]

    # The other variant has texts of its own.
    _check(encoder, inventory, with_volumes=False)
    assert len(encoded) == first + 2 + first


def test_gzip_stays_right_when_the_pool_before_a_kept_one_changes_or_goes() -> None:
    # A pool is deflated with the pool before it as its dictionary: once that neighbour
    # changes or goes, the kept pool has to be deflated again, else the stream is corrupt.
    inventory = _big_inventory()
    encoder = PoolsDocumentEncoder()
    _check(encoder, inventory, with_volumes=True)
    big = inventory.pool(HOST_A, "big-2")
    assert big is not None
    inventory.put_pool(HOST_A, replace(big, allocation=1))
    _check(encoder, inventory, with_volumes=True)
    pools = dict(inventory.hosts[HOST_A].pools)
    del pools["big-2"]
    inventory.replace_pools(HOST_A, pools)
    _check(encoder, inventory, with_volumes=True)


def test_gzip_compresses_across_pools_nearly_as_the_whole_document_does() -> None:
    # Deflated apart, without the pool before as a dictionary, these pools take 21 KB: 3.7
    # times the whole document's 5.7 KB. With it, 9 KB (a block header per pool); on the load
    # test's 1 MB document 19 KB against 17 KB.
    inventory = _big_inventory(pools=20, volumes=200)
    zipped = _check(PoolsDocumentEncoder(), inventory, with_volumes=True)
    whole = gzip.compress(
        json.dumps(pools_document_of(snapshot_of(inventory), with_volumes=True)).encode()
    )
    assert len(zipped) < 2 * len(whole)
