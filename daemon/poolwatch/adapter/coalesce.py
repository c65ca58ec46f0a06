"""Requests for one key each that arrive together, answered by one call for all of them.

A volume poll of 500 pools asks for 500 pools' volume names at once; one executor job (or a few:
see ``LibvirtSource.list_volume_names``) answers them all, instead of 500 hand-overs between
the event loop and the connection's worker, each of which costs more than its one RPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# keys -> per key, its value or the exception its caller gets; an exception raised instead
# fails every caller of the batch.
Run = Callable[[list[K]], Awaitable[dict[K, V | Exception]]]


class Coalesced(Generic[K, V]):
    def __init__(self, run: Run[K, V]) -> None:
        self._run = run
        self._wanted: dict[K, list[asyncio.Future[V]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V:
        """``key``'s value from the next batch: every ``get`` made before that batch starts
        (while an earlier one runs, or in the same turn of the event loop) joins it."""
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._wanted.setdefault(key, []).append(future)
        if self._task is None:
            self._task = asyncio.create_task(self._batches())
        return await future

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _batches(self) -> None:
        try:
            while self._wanted:
                wanted, self._wanted = self._wanted, {}
                try:
                    found = await self._run(list(wanted))
                except asyncio.CancelledError:
                    _cancel(wanted)
                    raise
                except Exception as exc:
                    for futures in wanted.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for key, futures in wanted.items():
                    value = found.get(key, LookupError(key))
                    for future in futures:
                        if future.done():
                            continue  # its caller was cancelled
                        if isinstance(value, Exception):
                            future.set_exception(value)
                        else:
                            future.set_result(value)
        finally:
            self._task = None
            _cancel(self._wanted)  # only when cancelled: otherwise nothing is left


def _cancel(wanted: dict[K, list[asyncio.Future[V]]]) -> None:
    for futures in wanted.values():
        for future in futures:
            future.cancel()
