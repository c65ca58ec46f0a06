"""The gzip of a /metrics page, compressed segment by segment: a segment is deflated again only
when one of its pieces, or the last pieces before it (its dictionary), changed.

Compressing the whole page again for each generation cost 18 ms at 50 pools x 200 volumes
(3.3 MB), landing on the thread that answers gzip scrapers just as an event's page is due. The
render keeps each (family, pool) part's text as the same bytes while it is unchanged
(exporter/exposition.py), so the page comes as runs of pieces (a run per family: its header and
its parts). Pieces are too many and too small to deflate one by one (a pool-level family's part
is one ~150-byte line: 7,500 of them at 500 pools), so consecutive pieces of a run are grouped
into segments of about `SEGMENT_BYTES`. Where a segment ends depends on each piece alone, never
on the running size: a piece ends its segment when its mark (a hash of its family and pool,
fixed while the pool exists) is a multiple of a power of two near ``SEGMENT_BYTES / len(piece)``.
So a pool whose lines change, or a pool added or removed, moves at most the boundaries around
its own pieces, and every other segment keeps its pieces and its compression.

Each segment is deflated with the last `DICTIONARY_BYTES` of the text before it as zlib's preset
dictionary (poolwatch/deflate.py), so the page compresses as well as in one piece; the segment is
deflated again when the pieces that hold that text change. Best of 5 against gzip of the whole
page at level 6, on a busy 2-core machine: 50 pools x 200 volumes (3.5 MB): first 11.6-15.9 ms
against 15.4-16.7, 185 KB either way, then 1.2-1.8 ms after one pool's event (13 of 174
segments); 500 pools x 2 volumes (0.9 MB): first 3.7 ms against 3.8-5.3, 55 KB against 61, then
1.0-1.8 ms (14 of 92 segments). Used by the exposition's compression thread only.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass

from poolwatch.deflate import deflate, gzip_member

# About the size of a segment: large enough that deflating segment by segment costs little
# more than deflating the page at once, small enough that a change recompresses little.
SEGMENT_BYTES = 16 * 1024
# The text before a segment that is its preset dictionary: what repeats from one segment to
# the next is metric and label names, close by. zlib's whole window (32 KB) made the first
# compression of a 50 x 200 page a fifth slower than gzip of the whole page, for no smaller page.
DICTIONARY_BYTES = 1024


def mark(family: str, key: tuple[str, str]) -> int:
    """The mark of a family's part for pool ``key``: the same in every process, and for as long
    as the pool exists, whatever its lines."""
    return zlib.crc32("\0".join((family, *key)).encode())


def ends_segment(piece_mark: int, piece: bytes) -> bool:
    """Whether ``piece`` ends its segment: with a chance of about len(piece) / SEGMENT_BYTES
    (the stride rounded to a power of two), so segments hold about SEGMENT_BYTES; always for a
    piece of SEGMENT_BYTES or more; never for an empty piece (a pool without a line in the
    family). Decided once per piece, when its text is encoded."""
    if not piece:
        return False
    stride = 1 << max(0, (SEGMENT_BYTES // max(1, len(piece))).bit_length() - 1)
    return piece_mark & (stride - 1) == 0


@dataclass(frozen=True, slots=True)
class PlainPage:
    """A rendered page: its body, and the runs of pieces it was joined from, in order."""

    body: bytes
    # Per run: its pieces, and for each whether it ends its segment (`ends_segment`; a run's
    # end always does).
    runs: list[tuple[list[bytes], list[bool]]]


@dataclass(frozen=True, slots=True)
class _Segment:
    deflated: bytes
    after: tuple[bytes, ...]  # the pieces it was deflated after (`_context`)


def _segments(page: PlainPage) -> list[tuple[bytes, ...]]:
    segments: list[tuple[bytes, ...]] = []
    for pieces, ends in page.runs:
        start = 0
        for end in itertools.compress(range(1, len(pieces) + 1), ends):
            segments.append(tuple(pieces[start:end]))
            start = end
        if start < len(pieces):
            segments.append(tuple(pieces[start:]))
    return segments


class PageGzip:
    """Compresses the pages of one encoding, keeping the segments of the last page compressed.

    Holds one compressed segment per segment of the last page (about the size of its gzip):
    the segments of older pages are dropped at the next compression.
    """

    def __init__(self) -> None:
        self._segments: dict[tuple[bytes, ...], _Segment] = {}
        self.deflated_segments = 0  # segments deflated afresh, over this object's life

    def compress(self, page: PlainPage) -> bytes:
        """``page.body`` as one gzip member."""
        old, new = self._segments, dict[tuple[bytes, ...], _Segment]()
        blocks: list[bytes] = []
        context: tuple[bytes, ...] = ()
        for segment in _segments(page):
            # Keys compare by identity first: the unchanged parts are the very same bytes.
            cached = new.get(segment) or old.get(segment)
            if cached is None or not (cached.after is context or cached.after == context):
                dictionary = b"".join(context)[-DICTIONARY_BYTES:]
                cached = _Segment(deflate(b"".join(segment), dictionary), context)
                self.deflated_segments += 1
            new[segment] = cached
            blocks.append(cached.deflated)
            context = _context(segment)
        self._segments = new
        return gzip_member(blocks, page.body)


def _context(segment: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The last pieces of ``segment`` that hold `DICTIONARY_BYTES` of its text: the dictionary
    of the segment after it, which is deflated again only when they change."""
    size = 0
    for start in range(len(segment) - 1, -1, -1):
        size += len(segment[start])
        if size >= DICTIONARY_BYTES:
            return segment[start:]
    return segment
