"""Kernel notification of files created, deleted or renamed in pool directories (inotify).

Through libc with ctypes, on the asyncio loop (``add_reader``): no thread and no dependency.
Where inotify is unavailable (another libc, a kernel without it, the per-user watch limit
reached) ``watch`` says so and the pool keeps its timers only.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Callable

import structlog

log = structlog.get_logger()

IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# Volumes come and go, and the directory itself may go (then the pool fails its next refresh).
WATCH_MASK = (
    IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
)
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class DirectoryChanges:
    """Calls ``on_change(key)`` on the loop when an entry of a watched directory comes or goes."""

    def __init__(self, on_change: Callable[[str], None]) -> None:
        self._on_change = on_change
        self._fd: int | None = None
        self._libc: ctypes.CDLL | None = None
        self._keys: dict[int, str] = {}  # watch descriptor -> key
        self._watches: dict[str, tuple[int, str]] = {}  # key -> (watch descriptor, path)
        self._failed = False

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

    def close(self) -> None:
        fd, self._fd = self._fd, None
        self._keys.clear()
        self._watches.clear()
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
        asyncio.get_running_loop().add_reader(fd, self._read)
        return libc, fd

    def _read(self) -> None:
        fd = self._fd
        if fd is None:
            return
        changed: set[str] = set()
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
            changed |= self._parse(data)
        for key in sorted(changed):
            self._on_change(key)

    def _parse(self, data: bytes) -> set[str]:
        changed: set[str] = set()
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size + length
            if mask & IN_Q_OVERFLOW:
                changed |= set(self._watches)  # events were lost: every directory may have moved
            elif wd in self._keys:
                changed.add(self._keys[wd])
        return changed
