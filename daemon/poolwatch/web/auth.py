"""Basic auth against the web config's bcrypt hashes, and the request rate limit.

bcrypt runs off the event loop, in a small thread pool of its own, with a bounded number of
checks queued or running, in total and per client address; beyond that a request gets 429 at
once, so a flood of bad logins costs at most `BCRYPT_WORKERS` cores and a fixed amount of
memory, and a flood from one address cannot take the queue from everyone else. Successful checks
are cached, keyed by an HMAC of user, stored hash and password, for as long as they keep being
used (sliding expiry, up to a maximum age): a scraper that logged in stays in while strangers
flood the server with wrong passwords. An unknown user costs a bcrypt check against a dummy hash
of the same cost as the users' own.

Nothing here logs or repeats a password or hash.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import concurrent.futures
import enum
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Mapping

import bcrypt

from poolwatch.web.webconfig import RateLimit

# bcrypt checks that run at once; each takes one core for ~50-250 ms at the usual costs. Two at
# most, and one core fewer than the machine has, so that a flood of logins leaves the event
# loop a core to answer scrapes with.
BCRYPT_WORKERS = max(1, min(2, (os.cpu_count() or 1) - 1))
# Checks queued or running at most; a request beyond this gets 429 without waiting. With two
# workers at cost 10 the last one in the queue waits about half a second.
MAX_PENDING_CHECKS = 16
# ... and of those, at most this many for one client address: a flood from one address (or a
# few) leaves room for everyone else's first login.
MAX_PENDING_PER_CLIENT = 2
# Successful logins remembered: each use extends a login by AUTH_CACHE_TTL, so a Prometheus
# server scraping every 15 s (or every minute) costs one bcrypt check an hour, which
# AUTH_CACHE_MAX_AGE asks for. A changed or removed password stops working at once on reload
# (which clears the cache; the web config file is re-read when it changes).
AUTH_CACHE_SIZE = 100
AUTH_CACHE_TTL = 120.0
AUTH_CACHE_MAX_AGE = 3600.0
# bcrypt only reads 72 bytes; longer passwords are refused rather than silently truncated.
MAX_PASSWORD_BYTES = 72


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    DENIED = "denied"
    BUSY = "busy"  # too many checks pending: try again shortly


def parse_basic_authorization(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from an `Authorization: Basic ...` header, or None."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    # surrogateescape: a user name that is not UTF-8 simply matches no configured user.
    return user.decode("utf-8", "surrogateescape"), password


def _cost(hashed: bytes) -> int:
    return int(hashed[4:6])


def _dummy_hash(users: Mapping[str, bytes]) -> bytes:
    """A hash no password matches, at the cost most users' hashes have, so checking an unknown
    user takes as long as a wrong password. bcrypt only needs its salt to be well-formed."""
    costs = collections.Counter(_cost(hashed) for hashed in users.values())
    cost = max(costs, key=lambda c: (costs[c], c)) if costs else 10
    return bcrypt.gensalt(cost) + b"." * 31


class BasicAuth:
    """Checks basic auth credentials against bcrypt hashes, off the event loop."""

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        check: Callable[[bytes, bytes], bool] = bcrypt.checkpw,
        workers: int = BCRYPT_WORKERS,
        max_pending: int = MAX_PENDING_CHECKS,
        max_pending_per_client: int = MAX_PENDING_PER_CLIENT,
        cache_size: int = AUTH_CACHE_SIZE,
        cache_ttl: float = AUTH_CACHE_TTL,
        cache_max_age: float = AUTH_CACHE_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._workers = workers
        self._max_pending = max_pending
        self._max_pending_per_client = max_pending_per_client
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl
        self._cache_max_age = cache_max_age
        self._clock = clock
        # Cache keys are HMACs under a key that lives only in this process, so the cache holds
        # nothing that a memory dump could turn into a fast password guess.
        self._secret = secrets.token_bytes(32)
        # key -> (expires, verified at), least recently used first
        self._cache: collections.OrderedDict[bytes, tuple[float, float]] = collections.OrderedDict()
        self._pending: dict[bytes, asyncio.Task[bool]] = {}
        self._pending_by_client: collections.Counter[str] = collections.Counter()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._slots = asyncio.Semaphore(workers)
        self._users: Mapping[str, bytes] = {}
        self._dummy = b""
        self.update(users)

    @property
    def enabled(self) -> bool:
        """Whether credentials are required at all (the file lists users)."""
        return bool(self._users)

    def update(self, users: Mapping[str, bytes]) -> None:
        """New users (on reload); forgets every cached login."""
        self._users = dict(users)
        self._dummy = _dummy_hash(self._users)
        self._cache.clear()

    async def check(self, authorization: str | None, client: str = "") -> Verdict:
        """Whether ``authorization`` names a user and the right password; ``client`` (the peer's
        address) decides whose share of the check queue a new bcrypt check takes."""
        credentials = parse_basic_authorization(authorization)
        if credentials is None:
            return Verdict.DENIED
        user, password = credentials
        if len(password) > MAX_PASSWORD_BYTES:
            return Verdict.DENIED
        stored = self._users.get(user)
        known = stored is not None
        hashed = stored if stored is not None else self._dummy
        key = self._cache_key(user, hashed, password)
        if known and self._cached(key):
            return Verdict.ALLOWED
        task = self._pending.get(key)
        if task is None:
            if (
                len(self._pending) >= self._max_pending
                or self._pending_by_client[client] >= self._max_pending_per_client
            ):
                return Verdict.BUSY
            # A task of its own, which the request only awaits: a client that hangs up does not
            # free the slot before bcrypt is done with it, so the bound holds.
            task = asyncio.get_running_loop().create_task(self._verify(password, hashed))
            self._pending[key] = task
            self._pending_by_client[client] += 1
            task.add_done_callback(lambda _: self._checked(key, client))
        matched = await asyncio.shield(task)
        if matched and known:
            self._remember(key)
            return Verdict.ALLOWED
        return Verdict.DENIED

    async def close(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _cache_key(self, user: str, hashed: bytes, password: bytes) -> bytes:
        message = b"\0".join(
            part.hex().encode("ascii")
            for part in (user.encode("utf-8", "surrogateescape"), hashed, password)
        )
        return hmac.digest(self._secret, message, hashlib.sha256)

    def _checked(self, key: bytes, client: str) -> None:
        self._pending.pop(key, None)
        self._pending_by_client[client] -= 1
        if self._pending_by_client[client] <= 0:
            del self._pending_by_client[client]

    def _cached(self, key: bytes) -> bool:
        entry = self._cache.get(key)
        if entry is None:
            return False
        expires, verified = entry
        now = self._clock()
        if expires <= now:
            del self._cache[key]
            return False
        # Sliding: each use extends the login, up to its maximum age.
        self._cache[key] = (min(now + self._cache_ttl, verified + self._cache_max_age), verified)
        self._cache.move_to_end(key)
        return True

    def _remember(self, key: bytes) -> None:
        now = self._clock()
        self._cache[key] = (now + min(self._cache_ttl, self._cache_max_age), now)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _verify(self, password: bytes, hashed: bytes) -> bool:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._workers, thread_name_prefix="poolwatch-bcrypt"
            )
        async with self._slots:
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._executor, self._check, password, hashed)
            except ValueError:
                return False


class TokenBucket:
    """exporter-toolkit's rate limit: one request per `interval` on average, `burst` at once."""

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._tokens = float(limit.burst)
        self._last = clock()

    def allow(self) -> bool:
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(float(self.limit.burst), self._tokens + elapsed / self.limit.interval)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
