"""The pools document as JSON, encoded pool by pool: each pool's text is kept until it changes.

A poll of a big host changes the inventory once per pool as the pools' scans come in, so the
generation moves dozens of times within a second, and the API's cache builds the document again
for each. Encoding the whole document (50 pools x 200 volumes: 1 MB, ~20 ms of Python and ten
thousand dicts for the garbage collector) for every such step kept the build thread busy through
every poll, competing with the loop and the /metrics render for the two cores of a small host.
Here a new generation encodes the pools whose snapshot, policy or guests changed, and joins the
others' bytes as they were: the same bytes `json.dumps` gives for the whole document.

The gzip answer is assembled the same way: each pool's text is deflated once (flushed to a byte
boundary, so the pieces concatenate into one deflate stream) and joined into one gzip member
with the whole body's CRC, instead of compressing 1 MB again for each generation. A pool is
deflated with the text before it (the previous pool) as zlib's preset dictionary: that text is
what precedes it in the stream, so pools that repeat each other's volume names still compress
as well as the whole document did (17 KB for the 1 MB test document, 110 KB without the
dictionary); a pool is deflated again when it or the pool before it changed.

The deflate and gzip framing is poolwatch/deflate.py's, shared with /metrics. Used by the
build thread only (``PoolsDocumentCache``), like the exposition's per-pool parts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from poolwatch.deflate import GZIP_LEVEL, deflate, gzip_member
from poolwatch.documents import InventorySnapshot, host_document, pool_document
from poolwatch.model import HostSnapshot, PoolGuest, PoolPolicy, PoolSnapshot

_SEPARATOR = b", "
_DEFLATED_SEPARATOR = deflate(_SEPARATOR)
# Re-exported: the whole-document gzip (web/documents_cache.py) compresses at the same level.
__all__ = ["GZIP_LEVEL", "Encoded", "PoolsDocumentEncoder"]


@dataclass(slots=True)
class _Part:
    """One pool's encoded entry and what it was encoded from."""

    pool: PoolSnapshot
    policy: PoolPolicy | None
    guests: tuple[PoolGuest, ...]
    text: bytes
    # Deflated on the first gzip answer that needs it, after the part it was deflated after.
    deflated: bytes | None = None
    deflated_after: _Part | None = None

    def deflate(self, after: _Part | None) -> bytes:
        """This part deflated where it follows ``after`` and a separator (or other text)."""
        if self.deflated is None or self.deflated_after is not after:
            context = b"" if after is None else after.text + _SEPARATOR
            self.deflated, self.deflated_after = deflate(self.text, context), after
        return self.deflated


@dataclass(frozen=True, slots=True)
class Encoded:
    """A document as built: its body, and the pieces that body was joined from."""

    generation: int
    body: bytes
    pieces: list[bytes | _Part] = field(repr=False)  # text, or a pool's part, in order

    def gzip(self) -> bytes:
        """``body`` as a gzip member, whose pool parts are deflated again only when they or
        the pool before them changed."""
        blocks = []
        previous: _Part | None = None  # the part right before, bar a separator
        for piece in self.pieces:
            if isinstance(piece, _Part):
                blocks.append(piece.deflate(previous))
                previous = piece
            elif piece == _SEPARATOR:
                blocks.append(_DEFLATED_SEPARATOR)
            else:
                blocks.append(deflate(piece))
                previous = None
        return gzip_member(blocks, self.body)


def _same(a: object, b: object) -> bool:
    # Snapshots are replaced, never mutated: identity is the common, cheap answer; equality
    # catches an equal copy (a re-read that found nothing new).
    return a is b or a == b


class PoolsDocumentEncoder:
    """Encodes a snapshot's pools document, with or without volume lists, reusing the text of
    every pool unchanged since the previous call for that variant.

    Holds one text per pool and variant, of the pools of the last snapshot only: a pool that
    went away is dropped at the next encode.
    """

    def __init__(self) -> None:
        self._parts: dict[bool, dict[tuple[str, str], _Part]] = {False: {}, True: {}}
        self.encoded_pools = 0  # pools encoded afresh, over the encoder's life

    def encode(self, snapshot: InventorySnapshot, *, with_volumes: bool) -> Encoded:
        old = self._parts[with_volumes]
        new: dict[tuple[str, str], _Part] = {}
        head, tail = _ends({"generation": snapshot.generation, "hosts": []})
        pieces: list[bytes | _Part] = [head]
        for i, (key, host) in enumerate(snapshot.hosts.items()):
            policies = snapshot.policies[key]
            host_head, host_tail = _ends(host_document(key, host, pools=[]))
            pieces.append((_SEPARATOR if i else b"") + host_head)
            for j, name in enumerate(sorted(host.pools)):
                part = self._part(old.get((key, name)), host, policies, name, with_volumes)
                new[key, name] = part
                pieces += [_SEPARATOR, part] if j else [part]
            pieces.append(host_tail)
        pieces.append(tail)
        self._parts[with_volumes] = new
        body = b"".join(p.text if isinstance(p, _Part) else p for p in pieces)
        return Encoded(snapshot.generation, body, pieces)

    def _part(
        self,
        cached: _Part | None,
        host: HostSnapshot,
        policies: Mapping[str, PoolPolicy],
        name: str,
        with_volumes: bool,
    ) -> _Part:
        pool, policy = host.pools[name], policies.get(name)
        guests = host.pool_guests.get(name, ())
        if (
            cached is not None
            and _same(cached.pool, pool)
            and _same(cached.policy, policy)
            and _same(cached.guests, guests)
        ):
            return cached
        self.encoded_pools += 1
        document = pool_document(pool, with_volumes=with_volumes, policy=policy, guests=guests)
        return _Part(pool, policy, guests, json.dumps(document).encode())


def _ends(document: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The JSON of ``document``, whose last field is an empty list, as the text before that
    list's items and the text after them: json.dumps's spelling of the filled-in document."""
    text = json.dumps(document).encode()
    assert text.endswith(b"[]}"), text[-20:]  # the last field's "[]" and the closing brace
    return text[:-2], b"]}"
