"""Partition leases against a real Redis: acquire, renew, expire, release, fair share."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from services.prescriber.feeds.consumer import GROUP, FeedConsumer
from services.prescriber.feeds.leases import Leases, fair_share, owner_key
from services.prescriber.feeds.ownership import Ownership
from services.prescriber.feeds.reader import FeedReader, block_ms_for
from services.prescriber.processing.processor import Processor
from shared.keys import Keys
from shared.redis_store import RedisStore
from shared.streams import ensure_groups

pytestmark = pytest.mark.anyio

K = 8


def _leases(redis: Redis, name: str, lease_ms: int = 5_000) -> Leases:
    return Leases(redis, Keys(K), name, lease_ms)


def _ownership(redis: Redis, name: str, lease_ms: int = 600) -> Ownership:
    keys = Keys(K)
    processor = Processor(RedisStore(redis, partitions=K))
    consumer = FeedConsumer(redis, processor, keys)
    reader = FeedReader(redis, keys, consumer, name, block_ms=block_ms_for(lease_ms))
    leases = Leases(redis, keys, name, lease_ms)
    return Ownership(leases, reader, keys, processor.evict, renew_interval=lease_ms / 4000)


def test_fair_share_is_the_ceiling_of_partitions_per_live_instance() -> None:
    """K partitions over N live instances: ceil(K / N) each, all K for a lone instance."""
    assert [fair_share(8, n) for n in (0, 1, 2, 3, 8, 9)] == [8, 8, 4, 3, 1, 1]


async def test_lease_key_carries_the_partition_hash_tag() -> None:
    """The lease of partition 7 lives in partition 7's cluster slot."""
    assert owner_key(Keys(16), 7) == "bt:{p07}:owner"


async def test_only_one_instance_acquires_a_partition(redis: Redis) -> None:
    """SET NX: the second instance is refused while the first holds the lease."""
    a, b = _leases(redis, "a"), _leases(redis, "b")
    assert await a.acquire(3)
    assert not await b.acquire(3)
    assert await a.owner(3) == "a"


async def test_renew_and_release_only_touch_the_callers_lease(redis: Redis) -> None:
    """B can neither renew nor release A's lease; A can do both."""
    a, b = _leases(redis, "a"), _leases(redis, "b")
    await a.acquire(1)
    assert not await b.renew(1)
    assert not await b.release(1)
    assert await a.renew(1)
    assert await a.release(1)
    assert await a.owner(1) is None
    assert await b.acquire(1)


async def test_a_lease_that_is_not_renewed_lapses_and_another_takes_it(redis: Redis) -> None:
    """An owner that stops renewing loses the partition after lease_ms (margins of 0.5 s)."""
    a, b = _leases(redis, "a", lease_ms=2000), _leases(redis, "b", lease_ms=2000)
    assert await a.acquire(2)
    await asyncio.sleep(1.0)
    assert await a.renew(2)  # renewal pushes the expiry from 2 s to 3 s
    await asyncio.sleep(1.5)  # past the first expiry, before the renewed one
    assert not await b.acquire(2)
    await asyncio.sleep(1.1)
    assert await b.acquire(2)
    assert not await a.renew(2)


async def test_heartbeat_counts_live_instances_and_forgets_silent_ones(redis: Redis) -> None:
    """Instances not seen for lease_ms drop out of the live count."""
    a, b = _leases(redis, "a", lease_ms=1000), _leases(redis, "b", lease_ms=1000)
    assert await a.heartbeat() == 1
    assert await b.heartbeat() == 2
    await asyncio.sleep(1.3)
    assert await b.heartbeat() == 1
    await b.leave()
    assert await a.heartbeat() == 1


async def _settle(owners: list[Ownership], rounds: int = 6) -> None:
    for _ in range(rounds):
        for owner in owners:
            await owner.tick()


async def test_three_instances_share_the_partitions_fairly(redis: Redis) -> None:
    """A lone instance takes all K; as two more join, each ends with at most ceil(K/3)."""
    await ensure_groups(redis, Keys(K).feeds(), GROUP)
    owners = [_ownership(redis, name) for name in ("i1", "i2", "i3")]
    try:
        await owners[0].tick()
        assert owners[0].owned() == list(range(K))
        await _settle(owners)
        counts = sorted(len(o.owned()) for o in owners)
        assert counts == [2, 3, 3]
        owned = [p for o in owners for p in o.owned()]
        assert sorted(owned) == list(range(K)), "every partition has exactly one owner"
        for p in range(K):
            holder = next(o for o in owners if p in o.owned())
            assert await holder.leases.owner(p) == holder.leases.instance
    finally:
        for owner in owners:
            for p in owner.owned():
                await owner.hand_back(p)


async def test_a_dead_instances_partitions_are_taken_over(redis: Redis) -> None:
    """When an instance stops renewing, the survivors take all its partitions."""
    await ensure_groups(redis, Keys(K).feeds(), GROUP)
    owners = [_ownership(redis, name, lease_ms=1_000) for name in ("i1", "i2", "i3")]
    await _settle(owners)
    dead, survivors = owners[0], owners[1:]
    orphaned = dead.owned()
    assert orphaned
    for reader in dead._readers.values():  # a kill -9: no release, no more renewals
        reader.task.cancel()
    try:
        deadline = asyncio.get_running_loop().time() + 10  # waits for a state: safe to be long
        while sorted(p for o in survivors for p in o.owned()) != list(range(K)):
            assert asyncio.get_running_loop().time() < deadline, "not taken over"
            await _settle(survivors, rounds=1)
            await asyncio.sleep(0.1)
        for p in orphaned:
            assert await redis.get(owner_key(Keys(K), p)) != b"i1"
    finally:
        for owner in survivors:
            for p in owner.owned():
                await owner.hand_back(p)


async def test_a_new_owner_takes_over_the_previous_owners_pending_entries(redis: Redis) -> None:
    """Entries left pending by a dead owner are claimed and acked at once on acquisition."""
    keys = Keys(K)
    await ensure_groups(redis, keys.feeds(), GROUP)
    feed = keys.feed(0)
    await redis.xadd(feed, {"junk": "1"})  # unreadable: dead-lettered and acked by the taker
    await redis.xreadgroup(GROUP, "dead", {feed: ">"}, 10)
    assert (await redis.xpending(feed, GROUP))["pending"] == 1
    owner = _ownership(redis, "taker")
    try:
        await owner.tick()
        for _ in range(50):
            if (await redis.xpending(feed, GROUP))["pending"] == 0:
                break
            await asyncio.sleep(0.05)
        assert (await redis.xpending(feed, GROUP))["pending"] == 0
        assert await redis.xlen(keys.dlq) == 1
    finally:
        for p in owner.owned():
            await owner.hand_back(p)
