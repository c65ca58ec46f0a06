"""One connection's worker: one libvirt call at a time, and urgent calls first.

Every blocking libvirt call of a connection runs in its one worker thread, one at a time (see
``serialized``); ``Turn`` decides which queued call goes next.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def serialized(lock: threading.Lock, call: Callable[[], T]) -> T:
    """Run a blocking libvirt call while no other thread is inside libvirt on its connection.

    libvirt's RPC client before 10.3.0 (Debian 12 ships 9.0.0) has a stack use-after-free when
    several threads share a connection (CVE-2024-4418): a thread that leaves the client's I/O loop
    on an error, such as a keepalive timeout, leaves a GSource that points into its stack frame,
    and the thread the buck passes to later dispatches it. Measured: with calls from several
    workers in flight, a libvirtd frozen past the keepalive timeout and then thawed crashed the
    process with SIGSEGV every time. One call at a time per connection never passes the buck.
    """
    with lock:
        return call()


class Turn:
    """Whose turn it is on the connection's one worker: urgent calls (an event's re-read, a
    policy action) go before queued routine ones (volume scans, refreshes), so an event is not
    held up behind a scan of thousands of volumes. ``give_way`` is set while an urgent call
    waits: a running volume-scan job sees it between two volumes and ends early.
    """

    def __init__(self) -> None:
        self._busy = False
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._urgent_waiting = 0
        self.give_way = threading.Event()  # read by the worker thread

    async def acquire(self, *, urgent: bool) -> None:
        if not self._busy and not self._waiting:
            self._busy = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (0 if urgent else 1, next(self._order), turn))
        if urgent:
            self._urgent_waiting += 1
            self.give_way.set()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # it was our turn already: pass it on
            raise
        finally:
            if urgent:
                self._urgent_waiting -= 1
                if not self._urgent_waiting:
                    self.give_way.clear()

    def release(self) -> None:
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False
