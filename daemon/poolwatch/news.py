"""What one connection's pool events said that its readings may not show yet.

Per pool: its last event, numbered, so that a poll begun before it never overwrites what the
event's re-read found; whether its next reading must ask if it is persistent and autostarts;
and, for a pool an event started or defined, the future that a scrape waits on until a reading
shows it (web/settle.py).
"""

from __future__ import annotations

import asyncio

from poolwatch.model import PoolEventKind


class PoolNews:
    def __init__(self) -> None:
        self._seq = 0
        self._last: dict[str, tuple[int, PoolEventKind]] = {}
        # A pool defined, or a flag set by a policy. Other events cannot change the flags
        # (autostart changes without an event: the info poll reads it every interval).
        self._flags_unknown: set[str] = set()
        self._awaited: dict[str, tuple[PoolEventKind, asyncio.Future[None]]] = {}

    @property
    def seq(self) -> int:
        """The number of the last event: a poll notes it when it begins."""
        return self._seq

    def heard(self, pool: str, kind: PoolEventKind) -> None:
        """An event; its re-read is asked for by the caller."""
        self._seq += 1
        self._last[pool] = (self._seq, kind)
        if kind is PoolEventKind.DEFINED:
            self._flags_unknown.add(pool)
        if kind in (PoolEventKind.STARTED, PoolEventKind.DEFINED):
            waiting = self._awaited.get(pool)
            future = asyncio.get_running_loop().create_future() if waiting is None else waiting[1]
            self._awaited[pool] = (kind, future)
        elif kind is PoolEventKind.UNDEFINED:
            self._flags_unknown.discard(pool)
            self.shown(pool)  # gone from the inventory at once
        elif kind is PoolEventKind.STOPPED:
            awaited = self._awaited.get(pool)
            if awaited is not None and awaited[0] is PoolEventKind.STARTED:
                self.shown(pool)  # the stop shows from its event: no start left to show

    def since(self, seq: int, pool: str) -> PoolEventKind | None:
        """The pool's last event if it came after event ``seq``, else None."""
        last = self._last.get(pool)
        return last[1] if last is not None and last[0] > seq else None

    def flags_unknown(self, pool: str) -> None:
        """The pool's next reading asks for its flags (a policy set one, or a reading that
        was to ask failed)."""
        self._flags_unknown.add(pool)

    def take_flags_unknown(self, pool: str) -> bool:
        """Whether the reading about to begin must ask for the flags; from now on the next
        need not."""
        unknown = pool in self._flags_unknown
        self._flags_unknown.discard(pool)
        return unknown

    def start_awaited(self, pool: str) -> bool:
        """Whether the pool's last event, a start, is news that no reading has shown yet."""
        awaited = self._awaited.get(pool)
        return awaited is not None and awaited[0] is PoolEventKind.STARTED

    def read(self, pool: str, *, active: bool) -> None:
        """A reading of the pool went into the inventory: it shows what the event said, though
        it may have begun before the event (a re-read still in flight), unless the event was a
        start and the reading finds the pool stopped."""
        awaited = self._awaited.get(pool)
        if awaited is not None and (awaited[0] is not PoolEventKind.STARTED or active):
            self.shown(pool)

    def shown(self, pool: str) -> None:
        """Nothing more to wait for: the news shows, or the pool's re-reads ended."""
        awaited = self._awaited.pop(pool, None)
        if awaited is not None and not awaited[1].done():
            awaited[1].set_result(None)

    def in_flight(self) -> list[asyncio.Future[None]]:
        return [future for _kind, future in self._awaited.values()]
