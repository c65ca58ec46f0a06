"""``pool.refresh()`` of a connection's running pools: without it libvirt never notices guests
writing into their images (its figures are those of the last refresh). The watcher runs it on a
timer, sooner for pools near a threshold, and at once for a pool a guest's failed write names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from poolwatch.model import PoolSnapshot
from poolwatch.source import PoolNotFound, SourceError, StorageSource

if TYPE_CHECKING:
    from poolwatch.config import PollConfig

# Pools near a threshold are refreshed at most this often (but never more often than polled).
URGENT_REFRESH_MIN = 30.0


def urgent_refresh_interval(poll: PollConfig) -> float:
    """Sooner than refresh_interval, but never more often than the info poll or 30 s."""
    interval = poll.refresh_interval
    return min(interval, max(poll.interval, URGENT_REFRESH_MIN)) if interval > 0 else 0


async def refresh_pools(
    source: StorageSource,
    pools: Iterable[PoolSnapshot],
    *,
    only: frozenset[str] | None,
    detached: Callable[[], bool],
    log: Any,
) -> None:
    """Refresh each running pool (of ``only``, if given), one at a time; raise SourceError
    naming those that failed, after trying them all."""
    if source.read_only:
        return
    failed = []
    for pool in list(pools):
        if detached():
            return
        if not pool.active or (only is not None and pool.name not in only):
            continue
        try:
            # One at a time: a refresh holds the pool's lock in libvirtd and can be slow
            # (rbd, iscsi); guests and operators share that daemon with us.
            await source.refresh_pool(pool.name)
        except PoolNotFound:
            continue
        except SourceError as exc:
            # A dir pool whose directory vanished fails here, and libvirt stops it.
            log.warning("pool_refresh_failed", pool=pool.name, error=str(exc))
            failed.append(pool.name)
    if failed:
        raise SourceError(f"refresh failed for {', '.join(failed)}", code=0)
