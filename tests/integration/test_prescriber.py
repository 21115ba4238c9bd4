"""The prescriber shell on real Redis: snapshots, refolds, reclaiming, dead letters."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from redis.asyncio import Redis

from services.prescriber import engine
from services.prescriber.engine.rules import builtin
from services.prescriber.feeds.consumer import GROUP, FeedConsumer
from services.prescriber.feeds.reclaimer import Reclaimer
from services.prescriber.processing.cursors import Cursor
from services.prescriber.processing.processor import Processor
from shared import codec, cohort
from shared.events import Input
from shared.keys import Keys
from shared.redis_store import RedisStore
from shared.store import MemoryStore, Snapshot
from tests.conftest import data_keys_for
from tests.integration.events_factory import make_started

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


async def test_a_user_moves_to_the_new_rules_at_their_next_event(redis_store: RedisStore) -> None:
    """Folded under rule set 1, a user's next event refolds under 2; its change says why."""
    events = _course("improver")
    user = events[0].user_id
    old = Processor(redis_store, rules=builtin("1"), snapshot_every=10)
    await _feed(redis_store, old, events[:150], chunk=10)
    await old.flush()
    before = await redis_store.prescriptions(user)
    assert {c.rules_version for _, c in before} == {"1"}
    await _feed(redis_store, Processor(redis_store, snapshot_every=10), events[150:], chunk=10)
    after = [c for _, c in await redis_store.prescriptions(user)][len(before) :]
    assert after
    assert {c.rules_version for c in after} == {"2"}
    assert [r.code for r in after[0].reasons].count("rules_updated") == 1
    assert all("rules_updated" not in [r.code for r in c.reasons] for c in after[1:])
    assert [c.version for c in after] == list(range(len(before) + 1, len(before) + 1 + len(after)))


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

    async def _fold(self, user_id: str, cursor: Cursor, entries: list[Any]) -> Any:
        if user_id == "cursed":
            raise RuntimeError("boom")
        return await super()._fold(user_id, cursor, entries)


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


async def test_an_erased_users_entries_are_skipped_and_a_keyless_users_parked(
    redis: Redis,
) -> None:
    """Sealed entries whose data key is gone: acknowledged unprocessed when the user's
    erasure record exists; dead-lettered when it does not (a key lost is not an erasure)."""
    keys = Keys(1)
    await _group(redis, keys)
    store = RedisStore(redis, partitions=1, data_keys=data_keys_for(redis, 1))
    await store.append_many([make_started(user_id="gone"), make_started(user_id="lost")])
    assert store.data_keys is not None
    await store.data_keys.destroy("gone")
    await redis.delete(keys.data_key("lost"))
    fresh = data_keys_for(redis, 1)  # a prescriber process of its own: nothing cached
    consumer = FeedConsumer(redis, Processor(store), keys, data_keys=fresh)
    entries = await redis.xreadgroup(GROUP, "c1", {keys.feed(0): ">"}, count=10)
    await consumer.handle(0, entries[0][1])
    assert (await redis.xpending(keys.feed(0), GROUP))["pending"] == 0
    [(_, letter)] = await redis.xrange(keys.dlq)
    assert (letter[b"f:user_id"], letter[b"error"]) == (b"lost", b"no data key for the user")
    assert not await redis.exists(keys.rx("gone"))
    assert not await redis.exists(keys.snapshot("gone"))


async def test_one_users_damaged_entry_fails_that_user_alone(redis: Redis) -> None:
    """A history entry that does not open fails its user; the others of the batch go on."""
    store = RedisStore(redis, partitions=1, data_keys=data_keys_for(redis, 1))
    await store.append_many([make_started(user_id="sound"), make_started(user_id="damaged")])
    [(_, fields)] = await redis.xrange(Keys(1).history("damaged"))
    await redis.xadd(Keys(1).history("damaged"), {**fields, b"data": b"x" * 40})
    failed = await Processor(store).process_batch(["sound", "damaged"])
    assert set(failed) == {"damaged"}
    assert [c.version for _, c in await store.prescriptions("sound")] == [1]


class _Counting(MemoryStore):
    """Counts the writes a processor makes; the first ``fail`` change writes raise."""

    def __init__(self, fail: int = 0) -> None:
        super().__init__()
        self.fail = fail
        self.writes: list[str] = []

    async def append_change(self, change: Any) -> Any:
        self.writes.append("append_change")
        return await super().append_change(change)

    async def append_changes(self, changes: Any) -> Any:
        self.writes.append("append_changes")
        if self.fail:
            self.fail -= 1
            raise ConnectionError("store went away")
        return [await MemoryStore.append_change(self, c) for c in changes]

    async def save_snapshot(self, user_id: str, snapshot: Snapshot) -> None:
        self.writes.append("save_snapshot")
        await super().save_snapshot(user_id, snapshot)

    async def save_snapshots(self, snapshots: Any) -> None:
        self.writes.append("save_snapshots")
        await super().save_snapshots(snapshots)


