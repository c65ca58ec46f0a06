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


def test_a_pool_is_covered_from_its_first_full_read_until_events_are_lost() -> None:
    dirty = DirtyFiles()
    dirty.follow("p")
    assert not dirty.covered("p")  # what happened before the watch began is unknown
    dirty.reading_all("p")
    dirty.changed("p", {"a.img"})  # written while the full read ran: read again next time
    assert dirty.covered("p")
    assert dirty.take("p") == {"a.img"}
    dirty.lost("p")
    dirty.take("p")  # an info poll reads every file, but lists nothing
    assert not dirty.covered("p")
    dirty.reading_all("p")
    assert dirty.covered("p")
    dirty.forget("p")
    dirty.reading_all("p")
    assert not dirty.covered("p")
