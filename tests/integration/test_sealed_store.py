"""The event store with encryption at rest, on a real Redis: what it seals, opens and refuses."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from shared import codec, sealing
from shared.data_keys import DataKeys, KeyDestroyed
from shared.redis_store import RedisStore
from shared.sealing import Unreadable
from shared.store import Snapshot, UserErased
from tests.integration.events_factory import make_change, make_pain, make_started

pytestmark = pytest.mark.anyio


def _keys(store: RedisStore) -> DataKeys:
    assert store.data_keys is not None
    return store.data_keys


async def test_every_copy_the_store_writes_is_sealed(redis: Redis, redis_store: RedisStore) -> None:
    """History, feed, rx, rxfeed and snapshot hold ciphertext; the store reads them back."""
    event, change = make_pain(7, 1, user_id="s-1"), make_change(1, user_id="s-1")
    await redis_store.append(event)
    await redis_store.append_change(change)
    snapshot = Snapshot(b"state bytes", "1-0", "2", 3)
    await redis_store.save_snapshot("s-1", snapshot)
    k = redis_store.keys
    for key in (k.history("s-1"), k.feed_of("s-1"), k.rx("s-1"), k.rxfeed_of("s-1")):
        [(_, fields)] = await redis.xrange(key)
        assert fields[b"enc"] == b"1", key
        assert b'"score"' not in fields[b"data"], key
        assert b"phase" not in fields[b"data"], key
    stored: Any = await redis.hgetall(k.snapshot("s-1"))
    assert b"state bytes" not in stored[b"data"]
    assert [e for _, e in await redis_store.history("s-1")] == [event]
    assert await redis_store.latest_prescription("s-1") == change
    assert await redis_store.load_snapshot("s-1") == snapshot


async def test_a_snapshot_moved_to_another_user_does_not_open(
    redis: Redis, redis_store: RedisStore
) -> None:
    """A sealed snapshot is bound to its user, position and versions: copied, it reads as none."""
    await redis_store.append(make_started(user_id="s-2"))
    await redis_store.append(make_started(user_id="s-3"))
    await redis_store.save_snapshot("s-2", Snapshot(b"state", "5-0", "2", 3))
    k = redis_store.keys
    await redis.hset(k.snapshot("s-3"), mapping=await redis.hgetall(k.snapshot("s-2")))  # type: ignore[arg-type]
    assert await redis_store.load_snapshot("s-3") is None
    await redis.hset(k.snapshot("s-2"), "position", "6-0")
    assert await redis_store.load_snapshot("s-2") is None


async def test_an_erased_user_is_refused_and_nothing_is_written(
    redis: Redis, redis_store: RedisStore
) -> None:
    """After the key is destroyed, the user's items answer ``erased`` and write nothing (the
    others of the batch are stored); reads of what is left raise KeyDestroyed, and a batch
    read of many users skips the erased one."""
    await redis_store.append(make_pain(3, 1, user_id="s-4"))
    await redis_store.append(make_pain(3, 1, user_id="s-5"))
    await _keys(redis_store).destroy("s-4")
    before = await redis.xlen(redis_store.keys.history("s-4"))
    batch = [make_pain(4, 2, user_id="s-5"), make_pain(4, 2, user_id="s-4")]
    results = await redis_store.append_many(batch)
    assert [(r.status, r.position) for r in results][1] == ("erased", "")
    assert results[0].status == "accepted"
    assert await redis.xlen(redis_store.keys.history("s-4")) == before
    assert len(await redis_store.history("s-5")) == 2
    with pytest.raises(KeyDestroyed):
        await redis_store.history("s-4")
    erased, kept = await redis_store.histories([("s-4", "0-0"), ("s-5", "0-0")])
    assert erased == []
    assert len(kept) == 2


async def test_the_script_refuses_an_erased_user_whose_key_a_process_still_holds(
    redis: Redis, redis_store: RedisStore
) -> None:
    """Another process erased the user; this one still has the key cached, seals, and the
    append script itself refuses the item: no window in which a late event is stored."""
    await redis_store.append(make_pain(3, 1, user_id="s-9"))
    other = DataKeys(redis, redis_store.keys, _keys(redis_store).masters)
    await other.destroy("s-9")
    [late] = await redis_store.append_many([make_pain(5, 3, user_id="s-9")])
    assert late.status == "erased"
    assert await redis.xlen(redis_store.keys.history("s-9")) == 1
    [change] = await redis_store.append_changes([make_change(1, user_id="s-9")])
    assert change.status == "erased"
    assert not await redis.exists(redis_store.keys.rx("s-9"))
    await redis_store.save_snapshots([("s-9", Snapshot(b"state", "1-0", "2", 3))])
    assert not await redis.exists(redis_store.keys.snapshot("s-9"))


async def test_open_many_tells_erased_damaged_and_plaintext_apart(
    redis: Redis, redis_store: RedisStore
) -> None:
    data_keys = _keys(redis_store)
    kept, gone = make_pain(2, 1, user_id="s-6"), make_pain(2, 1, user_id="s-7")
    sealed_kept, sealed_gone = await data_keys.seal_many(
        [codec.to_fields(kept), codec.to_fields(gone)]
    )
    await data_keys.destroy("s-7")
    tampered = {**sealed_kept, "event_id": str(gone.event_id)}
    plain = codec.to_fields(kept)
    opened = await data_keys.open_many([sealed_kept, sealed_gone, tampered, plain])
    assert codec.from_fields(opened[0]) == kept  # type: ignore[arg-type]
    assert isinstance(opened[1], KeyDestroyed)
    assert isinstance(opened[2], Unreadable)
    assert opened[3] == plain
    no_user = {k: v for k, v in sealed_kept.items() if k != "user_id"}
    [missing] = await data_keys.open_many([no_user])
    assert isinstance(missing, Unreadable)


async def test_with_sealing_off_new_entries_are_plain_and_sealed_ones_still_open(
    redis: Redis, redis_store: RedisStore
) -> None:
    """``BACKTRACK_ENCRYPT_AT_REST=0`` (development, benchmarks) writes plaintext and reads both."""
    first, second = make_pain(2, 1, user_id="s-8"), make_pain(3, 2, user_id="s-8")
    await redis_store.append(first)
    plain = RedisStore(
        redis,
        16,
        data_keys=DataKeys(redis, redis_store.keys, _keys(redis_store).masters, seals=False),
    )
    await plain.append(second)
    entries: Any = await redis.xrange(redis_store.keys.history("s-8"))
    assert [sealing.is_sealed(f) for _, f in entries] == [True, False]
    assert [e for _, e in await plain.history("s-8")] == [first, second]
    await plain.save_snapshot("s-8", Snapshot(b"plain", "1-0", "2", 3))
    assert await redis_store.load_snapshot("s-8") == Snapshot(b"plain", "1-0", "2", 3)


async def test_an_erased_user_cannot_be_enrolled_even_racing_the_check(
    redis: Redis, redis_store: RedisStore
) -> None:
    """The enrol script reads the erasure record with its write: nothing is written."""
    await _keys(redis_store).destroy("s-10")
    with pytest.raises(UserErased):
        await redis_store.enrol("s-10", "clinic-a", by="clinic:clinic-a")
    assert await redis_store.clinic_of("s-10") is None
    assert await redis_store.enrolments("s-10") == []


async def test_open_datas_gives_a_users_plain_data_and_refuses_anothers(
    redis: Redis, redis_store: RedisStore
) -> None:
    """A replay's page: each entry's plain data in order; another user's entry is refused,
    and an erased user's page raises KeyDestroyed."""
    data_keys = _keys(redis_store)
    mine, theirs = make_pain(2, 1, user_id="s-11"), make_pain(3, 1, user_id="s-12")
    await redis_store.append_many([mine, theirs])
    raw: Any = await redis.xrange(redis_store.keys.history("s-11"))
    plain = codec.to_fields(make_pain(4, 2, user_id="s-11"))
    as_read = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in plain.items()}
    page = [raw[0][1], as_read]
    assert await data_keys.open_datas("s-11", page) == [codec.dumps(mine), as_read[b"data"]]
    [(_, other)] = await redis.xrange(redis_store.keys.history("s-12"))
    with pytest.raises(Unreadable):
        await data_keys.open_datas("s-11", [other])
    await data_keys.destroy("s-11")
    with pytest.raises(KeyDestroyed):
        await DataKeys(redis, redis_store.keys, data_keys.masters).open_datas("s-11", page)
