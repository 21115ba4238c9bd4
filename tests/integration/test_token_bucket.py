"""The token bucket script's arithmetic and the per-token buckets, against a real Redis."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from shared.auth import Principal
from shared.rate_limit import (
    Rate,
    RateLimited,
    RateLimits,
    TokenBuckets,
    bucket_key,
    take,
)
from shared.redis_store import connect
from shared.store import StoreUnavailable
from tests.redis_server import RedisServer
from tests.shipped_redis import USER, shipped

pytestmark = pytest.mark.anyio

KEY = "bt:rate:test:bucket"
TWO_PER_SECOND = Rate(per_second=2, burst=5)


async def test_a_fresh_bucket_allows_its_burst_then_refuses(redis: Redis) -> None:
    """A new bucket is full: five at once are taken, the sixth waits half a second."""
    first = await take(redis, KEY, TWO_PER_SECOND, 5, now_ms=10_000)
    assert (first.ok, first.taken, first.wait_ms, first.left) == (True, 5, 0, 0.0)
    refused = await take(redis, KEY, TWO_PER_SECOND, 1, now_ms=10_000)
    assert (refused.ok, refused.taken, refused.wait_ms, refused.left) == (False, 0, 500, 0.0)


async def test_tokens_refill_at_the_rate_up_to_the_burst(redis: Redis) -> None:
    """1.25 s after emptying, 2.5 tokens are back; after an hour, no more than the burst."""
    await take(redis, KEY, TWO_PER_SECOND, 5, now_ms=0)
    two = await take(redis, KEY, TWO_PER_SECOND, 2, now_ms=1_250)
    assert (two.ok, two.left) == (True, 0.5)
    short = await take(redis, KEY, TWO_PER_SECOND, 1, now_ms=1_250)
    assert (short.ok, short.wait_ms) == (False, 250)
    later = await take(redis, KEY, TWO_PER_SECOND, 0, now_ms=3_600_000)
    assert later.left == 5.0
    assert (await take(redis, KEY, TWO_PER_SECOND, 5, now_ms=3_600_000)).ok
    assert not (await take(redis, KEY, TWO_PER_SECOND, 1, now_ms=3_600_000)).ok


async def test_a_refused_request_takes_nothing_and_says_when(redis: Redis) -> None:
    """Four asked of three: refused, 500 ms to wait, the three still there for a smaller ask."""
    await take(redis, KEY, TWO_PER_SECOND, 2, now_ms=0)
    refused = await take(redis, KEY, TWO_PER_SECOND, 4, now_ms=0)
    assert (refused.ok, refused.taken, refused.wait_ms, refused.left) == (False, 0, 500, 3.0)
    assert (await take(redis, KEY, TWO_PER_SECOND, 3, now_ms=0)).ok


async def test_buckets_expire_when_full_again(redis: Redis) -> None:
    """The key lives as long as the bucket takes to refill; a full bucket is not stored."""
    await take(redis, KEY, TWO_PER_SECOND, 3, now_ms=0)
    ttl = await redis.pttl(KEY)
    assert 1_400 < ttl <= 1_500  # three tokens at two per second
    await redis.delete(KEY)
    assert (await take(redis, KEY, TWO_PER_SECOND, 0)).ok
    assert not await redis.exists(KEY)


async def test_without_a_time_the_server_clock_counts(redis: Redis) -> None:
    """Called as the services call it (Redis's TIME), a slow bucket refuses its third token."""
    slow = Rate(per_second=0.001, burst=2)
    assert (await take(redis, KEY, slow, 2)).ok
    refused = await take(redis, KEY, slow, 1)
    assert not refused.ok
    assert 999_000 <= refused.wait_ms <= 1_000_000


async def test_tokens_taken_ahead_are_whole_and_only_what_is_there(redis: Redis) -> None:
    """Two asked with three ahead: five of ten taken; of three, all three; of one, none."""
    ten = Rate(per_second=1, burst=10)
    assert (await take(redis, KEY, ten, 2, ahead=3, now_ms=0)).taken == 5
    await take(redis, KEY, ten, 2, now_ms=0)
    three = await take(redis, KEY, ten, 2, ahead=3, now_ms=0)
    assert (three.taken, three.left) == (3, 0.0)
    none = await take(redis, KEY, ten, 2, ahead=3, now_ms=1_000)
    assert (none.ok, none.taken, none.left) == (False, 0, 1.0)


def _device(jti: str) -> Principal:
    return Principal("device", "p-1", jti)


async def test_retry_after_is_whole_seconds_rounded_up(redis: Redis) -> None:
    """Ten asked of a bucket holding three, refilling two a second: Retry-After 4 (3.5 s)."""
    buckets = TokenBuckets(redis, "ingest", {"device": Rate(per_second=2, burst=10)})
    await buckets.take(_device("a"), 7)
    with pytest.raises(RateLimited) as refused:
        await buckets.take(_device("a"), 10)
    assert refused.value.retry_after == 4
    await buckets.take(_device("b"), 10)  # another token, another bucket


async def test_processes_share_a_bucket(redis: Redis) -> None:
    """Two processes' buckets for one token count together."""
    rates = {"device": Rate(per_second=0.01, burst=4)}
    one, other = TokenBuckets(redis, "api", rates), TokenBuckets(redis, "api", rates)
    await one.take(_device("shared"), 3)
    with pytest.raises(RateLimited):
        await other.take(_device("shared"), 2)
    await other.take(_device("shared"), 1)


async def _evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_known_empty_bucket_refuses_without_asking_redis(redis: Redis) -> None:
    """Once Redis said the bucket is short, refusals come from memory until it could refill."""
    buckets = TokenBuckets(redis, "ingest", {"device": Rate(per_second=0.01, burst=3)})
    await buckets.take(_device("f"), 3)
    calls = await _evalsha_calls(redis)
    for _ in range(50):
        with pytest.raises(RateLimited) as refused:
            await buckets.take(_device("f"), 1)
        assert 99 <= refused.value.retry_after <= 100
    assert await _evalsha_calls(redis) == calls
    assert buckets.refuses(_device("f")) is not None
    assert buckets.refuses(_device("other")) is None


async def test_a_process_spends_what_it_took_ahead_without_asking_redis(redis: Redis) -> None:
    """At 100 a second with 50 ms ahead, one call takes 6 and the next five ask nothing."""
    buckets = TokenBuckets(
        redis, "ingest", {"operator": Rate(per_second=100, burst=1_000)}, ahead_seconds=0.05
    )
    operator = Principal("operator", None, "op")
    await buckets.take(operator)
    calls = await _evalsha_calls(redis)
    for _ in range(5):
        await buckets.take(operator)
    assert await _evalsha_calls(redis) == calls
    await buckets.take(operator)
    assert await _evalsha_calls(redis) == calls + 1


async def test_a_cost_above_the_burst_is_a_programming_error(redis: Redis) -> None:
    """A request that no bucket could ever hold is refused loudly, not as a 429 forever."""
    buckets = TokenBuckets(redis, "ingest", {"device": Rate(per_second=1, burst=3)})
    with pytest.raises(ValueError, match="exceeds"):
        await buckets.take(_device("x"), 4)


async def test_redis_down_is_store_unavailable(
    own_redis_server: Callable[..., RedisServer],
) -> None:
    """With Redis gone, taking raises StoreUnavailable (the services answer 503), not a pass."""
    server = own_redis_server()
    client = connect(server.url)
    try:
        buckets = TokenBuckets(client, "ingest", RateLimits().ingest())
        await buckets.take(_device("d"))
        server.stop()
        with pytest.raises(StoreUnavailable):
            await buckets.take(_device("d2"))
    finally:
        await client.aclose()


async def test_buckets_are_per_token_and_scope() -> None:
    """Keys name the scope and the token's jti; a jti-less token its role and subject."""
    assert bucket_key("ingest", _device("j1")) == "bt:rate:ingest:j1"
    assert bucket_key("api", Principal("operator", None)) == "bt:rate:api:operator.-"


async def test_the_shipped_redis_user_may_run_the_limits(tmp_path: Path) -> None:
    """Logged in as the services' ACL user of deploy/redis, buckets and stream slots work."""
    from services.channels.slots import StreamSlots  # noqa: PLC0415 - the API's other counter

    password = secrets.token_hex(16)
    with shipped("everysec", tmp_path, password) as port:
        client = connect(f"redis://{USER}:{password}@127.0.0.1:{port}/0")
        try:
            buckets = TokenBuckets(client, "api", {"device": Rate(per_second=1, burst=1)})
            await buckets.take(_device("acl"))
            with pytest.raises(RateLimited):
                await buckets.take(_device("acl"))
            slots = StreamSlots(client, lease_seconds=30)
            slot = await slots.take("clinic:acl", 1)
            assert slot is not None
            assert await slots.take("clinic:acl", 1) is None
            await slot.release()
        finally:
            await client.aclose()
