"""The revocation watcher's view over a real Redis: jtis, subject cutoffs, expiry, failing shut."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import HTTPException
from redis.asyncio import Redis

from shared import http_auth
from shared.auth import LIFETIMES, InvalidToken, Principal, Verifier, issue, payload_of
from shared.keys import REVOCATIONS
from shared.redis_server import RedisServer
from shared.redis_store import connect
from shared.revocation_log import RevocationWatcher, revoke
from shared.revocations import Revocations, RevocationsStale

SECRET = "revocation-secret"
pytestmark = pytest.mark.anyio


@asynccontextmanager
async def watching(
    redis: Redis, stale_after: float = 4.0, retry_after: float = 0.1
) -> AsyncIterator[Verifier]:
    """A verifier whose revocations a watcher on ``redis`` keeps current (caught up on entry)."""
    view = Revocations(stale_after)
    watcher = RevocationWatcher(redis, view, block_ms=200, retry_after=retry_after)
    async with watcher.running(wait=5.0):
        assert watcher.caught_up.is_set()
        check = Verifier(SECRET, revocations=view)
        check.watcher = watcher  # type: ignore[attr-defined]
        yield check


async def until(done: Callable[[], Coroutine[Any, Any, bool]], seconds: float = 5.0) -> float:
    """Poll ``done`` until it holds; the seconds it took (the test fails past ``seconds``)."""
    started = time.monotonic()
    while not await done():
        assert time.monotonic() - started < seconds, "not reached in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def refused(check: Verifier, token: str) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def probe() -> bool:
        try:
            check(token)
        except InvalidToken:
            return True
        return False

    return probe


async def test_revocations_written_before_start_are_in_force_once_it_runs(redis: Redis) -> None:
    """On boot the watcher reads the stream from its start, before the process serves."""
    token = issue("device", "p-boot", SECRET)
    other = issue("device", "p-boot", SECRET)
    await revoke(redis, "jti", _jti(token), LIFETIMES)
    async with watching(redis) as check:
        with pytest.raises(InvalidToken, match="revoked"):
            check(token)
        assert check(other) == Principal("device", "p-boot")


async def test_a_remembered_token_is_refused_once_its_jti_is_revoked(redis: Redis) -> None:
    """A token the verifier already accepted (and remembers) is refused after its revocation."""
    token, other = issue("clinic", "c-mem", SECRET), issue("clinic", "c-mem", SECRET)
    async with watching(redis) as check:
        assert check(token) == check(other) == Principal("clinic", "c-mem")
        await revoke(redis, "jti", _jti(token), LIFETIMES)
        took = await until(refused(check, token))
        assert check(other) == Principal("clinic", "c-mem")
    print(f"jti revocation seen by the watcher after {took * 1000:.0f} ms")


async def test_a_subject_cutoff_revokes_tokens_issued_up_to_it_and_not_after(redis: Redis) -> None:
    """Tokens of the subject with iat <= at are revoked; later ones (even in the same second)
    and other roles' are not."""
    at = int(time.time()) + 0.5
    before = issue("device", "shared-id", SECRET, now=at - 60)
    same_second = issue("device", "shared-id", SECRET, now=at - 0.2)
    after = issue("device", "shared-id", SECRET, now=at + 0.2)
    clinic = issue("clinic", "shared-id", SECRET, now=at - 60)
    async with watching(redis) as check:
        await revoke(redis, "subject", "shared-id", LIFETIMES, role="device", now=at)
        await until(refused(check, before))
        with pytest.raises(InvalidToken, match="revoked"):
            check(same_second)
        assert check(after) == Principal("device", "shared-id")
        assert check(clinic) == Principal("clinic", "shared-id")
        await revoke(redis, "subject", "shared-id", LIFETIMES, now=at)
        await until(refused(check, clinic))
        assert check(after) == Principal("device", "shared-id")


async def test_records_expire_with_the_tokens_they_can_match(redis: Redis) -> None:
    """A write trims entries older than the longest lifetime; records past ``until`` never apply."""
    ancient = {"kind": "jti", "value": "ancient", "at": "1", "until": "2"}
    await redis.xadd(REVOCATIONS, ancient, "1-0")  # type: ignore[arg-type]
    fresh = await revoke(redis, "jti", "fresh-jti", LIFETIMES)
    assert fresh.until >= time.time() + LIFETIMES.longest
    assert [f[b"value"] for _, f in await redis.xrange(REVOCATIONS)] == [b"fresh-jti"]
    long_ago = time.time() - LIFETIMES.longest - 3600
    past = await revoke(redis, "jti", "past-jti", LIFETIMES, now=long_ago)
    assert past.until < time.time()
    view = Revocations(4.0)
    watcher = RevocationWatcher(redis, view, block_ms=200)
    assert await watcher.poll() == 2
    assert view.revoked_jtis() == {"fresh-jti"}
    view.prune(now=fresh.until - 1)
    assert view.revoked_jtis() == {"fresh-jti"}
    view.prune(now=fresh.until)
    assert view.revoked_jtis() == frozenset()


async def test_unreadable_records_are_skipped(redis: Redis) -> None:
    """An entry that is not a revocation is logged and skipped; the ones after it apply."""
    token = issue("device", "p-skip", SECRET)
    await redis.xadd(REVOCATIONS, {"kind": "everything", "value": "*"})
    await revoke(redis, "jti", _jti(token), LIFETIMES)
    async with watching(redis) as check:
        with pytest.raises(InvalidToken, match="revoked"):
            check(token)


async def test_the_view_fails_closed_while_redis_is_away(
    own_redis_server: Callable[..., RedisServer],
) -> None:
    """Redis gone past stale_after: every token is 503; back: tokens work (at once on catch_up)."""
    server = own_redis_server()
    redis = connect(server.url)
    token = issue("operator", None, SECRET)
    header = f"Bearer {token}"
    try:
        async with watching(redis, stale_after=0.6) as check:
            assert http_auth.authenticate(check, header) == Principal("operator", None)
            server.kill()
            await until(_answers(check, header, 503), seconds=10)
            server.restart()
            took = await until(_answers(check, header, 200), seconds=10)
            print(f"tokens accepted again {took * 1000:.0f} ms after Redis came back")
        async with watching(redis, stale_after=0.6, retry_after=60) as check:
            server.kill()
            await until(_answers(check, header, 503), seconds=10)
            await check.watcher.catch_up()  # type: ignore[attr-defined]
            assert await _answers(check, header, 503)()
            server.restart()
            await check.watcher.catch_up()  # type: ignore[attr-defined]
            assert http_auth.authenticate(check, header) == Principal("operator", None)
    finally:
        await redis.aclose()


def _answers(check: Verifier, header: str, status: int) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def probe() -> bool:
        try:
            http_auth.authenticate(check, header)
        except HTTPException as exc:
            answer, headers = exc.status_code, exc.headers
        else:
            answer, headers = 200, None
        assert answer != 503 or headers == {"Retry-After": "1"}
        return answer == status

    return probe


async def test_a_view_that_never_caught_up_refuses_everything() -> None:
    """Before its first complete read, the view trusts nothing."""
    check = Verifier(SECRET, revocations=Revocations(4.0))
    with pytest.raises(RevocationsStale):
        check(issue("operator", None, SECRET))


def _jti(token: str) -> str:
    jti = payload_of(token)["jti"]
    assert isinstance(jti, str)
    return jti
