"""A deployment as it stood before encryption at rest: every copy of health data in plaintext.

``deployment`` writes, through the store with no data keys (as the older version did): a
small cohort processed live (histories, feeds, prescription streams, rx feeds,
snapshots); the consumer groups of every feed, which have acknowledged all but a few
entries, and events appended since that no group has read; a rebuilt read model; a
webhook queue; dead letters of both kinds (and one naming no patient) and a resolved
one; and one erased patient (their key destroyed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from services.channels.dispatcher import GROUP as WEBHOOK_GROUP
from services.channels.queues import Queues, queue_item, queue_key
from services.prescriber.entrypoints.log_channel import LOG_GROUP
from services.replay.deadletters import RESOLVED
from shared.data_keys import DataKeys
from shared.dead_letters import dead_letter
from shared.keys import PRESCRIBER_GROUP, Keys
from shared.redis_store import RedisStore
from shared.streams import ensure_groups, text
from tests.integration.events_factory import make_pain
from tests.integration.replay_fixtures import arrivals, run_live

PARTITIONS = 4
SUB = "sub-1"
GROUPS = {"feed": (PRESCRIBER_GROUP,), "rxfeed": (LOG_GROUP, WEBHOOK_GROUP)}


@dataclass
class Plain:
    """What ``deployment`` wrote that a test checks against."""

    users: list[str]
    erased: str
    #: users with prescription changes (not the erased one)
    changed: list[str] = field(default_factory=list)
    #: per feed: the ids some group has not acknowledged, or no group has read yet, and the
    #: entry at the lowest last delivered id when newer ones wait (all stay)
    kept: dict[str, set[bytes]] = field(default_factory=dict)
    queue: str = ""
    letters: int = 0


async def _read_all(redis: Redis, feed: str, group: str) -> list[bytes]:
    reply: Any = await redis.xreadgroup(group, "c-1", {feed: ">"}, count=1_000_000)
    return [bytes(i) for _, entries in reply for i, _ in entries]


async def _acknowledge(redis: Redis, keys: Keys, plain: Plain) -> None:
    """Every group reads its feeds; all acknowledged but a middle entry of each feed
    (the prescriber) and the last entry of each rx feed (the log channel)."""
    for feed in keys.feeds():
        ids = await _read_all(redis, feed, PRESCRIBER_GROUP)
        held = {ids[len(ids) // 2]} if ids else set()
        if len(ids) > 1:
            await redis.xack(feed, PRESCRIBER_GROUP, *[i for i in ids if i not in held])
        plain.kept[feed] = held
    for feed in keys.rxfeeds():
        ids = await _read_all(redis, feed, WEBHOOK_GROUP)
        if ids:
            await redis.xack(feed, WEBHOOK_GROUP, *ids)
        ids = await _read_all(redis, feed, LOG_GROUP)
        if len(ids) > 1:
            await redis.xack(feed, LOG_GROUP, *ids[:-1])
        plain.kept[feed] = set(ids[-1:])


async def _undelivered(store: RedisStore, plain: Plain) -> None:
    """Events appended after the groups read: nobody has them (the newest delivered entry of
    their feed stays too: the group's lag stays known)."""
    redis, keys = store.redis, store.keys
    waiting: set[str] = set()
    for user in plain.users[:2]:
        feed = keys.feed_of(user)
        if feed not in waiting:
            [(newest, _)] = await redis.xrevrange(feed, count=1)
            plain.kept[feed].add(bytes(newest))
            waiting.add(feed)
        await store.append(make_pain(5, 90, user_id=user))
        [(appended, _)] = await redis.xrevrange(feed, count=1)
        plain.kept[feed].add(bytes(appended))


async def _read_model(redis: Redis, keys: Keys, user: str) -> None:
    """A rebuilt read model (staged rx stream, retired snapshot) of ``user``, with TTLs."""
    staged = keys.read_model("rx", user, "staged:r1")
    for entry_id, fields in await redis.xrange(keys.rx(user)):
        await redis.xadd(staged, fields, id=entry_id)
    await redis.expire(staged, 3600)
    retired = keys.read_model("snap", user, "retired:r1")
    await redis.hset(retired, mapping=await redis.hgetall(keys.snapshot(user)))  # type: ignore[arg-type]
    await redis.expire(retired, 3600)


async def _queue(redis: Redis, keys: Keys, user: str) -> str:
    """``user``'s changes queued plaintext for one subscription, as the older dispatcher did."""
    queues = Queues(redis)
    for _, fields in await redis.xrange(keys.rxfeed_of(user)):
        if text(fields[b"user_id"]) == user:
            event_id = text(fields[b"event_id"])
            await queues.enqueue(SUB, user, event_id, queue_item(fields), int(time.time() * 1000))
    return queue_key(SUB, user)


async def _dead_letters(redis: Redis, keys: Keys, user: str) -> int:
    """A feed's letter, a webhook's letter, one naming no patient, and a resolved one."""
    [(entry_id, fields)] = await redis.xrange(keys.history(user), count=1)
    feed = keys.feed_of(user)
    await redis.xadd(keys.dlq, dead_letter(feed, entry_id, PRESCRIBER_GROUP, "boom", fields))
    [(change_id, change)] = await redis.xrange(keys.rx(user), count=1)
    original = {k: change[k] for k in (b"type", b"event_id", b"user_id")}
    original[b"data"] = queue_item(change)
    letter = dead_letter(queue_key(SUB, user), change_id, WEBHOOK_GROUP, "gave up", original)
    await redis.xadd(keys.dlq, letter | {"subscription": SUB})
    await redis.xadd(keys.dlq, dead_letter(feed, "1-1", PRESCRIBER_GROUP, "junk", {"x": "y"}))
    resolved = dead_letter(feed, entry_id, PRESCRIBER_GROUP, "boom", fields)
    await redis.xadd(RESOLVED, {"letter_id": "1-0", "action": "dropped", **resolved})
    return 3


async def deployment(redis: Redis, data_keys: DataKeys) -> Plain:
    """Write the plaintext deployment (module doc); ``data_keys`` erases one patient."""
    keys = Keys(PARTITIONS)
    await ensure_groups(redis, keys.feeds(), PRESCRIBER_GROUP)
    for group in GROUPS["rxfeed"]:
        await ensure_groups(redis, keys.rxfeeds(), group)
    store = RedisStore(redis, PARTITIONS)
    await run_live(store, arrivals(8, 5, weeks=4))
    users = sorted({text(k).split(":user:")[1] async for k in redis.scan_iter("bt:{p*}:user:*")})
    changed = [u for u in users if await redis.xlen(keys.rx(u))]
    erased = changed.pop()
    plain = Plain([u for u in users if u != erased], erased, changed)
    await _acknowledge(redis, keys, plain)
    await _undelivered(store, plain)
    await _read_model(redis, keys, changed[0])
    plain.queue = await _queue(redis, keys, changed[0])
    plain.letters = await _dead_letters(redis, keys, changed[1])
    await data_keys.destroy(erased)
    return plain
