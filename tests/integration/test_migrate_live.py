"""The encryption migration while writers keep appending to the same users: nothing lost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from services.replay import sealer
from services.replay.migrate import migrate_encrypt, stream_target
from services.replay.restream import Entry, Page, Restream, Target, Transform
from shared import codec
from shared.data_keys import DataKeys
from shared.events import Input
from shared.keys import Keys
from shared.redis_store import RedisStore
from tests.conftest import data_keys_for
from tests.integration.events_factory import make_change, make_pain, make_started

pytestmark = pytest.mark.anyio

PARTITIONS = 4


def _course(user: str, events: int) -> list[Input]:
    return [
        make_started(user_id=user),
        *(make_pain(i % 11, i, user_id=user) for i in range(1, events)),
    ]


async def _plaintext(redis: Redis, users: Sequence[str], events: int) -> dict[str, list[Input]]:
    """Each user's course appended in plaintext (as before encryption at rest)."""
    store = RedisStore(redis, PARTITIONS)
    courses = {user: _course(user, events) for user in users}
    for course in courses.values():
        await store.append_many(course)
    return courses


def _interrupting(inner: Transform, act: Any) -> Transform:
    """``inner``, after running ``act()`` once, on the first page it is given."""
    acted: list[bool] = []

    async def transform(batch: Sequence[tuple[Target, list[Entry]]]) -> list[Page]:
        if not acted:
            acted.append(True)
            await act()
        return await inner(batch)

    return transform


async def test_an_append_during_the_copy_is_caught_up_before_the_swap(redis: Redis) -> None:
    """An event appended to a history while it is copied is copied on and swapped in with the
    rest: the history holds every event, in order, under the ids it had, all sealed."""
    data_keys = data_keys_for(redis, PARTITIONS)
    live = RedisStore(redis, PARTITIONS, data_keys=data_keys)
    [course] = (await _plaintext(redis, ["u-1"], 30)).values()
    keys = Keys(PARTITIONS)
    ids = [i for i, _ in await redis.xrange(keys.history("u-1"))]
    late = make_pain(3, 99, user_id="u-1")

    async def append() -> None:
        await live.append(late)

    restream = Restream(redis, _interrupting(sealer.entries(data_keys), append), page=7)
    [outcome] = await restream.rewrite([stream_target(keys.history("u-1"))])
    assert (outcome.status, outcome.retries, outcome.sealed) == ("swapped", 1, 30)
    entries: Any = await redis.xrange(keys.history("u-1"))
    assert [i for i, _ in entries][:30] == ids
    assert all(fields[b"enc"] == b"1" for _, fields in entries)
    assert [e for _, e in await live.history("u-1")] == [*course, late]


async def test_a_history_changing_under_every_attempt_is_left_whole_for_a_rerun(
    redis: Redis,
) -> None:
    """Appended to during every copy, a history is given up after the attempts: left as it
    was with what was appended, its copy deleted, counted busy."""
    data_keys = data_keys_for(redis, PARTITIONS)
    live = RedisStore(redis, PARTITIONS, data_keys=data_keys)
    [course] = (await _plaintext(redis, ["u-3"], 20)).values()
    inner = sealer.entries(data_keys)
    late: list[Input] = []

    async def append_each_time(batch: Sequence[tuple[Target, list[Entry]]]) -> list[Page]:
        late.append(make_pain(2, 200 + len(late), user_id="u-3"))
        await live.append(late[-1])
        return await inner(batch)

    restream = Restream(redis, append_each_time, page=50, attempts=3)
    target = stream_target(Keys(PARTITIONS).history("u-3"))
    [outcome] = await restream.rewrite([target])
    assert (outcome.status, outcome.retries) == ("busy", 3)
    assert not await redis.exists(target.temp)
    assert [e for _, e in await live.history("u-3")] == [*course, *late]


async def test_a_prescription_stream_replaced_during_the_copy_is_copied_again(
    redis: Redis,
) -> None:
    """A prescription stream that changed under the copy (same length and last id, another
    entry inside, as a rebuild's switch could leave) fails the digest and is copied again."""
    data_keys = data_keys_for(redis, PARTITIONS)
    store = RedisStore(redis, PARTITIONS)
    changes = [make_change(v, user_id="u-2") for v in (1, 2, 3)]
    await store.append_changes(changes)
    keys = Keys(PARTITIONS)
    rx = keys.rx("u-2")
    entries: Any = await redis.xrange(rx)
    other = make_change(2, user_id="u-2", event_id=changes[1].event_id, phase="flare")

    async def replace() -> None:
        staged = f"{rx}:staged"
        for (entry_id, fields), change in zip(
            entries, [changes[0], other, changes[2]], strict=True
        ):
            await redis.xadd(staged, dict(fields) | {b"data": codec.dumps(change)}, id=entry_id)
        await redis.rename(staged, rx)

    restream = Restream(redis, _interrupting(sealer.entries(data_keys), replace), page=2)
    [outcome] = await restream.rewrite([stream_target(rx)])
    assert (outcome.status, outcome.retries) == ("swapped", 1)
    sealed = RedisStore(redis, PARTITIONS, data_keys=data_keys)
    assert [c for _, c in await sealed.prescriptions("u-2")] == [changes[0], other, changes[2]]


async def test_a_live_writer_loses_nothing_while_everyone_is_migrated(redis: Redis) -> None:
    """A writer appends to the very users being migrated for the whole run: every event is
    there afterwards, in the order it was appended, the old ones under their old ids, and
    once the writer stops a rerun leaves no history with a plaintext entry."""
    data_keys = data_keys_for(redis, PARTITIONS)
    users = [f"w-{i:02d}" for i in range(24)]
    courses = await _plaintext(redis, users, 60)
    keys = Keys(PARTITIONS)
    ids = {u: [i for i, _ in await redis.xrange(keys.history(u))] for u in users}
    live = RedisStore(redis, PARTITIONS, data_keys=_sealing(redis))
    appended: dict[str, list[Input]] = {u: [] for u in users}
    done = asyncio.Event()

    async def writer() -> None:
        step = 100
        while not done.is_set():
            for user in users:
                event = make_pain(step % 11, step, user_id=user)
                await live.append(event)
                appended[user].append(event)
            step += 1

    task = asyncio.create_task(writer())
    report = await migrate_encrypt(redis, keys, data_keys, group=4, page=8)
    done.set()
    await task
    assert report.retried > 0  # the writer did land inside copies
    assert sum(len(e) for e in appended.values()) > len(users)
    await migrate_encrypt(redis, keys, data_keys)
    sealed = RedisStore(redis, PARTITIONS, data_keys=data_keys)
    for user in users:
        entries: Any = await redis.xrange(keys.history(user))
        assert [i for i, _ in entries][:60] == ids[user]
        assert all(fields[b"enc"] == b"1" for _, fields in entries)
        events = [e for _, e in await sealed.history(user)]
        assert events == [*courses[user], *appended[user]]


def _sealing(redis: Redis) -> DataKeys:
    """The writer's own data keys (another process's cache), under the same master key."""
    return data_keys_for(redis, PARTITIONS)
