"""Files created, deleted and renamed in watched directories (fastpath/inotify.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from poolwatch.fastpath.inotify import DirectoryChanges


async def test_files_that_come_go_or_move_name_their_directory(tmp_path: Path) -> None:
    seen: asyncio.Queue[str] = asyncio.Queue()
    changes = DirectoryChanges(seen.put_nowait)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        assert changes.watch("pool-a", str(tmp_path / "a"))
        assert changes.watch("pool-b", str(tmp_path / "b"))
        for act in (
            lambda: (tmp_path / "a" / "new.img").write_bytes(b"x"),
            lambda: (tmp_path / "a" / "new.img").rename(tmp_path / "b" / "new.img"),
            lambda: (tmp_path / "b" / "new.img").unlink(),
        ):
            act()
            found = {await asyncio.wait_for(seen.get(), 5)}
            await asyncio.sleep(0.05)
            while not seen.empty():
                found.add(seen.get_nowait())
            assert found <= {"pool-a", "pool-b"}
        changes.unwatch("pool-b")
        (tmp_path / "b" / "quiet.img").write_bytes(b"x")
        (tmp_path / "a" / "loud.img").write_bytes(b"x")
        assert await asyncio.wait_for(seen.get(), 5) == "pool-a"
    finally:
        changes.close()


async def test_a_directory_that_does_not_exist_is_not_watched(tmp_path: Path) -> None:
    changes = DirectoryChanges(lambda _key: None)
    try:
        assert not changes.watch("pool", str(tmp_path / "missing"))
        assert changes.watched == frozenset()
    finally:
        changes.close()