async def test_a_batch_stores_its_changes_and_snapshots_in_one_write_each() -> None:
    """Many users' changes go out in one write, the snapshots due in one more."""
    store = _Counting()
    users = [_course("improver", i)[:12] for i in range(3)]
    await store.append_many([e for course in users for e in course])
    processor = Processor(store, snapshot_every=5)
    assert await processor.process_batch([c[0].user_id for c in users]) == {}
    assert store.writes == ["append_changes", "save_snapshots"]
    for course in users:
        assert await store.latest_prescription(course[0].user_id) is not None
        assert await store.load_snapshot(course[0].user_id) is not None


async def test_a_failed_write_moves_no_cursor_and_the_retry_emits_each_change_once() -> None:
    """When storing a batch's changes fails, every user fails; the retry folds them again."""
    store = _Counting(fail=1)
    users = [_course("improver", i)[:12] for i in range(2)]
    await store.append_many([e for course in users for e in course])
    processor = Processor(store)
    ids = [c[0].user_id for c in users]
    failed = await processor.process_batch(ids)
    assert set(failed) == set(ids)
    assert all(isinstance(e, ConnectionError) for e in failed.values())
    assert [await store.prescriptions(u) for u in ids] == [[], []]
    assert await processor.process_batch(ids) == {}
    once = MemoryStore()
    await once.append_many([e for course in users for e in course])
    await Processor(once).process_batch(ids)
    for user in ids:
        assert _ids(await store.prescriptions(user)) == _ids(await once.prescriptions(user))


class _Reads(RedisStore):
    """A RedisStore that records which histories are read, and how far."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, partitions=1)
        self.reads: list[list[tuple[str, str, str | None]]] = []

    async def histories(self, cursors: Any, until: Any = None) -> Any:
        ends = until or [None] * len(cursors)
        self.reads.append([(u, after, end) for (u, after), end in zip(cursors, ends, strict=True)])
        return await super().histories(cursors, until)


async def _handle(redis: Redis, keys: Keys, consumer: FeedConsumer, count: int) -> None:
    [(_, entries)] = await redis.xreadgroup(GROUP, "c1", {keys.feed(0): ">"}, count=count)
    await consumer.handle(0, entries)


async def _in_one_pass(events: list[Input]) -> list[tuple[str, int, str]]:
    """The changes one processor emits folding ``events`` all at once."""
    memory = MemoryStore()
    await memory.append_many(events)
    await Processor(memory).process_user(events[0].user_id)
    return _ids(await memory.prescriptions(events[0].user_id))


async def test_feed_entries_that_continue_the_cursor_are_folded_without_a_history_read(
    redis: Redis,
) -> None:
    """Each feed entry names the history entry before it: when that is where the
    user's state stands, the events are folded as the feed carried them."""
    keys = Keys(1)
    store = _Reads(redis)
    await _group(redis, keys)
    events = _course("improver")[:10]
    positions = [r.position for r in await store.append_many(events)]
    processor = Processor(store)
    consumer = FeedConsumer(redis, processor, keys)
    user = events[0].user_id
    for start, end in ((0, 4), (4, 10)):
        await _handle(redis, keys, consumer, end - start)
        assert (await processor.cursors.get(user)).position == positions[end - 1]
    assert store.reads == []
    assert (await redis.xpending(keys.feed(0), GROUP))["pending"] == 0
    assert _ids(await store.prescriptions(user)) == await _in_one_pass(events)


async def test_a_gap_before_the_batch_is_read_from_the_history_as_far_as_the_batch_reaches(
    redis: Redis,
) -> None:
    """History the feed never announced lies between the cursor and the batch: it is
    read from the log, up to the batch's last entry; the next batch continues."""
    keys = Keys(1)
    store = _Reads(redis)
    await _group(redis, keys)
    events = _course("improver")[:12]
    user = events[0].user_id
    for event in events[:3]:  # in the history, with no feed entries
        await redis.xadd(keys.history(user), codec.to_fields(event))
    positions = [r.position for r in await store.append_many(events[3:])]
    processor = Processor(store)
    consumer = FeedConsumer(redis, processor, keys)
    await _handle(redis, keys, consumer, 4)
    assert store.reads == [[(user, "0-0", positions[3])]]
    assert (await processor.cursors.get(user)).position == positions[3]
    await _handle(redis, keys, consumer, 5)
    assert len(store.reads) == 1
    assert (await processor.cursors.get(user)).position == positions[8]
    assert _ids(await store.prescriptions(user)) == await _in_one_pass(events)


async def test_feed_entries_that_name_no_previous_entry_are_read_from_the_history(
    redis: Redis,
) -> None:
    """Feed entries written without ``prev`` (by earlier versions) still fold correctly."""
    keys = Keys(1)
    store = _Reads(redis)
    await _group(redis, keys)
    events = _course("improver")[:8]
    user = events[0].user_id
    positions = []
    for event in events:
        fields = codec.to_fields(event)
        position = (await redis.xadd(keys.history(user), fields)).decode()
        await redis.xadd(keys.feed(0), {"pos": position, **fields})
        positions.append(position)
    processor = Processor(store)
    consumer = FeedConsumer(redis, processor, keys)
    await _handle(redis, keys, consumer, 3)
    await _handle(redis, keys, consumer, 5)
    assert store.reads == [[(user, "0-0", positions[2])], [(user, positions[2], positions[7])]]
    assert _ids(await store.prescriptions(user)) == await _in_one_pass(events)
