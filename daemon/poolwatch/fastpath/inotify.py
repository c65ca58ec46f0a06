"""Kernel notification of what changes in pool directories (inotify): entries that come, go or
move, and files whose content or attributes change.

Through libc with ctypes, on the asyncio loop (``add_reader``): no thread and no dependency.
Where inotify is unavailable (another libc, a kernel without it, the per-user watch limit
reached) ``watch`` says so and the pool keeps its timers only.

A guest writing constantly makes an IN_MODIFY per write. The reader does not wake poolwatch per
write: after each read it stops reading for ``pause`` seconds and lets the kernel queue collect
the rest (it merges an event identical to the last one queued), then hands over one ``Batch``.
``catch_up`` reads what is queued at once, for a poll that wants every change made before it.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger()

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# A file's blocks or size moved: write, truncate, fallocate (also punching holes), chmod/utime.
# IN_CLOSE_WRITE also catches a writer that went through a shared mmap and then closed the file.
CONTENT = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE
ENTRIES = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
# The directory itself may go (then the pool fails its next refresh) or lose its filesystem.
WATCH_MASK = CONTENT | ENTRIES | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)

# Long enough to merge a writing guest's events into one wake-up, well under the second a new
# volume file may take to show (the refresher's debounce and a refresh come after it).
PAUSE = 0.1


@dataclass(slots=True)
class Batch:
    """What one read of the queue found, by key (pool name)."""

    entries: set[str] = field(default_factory=set)  # entries came, went or moved
    files: dict[str, set[str]] = field(default_factory=dict)  # names changed (entries too)
    lost: set[str] = field(default_factory=set)  # events lost (overflow) or watch gone
    overflow: bool = False  # the kernel's queue overflowed: events of every key were lost

    def __bool__(self) -> bool:
        return bool(self.entries or self.files or self.lost or self.overflow)


class DirectoryChanges:
    """Calls ``on_batch(batch)`` on the loop with what changed in the watched directories."""

    def __init__(self, on_batch: Callable[[Batch], None], *, pause: float = PAUSE) -> None:
        self._on_batch = on_batch
        self._pause = pause
        self._fd: int | None = None
        self._libc: ctypes.CDLL | None = None
        self._keys: dict[int, str] = {}  # watch descriptor -> key
        self._watches: dict[str, tuple[int, str]] = {}  # key -> (watch descriptor, path)
        self._failed = False
        self._paused: asyncio.TimerHandle | None = None

    def watch(self, key: str, path: str) -> bool:
        """Watch ``path`` for ``key`` (a pool name); True while it is watched."""
        current = self._watches.get(key)
        if current is not None and current[1] == path:
            return True
        if current is not None:
            self.unwatch(key)
        libc, fd = self._open()
        if libc is None or fd is None:
            return False
        wd = libc.inotify_add_watch(fd, os.fsencode(path), WATCH_MASK)
        if wd < 0:
            code = ctypes.get_errno()
            log.debug("inotify_watch_failed", path=path, error=os.strerror(code))
            return False
        self._keys[wd] = key
        self._watches[key] = (wd, path)
        return True

    def unwatch(self, key: str) -> None:
        current = self._watches.pop(key, None)
        if current is None:
            return
        wd = current[0]
        if self._keys.get(wd) == key:
            del self._keys[wd]
            # Fails harmlessly (EINVAL) when the kernel already dropped it (directory removed).
            if self._libc is not None and self._fd is not None:
                self._libc.inotify_rm_watch(self._fd, wd)

    @property
    def watched(self) -> frozenset[str]:
        return frozenset(self._watches)

    def catch_up(self) -> None:
        """Hand over now what the queue holds: held back by a pause, or not yet read by the loop
        (one read() that finds nothing when all is handed over)."""
        self._read()

    def close(self) -> None:
        fd, self._fd = self._fd, None
        self._keys.clear()
        self._watches.clear()
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _open(self) -> tuple[ctypes.CDLL | None, int | None]:
        if self._fd is not None or self._failed:
            return self._libc, self._fd
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except (OSError, AttributeError) as exc:
            fd, error = -1, str(exc)
        else:
            error = os.strerror(ctypes.get_errno()) if fd < 0 else ""
        if fd < 0:
            self._failed = True
            log.warning("inotify_unavailable", error=error)
            return None, None
        self._libc, self._fd = libc, fd
        asyncio.get_running_loop().add_reader(fd, self._wake)
        return libc, fd

    def _wake(self) -> None:
        """Something is queued: read it, then stop listening for a while."""
        fd = self._fd
        if fd is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(fd)
        self._paused = loop.call_later(self._pause, self._resume)
        self._read()

    def _resume(self) -> None:
        self._paused = None
        if self._fd is not None:
            # Level-triggered: what queued during the pause wakes us again at once.
            asyncio.get_running_loop().add_reader(self._fd, self._wake)

    def _read(self) -> None:
        fd = self._fd
        if fd is None:
            return
        batch = Batch()
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not data:
                break
            self._parse(data, batch)
        if batch:
            self._on_batch(batch)

    def _parse(self, data: bytes, batch: Batch) -> None:
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            offset = start + length
            if mask & IN_Q_OVERFLOW:
                # Events were lost: every directory may have gained, lost or changed files.
                batch.lost |= set(self._watches)
                batch.overflow = True
                continue
            key = self._keys.get(wd)
            if key is None:
                continue
            if mask & IN_IGNORED:
                # The kernel dropped the watch (directory removed, filesystem unmounted): its
                # changes are no longer seen until it is watched again.
                del self._keys[wd]
                if self._watches.get(key, (None,))[0] == wd:
                    del self._watches[key]
                batch.lost.add(key)
                continue
            if mask & (ENTRIES | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT):
                batch.entries.add(key)
            name = data[start:offset].rstrip(b"\0")
            if name:  # events about the directory itself carry none
                batch.files.setdefault(key, set()).add(os.fsdecode(name))
