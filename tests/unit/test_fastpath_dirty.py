"""Which volume files each pool's next restat reads (fastpath/dirty.py)."""

from __future__ import annotations

from poolwatch.fastpath.dirty import DirtyFiles


def test_a_followed_pool_reads_everything_first_then_only_what_changed() -> None:
    dirty = DirtyFiles()
    dirty.follow("p")
    dirty.changed("p", {"a.img"})  # before the first restat: everything counts anyway
    assert dirty.take("p") is None
    assert dirty.take("p") == frozenset()
    dirty.changed("p", {"a.img"})
    dirty.changed("p", {"a.img", "b.img"})
    dirty.follow("p")  # followed already: what it noted stays
    assert dirty.take("p") == {"a.img", "b.img"}
    assert dirty.take("p") == frozenset()


def test_lost_events_make_the_next_restat_read_everything() -> None:
    dirty = DirtyFiles()
    dirty.follow("p")
    dirty.take("p")
    dirty.changed("p", {"a.img"})
    dirty.lost("p")
    dirty.changed("p", {"b.img"})
    assert dirty.take("p") is None
    assert dirty.take("p") == frozenset()


def test_a_pool_not_followed_always_reads_everything() -> None:
    dirty = DirtyFiles()
    dirty.changed("p", {"a.img"})
    dirty.lost("p")
    assert dirty.take("p") is None
    dirty.follow("p")
    dirty.take("p")
    dirty.forget("p")  # e.g. its directory now on NFS, or no longer watched
    assert not dirty.followed("p")
    assert dirty.take("p") is None
