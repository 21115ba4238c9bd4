"""The prescriber shell on real Redis: snapshots, refolds, reclaiming, dead letters."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from redis.asyncio import Redis

from services.prescriber import engine
from services.prescriber.consumer import GROUP, FeedConsumer
from services.prescriber.processor import Cursor, Processor
from services.prescriber.reclaimer import Reclaimer
from shared import cohort
from shared.events import Input
from shared.keys import Keys
from shared.redis_store import RedisStore
from shared.store import MemoryStore, Snapshot

pytestmark = pytest.mark.anyio


def _course(archetype: str, index: int = 0) -> list[Input]:
    """One simulated patient's events in arrival order."""
    people = cohort.patients(60, seed=3)
    person = [p for p in people if p.archetype == archetype][index]
    return [a.event for a in cohort.history(person, seed=3)]


async def _feed(store: Any, processor: Processor, events: list[Input], chunk: int) -> None:
    for start in range(0, len(events), chunk):
        await store.append_many(events[start : start + chunk])
        await processor.process_user(events[0].user_id)


def _ids(changes: list[Any]) -> list[tuple[str, int, str]]:
    return [(str(c.event_id), c.version, c.change) for _, c in changes]


async def test_restart_from_snapshot_gives_the_same_changes(redis_store: RedisStore) -> None:
    """A processor restarted mid-course from its snapshot emits what an unstopped one emits."""
    events = _course("improver")
    user = events[0].user_id
    half = len(events) // 2
    first = Processor(redis_store, snapshot_every=10)
    await _feed(redis_store, first, events[:half], chunk=7)
    await first.flush()
    assert await redis_store.load_snapshot(user) is not None
    await _feed(redis_store, Processor(redis_store, snapshot_every=10), events[half:], chunk=7)

    memory = MemoryStore()
    await _feed(memory, Processor(memory, snapshot_every=10), events, chunk=7)
    expected = _ids(await memory.prescriptions(user))
    assert len(expected) >= 3
    assert _ids(await redis_store.prescriptions(user)) == expected


async def test_late_events_converge_to_the_replay_of_all_events(redis_store: RedisStore) -> None:
    """Out-of-order arrivals trigger refolds whose final prescription equals a sorted replay."""
    events = _course("late_sync")
    assert any(b.occurred_at < a.occurred_at for a, b in itertools.pairwise(events))
    processor = Processor(redis_store, snapshot_every=25)
    await _feed(redis_store, processor, events, chunk=5)
    latest = await redis_store.latest_prescription(events[0].user_id)
    expected = engine.decide(engine.replay(events))
    assert latest is not None
    assert expected is not None
    assert (latest.phase, latest.exercises, latest.referral) == (
        expected.phase,
        expected.exercises,
        expected.referral,
    )


async def test_snapshot_of_other_rules_version_is_discarded(redis_store: RedisStore) -> None:
    """A snapshot written under other rules is ignored and the history is folded instead."""
    events = _course("improver")[:40]
    user = events[0].user_id
    await redis_store.append_many(events)
    stale = Snapshot(
        data=b"not a state",
        position="9999999999999-0",
        rules_version="0",
        state_version=engine.STATE_VERSION,
    )
    await redis_store.save_snapshot(user, stale)
    await Processor(redis_store).process_user(user)
    assert await redis_store.latest_prescription(user) is not None


async def _group(redis: Redis, keys: Keys) -> None:
    for feed in keys.feeds():
        await redis.xgroup_create(feed, GROUP, id="0", mkstream=True)


async def test_reclaimer_finishes_what_a_dead_consumer_left(redis: Redis) -> None:
    """Entries delivered to a consumer that died are claimed, processed and acknowledged."""
    keys = Keys(4)
    store = RedisStore(redis, partitions=4)
    await _group(redis, keys)
    events = _course("improver")[:20]
    await store.append_many(events)
    feed = keys.feed_of(events[0].user_id)
    await redis.xreadgroup(GROUP, "dead-consumer", {feed: ">"}, count=100)
    assert (await redis.xpending(feed, GROUP))["pending"] == 20

    consumer = FeedConsumer(redis, Processor(store), keys, max_deliveries=5)
    reclaimer = Reclaimer(redis, consumer, "survivor", min_idle_ms=0)
    assert await reclaimer.sweep(keys.partition(events[0].user_id)) == 20
    assert (await redis.xpending(feed, GROUP))["pending"] == 0
    assert await store.latest_prescription(events[0].user_id) is not None


class _Failing(Processor):
    """Fails for one user, as a bug or bad data would."""

    async def _apply(self, user_id: str, cursor: Cursor, entries: list[Any]) -> list[Any]:
        if user_id == "cursed":
            raise RuntimeError("boom")
        return await super()._apply(user_id, cursor, entries)


async def test_entry_failing_every_time_is_dead_lettered_and_partition_moves_on(
    redis: Redis,
) -> None:
    """After max_deliveries failures an entry goes to bt:dlq with its error; others still flow."""
    keys = Keys(1)
    store = RedisStore(redis, partitions=1)
    await _group(redis, keys)
    good = _course("improver")[:3]
    cursed = [e.model_copy(update={"user_id": "cursed"}) for e in _course("plateau")[:1]]
    await store.append_many([*cursed, *good])
    consumer = FeedConsumer(redis, _Failing(store), keys, max_deliveries=2)
    entries = await redis.xreadgroup(GROUP, "c1", {keys.feed(0): ">"}, count=100)
    await consumer.handle(0, entries[0][1])
    assert (await redis.xpending(keys.feed(0), GROUP))["pending"] == 1
    assert await store.latest_prescription(good[0].user_id) is not None

    reclaimer = Reclaimer(redis, consumer, "c1", min_idle_ms=0)
    for _ in range(3):
        await reclaimer.sweep(0)
    assert (await redis.xpending(keys.feed(0), GROUP))["pending"] == 0
    [(_, letter)] = await redis.xrange(keys.dlq)
    assert letter[b"error"].startswith(b"failed 3 deliveries")
    assert letter[b"f:user_id"] == b"cursed"
    assert letter[b"stream"] == keys.feed(0).encode()


async def test_feed_entry_without_user_is_dead_lettered_at_once(redis: Redis) -> None:
    """A garbage feed entry is parked in bt:dlq on first sight and acknowledged."""
    keys = Keys(1)
    await _group(redis, keys)
    await redis.xadd(keys.feed(0), {"junk": "1"})
    consumer = FeedConsumer(redis, Processor(RedisStore(redis, partitions=1)), keys)
    entries = await redis.xreadgroup(GROUP, "c1", {keys.feed(0): ">"}, count=10)
    await consumer.handle(0, entries[0][1])
    assert (await redis.xpending(keys.feed(0), GROUP))["pending"] == 0
    [(_, letter)] = await redis.xrange(keys.dlq)
    assert letter[b"error"] == b"feed entry has no user_id"
