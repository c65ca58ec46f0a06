"""Pieces deflated apart, with and without the text before them as dictionary, make one gzip
member that any gzip reader reads as the whole body."""

from __future__ import annotations

import gzip

from poolwatch.deflate import deflate, gzip_member

LINES = [
    f'metric{{pool="p{i % 7}",volume="v{i}.qcow2"}} {i * 4096}\n'.encode() for i in range(3000)
]


def test_pieces_make_one_member_of_the_whole_body() -> None:
    pieces = [b"".join(LINES[i : i + 300]) for i in range(0, len(LINES), 300)]
    body = b"".join(pieces)
    alone = gzip_member([deflate(piece) for piece in pieces], body)
    chained = gzip_member(
        [deflate(piece, pieces[i - 1] if i else b"") for i, piece in enumerate(pieces)], body
    )
    assert gzip.decompress(alone) == body
    assert gzip.decompress(chained) == body
    # The text before a piece as its dictionary: matches reach back into it.
    assert len(chained) < len(alone)
    assert len(chained) < 1.2 * len(gzip.compress(body, mtime=0))


def test_empty_pieces_and_body() -> None:
    assert gzip.decompress(gzip_member([], b"")) == b""
    assert gzip.decompress(gzip_member([deflate(b""), deflate(b"x")], b"x")) == b"x"
