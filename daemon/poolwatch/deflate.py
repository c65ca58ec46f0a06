"""gzip answers assembled from pieces deflated separately, so a piece is compressed once while
it stays the same, however many answers it appears in.

Each piece is deflated with a sync flush (not a final block): it ends on a byte boundary, so
pieces concatenate into one valid deflate stream; `gzip_member` wraps such a stream in one gzip
member (header, the pieces, an empty final block, the whole body's CRC-32 and length), which
``gzip.decompress`` reads as the body. A piece deflated with the text right before it in the
stream as zlib's preset dictionary (`deflate`'s ``preceded_by``) can refer back into that text,
so the pieces compress nearly as well as the whole body at once.

Used by the pools document (web/document_parts.py) and the /metrics page
(exporter/page_gzip.py), each in a thread of its own.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

# zlib's default level. Measured on a 50 pools x 200 volumes /metrics page (3.4 MB): level 9,
# gzip's default, takes 50 ms against 13 ms here, for a page only a fifth smaller.
GZIP_LEVEL = 6
# How far back deflate's matches reach: what of the preceding text is worth a dictionary.
WINDOW = 1 << zlib.MAX_WBITS
# gzip's member header as gzip.compress(mtime=0) writes it: no name, no time, OS "Unix".
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
# An empty final block: the end of the deflate stream.
_FINAL_BLOCK = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS).flush(zlib.Z_FINISH)


def deflate(data: bytes, preceded_by: bytes = b"") -> bytes:
    """Raw deflate blocks of ``data`` ending on a byte boundary (a sync flush, not final): such
    pieces concatenate into one valid deflate stream. With ``preceded_by``, the bytes right
    before ``data`` in that stream, matches may reach back into them."""
    if preceded_by:
        compressor = zlib.compressobj(
            GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=preceded_by[-WINDOW:]
        )
    else:
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def gzip_member(deflated: Iterable[bytes], body: bytes) -> bytes:
    """One gzip member of ``body``, from ``deflated``: `deflate`'s pieces of body, in order."""
    trailer = struct.pack("<II", zlib.crc32(body), len(body) & 0xFFFFFFFF)
    return b"".join([_GZIP_HEADER, *deflated, _FINAL_BLOCK, trailer])
