"""Basic auth, the rate limit and the configured headers (poolwatch.web.auth): on a real server,
and BasicAuth and TokenBucket on their own with a counting check and a fake clock."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from poolwatch.web.auth import BasicAuth, TokenBucket, Verdict, parse_basic_authorization
from poolwatch.web.webconfig import RateLimit
from tests.unit.factories import FakeClock
from tests.unit.web_serving import (
    TLS,
    WebConfigDir,
    authorization,
    eventually,
    get,
    hashed,
    serve,
    trusting,
    users,
)

# --- serving: basic auth ----------------------------------------------------------------------


async def test_basic_auth_over_tls(web_dir: WebConfigDir) -> None:
    path = web_dir.write(TLS + users(alice="right password", bob="bobs password"))
    context = trusting(web_dir.pki)

    async with serve(path) as server:
        assert server.scheme == "https"
        ok = await get(server, "/api/v1/pools", context=context, auth=("alice", "right password"))
        wrong = await get(server, "/api/v1/pools", context=context, auth=("alice", "wrong"))
        unknown = await get(server, "/api/v1/pools", context=context, auth=("eve", "x"))
        bobs = await get(server, "/metrics", context=context, auth=("alice", "bobs password"))
        missing = await get(server, "/metrics", context=context)
        health = await get(server, "/healthz", context=context)
        # An unknown path reveals nothing without credentials, and is a 404 with them.
        lost = await get(server, "/nowhere", context=context)
        found_lost = await get(server, "/nowhere", context=context, auth=("bob", "bobs password"))

    assert ok.status == 200
    for answer in (wrong, unknown, bobs, missing, lost):
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="poolwatch"'
    assert health.status == 200
    assert found_lost.status == 404


async def test_basic_auth_without_tls(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(users(alice="pw"))

    async with serve(path) as server:
        assert server.scheme == "http"
        assert (await get(server, "/readyz", auth=("alice", "pw"))).status in (200, 503)
        assert (await get(server, "/readyz")).status == 401


async def test_unknown_user_costs_as_much_as_a_wrong_password(web_dir: WebConfigDir) -> None:
    # Real bcrypt at the cost htpasswd -B uses by default: a user name must not be guessable by
    # timing. Ten tries each, interleaved, compared by median; both must take about one bcrypt
    # check, so neither skips it.
    cost = 10
    path = web_dir.write(
        TLS + f"basic_auth_users:\n  alice: {hashed('right', cost)}\n  bob: {hashed('b', cost)}\n"
    )
    secret = bcrypt.hashpw(b"x", bcrypt.gensalt(cost))
    one_check = statistics.median(_timed(lambda: bcrypt.checkpw(b"y", secret)) for _ in range(3))

    wrong: list[float] = []
    unknown: list[float] = []
    async with serve(path) as server, aiohttp.ClientSession() as session:
        context = trusting(web_dir.pki)
        # The connection is set up once, so the figures are the requests' alone.
        await get(server, "/healthz", context=context, session=session)
        for attempt in range(10):
            for user, times in (("alice", wrong), ("mallory", unknown)):
                started = time.perf_counter()
                answer = await get(
                    server, "/metrics", context=context, session=session, auth=(user, f"g{attempt}")
                )
                times.append(time.perf_counter() - started)
                assert answer.status == 401

    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.5 < ratio < 2.0, (statistics.median(unknown), statistics.median(wrong))
    assert statistics.median(wrong) > 0.5 * one_check
    assert statistics.median(unknown) > 0.5 * one_check


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


async def test_rate_limit_spares_healthz(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("rate_limit:\n  interval: 1h\n  burst: 2\n")

    async with serve(path) as server:
        statuses = [(await get(server, "/readyz")).status for _ in range(3)]
        health = await get(server, "/healthz")
        limited = await get(server, "/metrics")

    assert statuses[2] == 429
    assert 429 not in statuses[:2]
    assert health.status == 200
    assert (limited.status, limited.headers["Retry-After"]) == (429, "1")


async def test_configured_headers_on_every_response(web_dir: WebConfigDir) -> None:
    path = web_dir.write(
        TLS
        + users(alice="pw")
        + "http_server_config:\n  headers:\n"
        + "    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=60\n"
    )
    context = trusting(web_dir.pki)

    async with serve(path) as server:
        answers = [
            await get(server, "/", context=context, auth=("alice", "pw")),
            await get(server, "/metrics", context=context),
            await get(server, "/healthz", context=context),
            await get(server, "/nowhere", context=context, auth=("alice", "pw")),
        ]

    assert [answer.status for answer in answers] == [200, 401, 200, 404]
    for answer in answers:
        assert answer.headers["X-Frame-Options"] == "deny"
        assert answer.headers["Strict-Transport-Security"] == "max-age=60"


# --- basic auth, without a server -------------------------------------------------------------


class CountingCheck:
    """Stands in for bcrypt.checkpw: counts calls, optionally waits for a go-ahead."""

    def __init__(self, *, block: bool = False) -> None:
        self.calls: list[bytes] = []
        self.running = 0
        self.most_running = 0
        self.go = threading.Event()
        if not block:
            self.go.set()
        self._lock = threading.Lock()

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        with self._lock:
            self.calls.append(hashed)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.go.wait(5)
        with self._lock:
            self.running -= 1
        return bcrypt.checkpw(password, hashed)


@pytest.fixture(scope="module")
def alice_hash() -> bytes:
    return hashed("secret", cost=5).encode()


async def test_successful_logins_are_cached_for_a_while(alice_hash: bytes) -> None:
    check = CountingCheck()
    clock = FakeClock(0.0)
    auth = BasicAuth({"alice": alice_hash}, check=check, cache_ttl=60.0, clock=clock)
    right = authorization("alice", "secret")
    try:
        assert await auth.check(right) is Verdict.ALLOWED
        assert await auth.check(right) is Verdict.ALLOWED
        assert len(check.calls) == 1

        clock.now += 61
        assert await auth.check(right) is Verdict.ALLOWED
        assert len(check.calls) == 2

        # Failures are never cached: each costs a full check.
        for _ in range(2):
            assert await auth.check(authorization("alice", "guess")) is Verdict.DENIED
        assert len(check.calls) == 4

        # A reload forgets every login.
        auth.update({"alice": alice_hash})
        assert await auth.check(right) is Verdict.ALLOWED
        assert len(check.calls) == 5
    finally:
        await auth.close()


async def test_unknown_users_are_checked_against_a_hash_of_the_users_cost(
    alice_hash: bytes,
) -> None:
    check = CountingCheck()
    auth = BasicAuth({"alice": alice_hash, "bob": hashed("b", cost=5).encode()}, check=check)
    try:
        assert await auth.check(authorization("mallory", "secret")) is Verdict.DENIED
        assert await auth.check(authorization("mallory", "secret")) is Verdict.DENIED
    finally:
        await auth.close()

    assert len(check.calls) == 2
    assert all(call.startswith(b"$2b$05$") for call in check.calls)


async def test_malformed_credentials_are_denied_without_a_check(alice_hash: bytes) -> None:
    check = CountingCheck()
    auth = BasicAuth({"alice": alice_hash}, check=check)
    try:
        for header in (None, "Bearer x", "Basic !!!", "Basic " + "YWxpY2U=", "Basic"):
            assert await auth.check(header) is Verdict.DENIED, header
        assert await auth.check(authorization("alice", "x" * 73)) is Verdict.DENIED
    finally:
        await auth.close()

    assert check.calls == []


def test_parse_basic_authorization() -> None:
    assert parse_basic_authorization(authorization("alice", "pa:ss")) == ("alice", b"pa:ss")
    assert parse_basic_authorization("basic  " + "YTpi") == ("a", b"b")
    assert parse_basic_authorization("Basic /w==") is None  # no colon
    user, _ = parse_basic_authorization("Basic " + "/zpi") or ("", b"")
    assert user == "\udcff"  # not UTF-8: matches no configured user


async def test_pending_checks_are_bounded(alice_hash: bytes) -> None:
    check = CountingCheck(block=True)
    auth = BasicAuth({"alice": alice_hash}, check=check, workers=2, max_pending=4)
    try:
        # Four distinct wrong passwords fill the queue; their clients then hang up.
        waiting = [
            asyncio.create_task(auth.check(authorization("alice", f"guess{n}"), f"10.0.0.{n}"))
            for n in range(4)
        ]
        await asyncio.sleep(0.05)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)

        # Hanging up does not free a slot before bcrypt is done: no unbounded queue.
        assert await auth.check(authorization("alice", "secret")) is Verdict.BUSY
        assert check.most_running == 2

        check.go.set()

        async def drained() -> bool:
            return await auth.check(authorization("alice", "secret")) is Verdict.ALLOWED

        await eventually(drained)
    finally:
        check.go.set()
        await auth.close()

    assert check.most_running == 2
    assert len(check.calls) == 5


async def test_one_address_cannot_take_the_queue_from_others(alice_hash: bytes) -> None:
    check = CountingCheck(block=True)
    auth = BasicAuth(
        {"alice": alice_hash}, check=check, workers=1, max_pending=4, max_pending_per_client=2
    )
    try:
        flood = [
            asyncio.create_task(auth.check(authorization("alice", f"guess{n}"), "192.0.2.66"))
            for n in range(2)
        ]
        await asyncio.sleep(0.05)
        # The flooding address's third guess is refused at once ...
        guess = authorization("alice", "guess3")
        assert await auth.check(guess, "192.0.2.66") is Verdict.BUSY
        # ... while the scraper's login still gets a check.
        login = asyncio.create_task(auth.check(authorization("alice", "secret"), "192.0.2.9"))
        check.go.set()
        assert await login is Verdict.ALLOWED
        assert await asyncio.gather(*flood) == [Verdict.DENIED] * 2
        # Finished checks give the address its share back.
        assert await auth.check(guess, "192.0.2.66") is Verdict.DENIED
    finally:
        check.go.set()
        await auth.close()


async def test_a_login_in_use_stays_cached_up_to_its_maximum_age(alice_hash: bytes) -> None:
    check = CountingCheck()
    clock = FakeClock(0.0)
    auth = BasicAuth(
        {"alice": alice_hash}, check=check, cache_ttl=10.0, cache_max_age=100.0, clock=clock
    )
    right = authorization("alice", "secret")
    try:
        # A scraper every 8 s, far beyond the 10 s of one cache lifetime: one check.
        for _ in range(12):
            assert await auth.check(right) is Verdict.ALLOWED
            clock.now += 8
        assert len(check.calls) == 1
        # At its maximum age (100 s) the login is verified again, once.
        for _ in range(3):
            assert await auth.check(right) is Verdict.ALLOWED
            clock.now += 8
        assert len(check.calls) == 2
        # Unused for longer than the TTL, it is forgotten.
        clock.now += 11
        assert await auth.check(right) is Verdict.ALLOWED
        assert len(check.calls) == 3
    finally:
        await auth.close()


async def test_identical_concurrent_checks_share_one(alice_hash: bytes) -> None:
    check = CountingCheck()
    auth = BasicAuth({"alice": alice_hash}, check=check)
    try:
        verdicts = await asyncio.gather(
            *(auth.check(authorization("alice", "secret")) for _ in range(10))
        )
    finally:
        await auth.close()

    assert verdicts == [Verdict.ALLOWED] * 10
    assert len(check.calls) == 1


def test_token_bucket() -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(RateLimit(interval=2.0, burst=2), clock=clock)

    assert [bucket.allow() for _ in range(3)] == [True, True, False]
    clock.now += 1.0
    assert bucket.allow() is False
    clock.now += 1.0
    assert [bucket.allow() for _ in range(2)] == [True, False]
