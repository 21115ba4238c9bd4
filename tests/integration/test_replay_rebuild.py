"""Rebuilds on real Redis: exactly the live prescriptions, blue/green, resumable."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from services.prescriber import engine
from services.prescriber.arrivals import fold_history
from services.prescriber.feeds.consumer import GROUP
from services.replay import inflight, scan
from services.replay.rebuild import Rebuild
from shared.keys import Keys
from shared.redis_store import RedisStore
from shared.store import MemoryStore
from tests.integration.replay_fixtures import arrivals, raw_stream, run_live

pytestmark = pytest.mark.anyio


class Interrupted(Exception):  # noqa: N818 - stands for Ctrl-C
    """Stands in for Ctrl-C or a crash in the middle of a rebuild."""


async def _rx(store: RedisStore, users: list[str]) -> dict[str, Any]:
    """Each user's rx stream as stored: ids and fields, opened (each seal has its own nonce)."""
    assert store.data_keys is not None
    out: dict[str, Any] = {}
    for user in users:
        entries = await raw_stream(store.redis, store.keys.rx(user))
        opened = await store.data_keys.open_all([fields for _, fields in entries])
        out[user] = [(i, f) for (i, _), f in zip(entries, opened, strict=True)]
    return out


async def _rxfeeds(redis: Redis, keys: Keys) -> list[int]:
    return [await redis.xlen(feed) for feed in keys.rxfeeds()]


async def test_rebuild_gives_exactly_the_prescriptions_live_processing_gave(
    redis: Redis, redis_store: RedisStore
) -> None:
    """After live processing in batches, a rebuild writes the same rx streams, byte for byte
    once opened."""
    events = arrivals()
    await run_live(redis_store, events)
    keys = redis_store.keys
    users = await scan.user_ids(redis, keys)
    live, fed = await _rx(redis_store, users), await _rxfeeds(redis, keys)
    assert sum(map(len, live.values())) > 3 * len(users)

    job = Rebuild(redis, keys, "t1", data_keys=redis_store.data_keys)
    todo, resumed = await job.plan()
    report = await job.run(todo, resumed)
    assert (report.users, report.switched, report.changed, report.deferred) == (
        len(users),
        len(users),
        0,
        [],
    )
    assert await _rx(redis_store, users) == live
    assert await _rxfeeds(redis, keys) == fed  # nobody was notified
    for user in users:
        snap = await redis_store.load_snapshot(user)
        history = await redis_store.history(user)
        assert snap is not None
        assert snap.position == history[-1][0]
        assert engine.load_state(snap.data) == fold_history(user, [e for _, e in history]).state
        assert await redis.exists(keys.read_model("rx", user, "retired:t1"))


async def test_rebuild_restores_lost_read_models_and_live_carries_on(
    redis: Redis, redis_store: RedisStore
) -> None:
    """Deleted rx streams and snapshots come back with the same changes; live continues after."""
    events = arrivals()
    cut = len(events) * 3 // 4
    await run_live(redis_store, events[:cut])
    keys = redis_store.keys
    users = await scan.user_ids(redis, keys)
    live = {u: [c for _, c in await redis_store.prescriptions(u)] for u in users}
    for user in users:
        await redis.delete(keys.rx(user), keys.snapshot(user))

    job = Rebuild(redis, keys, "t2", data_keys=redis_store.data_keys)
    report = await job.run(*(await job.plan()))
    assert report.switched == len(users)
    assert {u: [c for _, c in await redis_store.prescriptions(u)] for u in users} == live

    await run_live(redis_store, events[cut:])  # a fresh processor loads the rebuilt snapshots
    memory = MemoryStore()
    await run_live(memory, events, chunk=1)
    for user in users:
        expected = [c.event_id for _, c in await memory.prescriptions(user)]
        assert [c.event_id for _, c in await redis_store.prescriptions(user)] == expected


async def test_live_output_does_not_depend_on_batching() -> None:
    """One event per batch, seven per batch and everything at once emit the same changes."""
    events = arrivals(patients=8, weeks=6)
    outputs = []
    for chunk in (1, 7, len(events)):
        store = MemoryStore()
        await run_live(store, events, chunk=chunk)
        users = sorted({e.user_id for e in events})
        outputs.append({u: [c for _, c in await store.prescriptions(u)] for u in users})
    assert outputs[0] == outputs[1] == outputs[2]


async def test_interrupted_rebuild_resumes_where_it_stopped(
    redis: Redis, redis_store: RedisStore
) -> None:
    """A rebuild stopped after its first group continues from there when rerun with its id."""
    events = arrivals()
    await run_live(redis_store, events)
    keys = redis_store.keys
    users = await scan.user_ids(redis, keys)
    live = await _rx(redis_store, users)
    for user in users:
        await redis.delete(keys.snapshot(user))

    def stop(_users: int, _events: int) -> None:
        raise Interrupted

    first = Rebuild(redis, keys, "t3", group=4, data_keys=redis_store.data_keys)
    todo, resumed = await first.plan()
    assert not resumed
    with pytest.raises(Interrupted):
        await first.run(todo, resumed, on_progress=stop)
    assert (await first.report()).users == 4

    again = Rebuild(redis, keys, "t3", group=4, data_keys=redis_store.data_keys)
    left, resumed = await again.plan()
    assert resumed
    assert left == todo[4:]
    report = await again.run(left, resumed)
    assert (report.users, report.switched) == (len(users), len(users))
    assert await _rx(redis_store, users) == live
    assert all([await redis.exists(keys.snapshot(u)) for u in users])


async def test_users_live_has_not_finished_are_deferred_then_switched(
    redis: Redis, redis_store: RedisStore
) -> None:
    """Feed entries not yet acknowledged by the prescriber defer a user until they are."""
    assert inflight.GROUP == GROUP
    events = arrivals(patients=3, weeks=3)
    await run_live(redis_store, events)
    keys = redis_store.keys
    user = events[0].user_id
    feed = keys.feed_of(user)
    await redis.xgroup_create(feed, GROUP, id="0")  # everything looks undelivered

    job = Rebuild(redis, keys, "t4", data_keys=redis_store.data_keys)
    report = await job.run([user])
    assert report.deferred == [user]
    assert report.switched == 0

    delivered: Any = await redis.xreadgroup(GROUP, "c1", {feed: ">"}, count=100_000)
    await redis.xack(feed, GROUP, *[i for i, _ in delivered[0][1]])
    report = await Rebuild(redis, keys, "t4", data_keys=redis_store.data_keys).run([])
    assert (report.deferred, report.switched) == ([], 1)
