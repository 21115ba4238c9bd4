"""RedisStore on a real Redis: key layout, feeds, no trimming, TTLs, atomicity, outages."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from shared import codec
from shared.codec import to_fields
from shared.data_keys import DataKeys
from shared.events import PainLogged
from shared.keys import Keys, hash_tag, partition
from shared.redis_store import APPEND_LUA, RedisStore, connect, ping
from shared.settings import Settings
from shared.store import StoreUnavailable
from shared.streams import text
from tests.integration.events_factory import make_change, make_pain, make_started, neighbours
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["single", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """Every test here that touches Redis runs on one server and on a 3-master cluster."""
    return str(request.getfixturevalue("redis_url" if request.param == "single" else "cluster_url"))


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: str) -> int:
    """Redis Cluster's slot of a key (CRC16 of the hash tag, mod 16384)."""
    raw = key.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return _crc16(raw) % 16384


def test_crc16_matches_the_cluster_spec() -> None:
    """The test's slot function gives the cluster spec's reference values."""
    assert _crc16(b"123456789") == 0x31C3
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("foo") == 12182


@pytest.mark.parametrize("partitions", [1, 16, 128, 1024])
def test_every_key_of_a_user_shares_one_slot(partitions: int) -> None:
    """All keys the append script and reads touch for one user hash to one cluster slot."""
    keys = Keys(partitions)
    for user in ("u-1", "p-0001", "Z" * 64, "a_b-c"):
        names = [
            keys.history(user),
            keys.feed_of(user),
            keys.seen(user, "6f1d2f0e-4c1b-4e59-9a53-0d3c5b0e2a11"),
            keys.legacy_seen(user, "6f1d2f0e-4c1b-4e59-9a53-0d3c5b0e2a11"),
            keys.clinic(user),
            keys.enrolments(user),
            keys.rx(user),
            keys.rxfeed_of(user),
            keys.snapshot(user),
        ]
        assert len({key_slot(n) for n in names}) == 1, names
        assert all(keys.tag(keys.partition(user)) in n for n in names)


def test_key_names_follow_the_layout() -> None:
    """Keys are bt:{pNN}:..., partition is crc32 % K, tags widen past 100 partitions."""
    keys = Keys(16)
    part = partition("u-1", 16)
    tag = f"{{p{part:02d}}}"
    assert keys.history("u-1") == f"bt:{tag}:user:u-1"
    assert keys.feed(part) == f"bt:{tag}:feed"
    assert keys.rx("u-1") == f"bt:{tag}:rx:u-1"
    assert keys.rxfeed(part) == f"bt:{tag}:rxfeed"
    assert keys.snapshot("u-1") == f"bt:{tag}:snap:u-1"
    assert keys.seen("u-1", "e") == f"bt:{tag}:seen:u-1:e"
    assert keys.legacy_seen("u-1", "e") == f"bt:{tag}:seen:e"
    assert keys.clinic("u-1") == f"bt:{tag}:clinic:u-1"
    assert keys.enrolments("u-1") == f"bt:{tag}:enrolments"
    assert keys.dlq == "bt:dlq"
    assert hash_tag(3, 16) == "{p03}"
    assert hash_tag(3, 101) == "{p003}"
    assert hash_tag(3, 100) == "{p03}"
    assert len(Keys(16).feeds()) == 16


async def test_feed_entry_carries_pos_prev_and_the_same_fields(
    redis_store: RedisStore, redis: Redis
) -> None:
    """A feed entry has the history entry's fields, pos = its position, prev = the one before."""
    first = make_started(clinic_id="clinic-a")
    second = make_pain(3, 1)
    results = [await redis_store.append(first), await redis_store.append(second)]
    await redis_store.append(first)  # a duplicate writes no feed entry
    keys = redis_store.keys
    history = await redis.xrange(keys.history("u-1"))
    feed = await redis.xrange(keys.feed_of("u-1"))
    assert [h.decode() for h, _ in history] == [r.position for r in results]
    assert len(feed) == 2
    for (_, feed_fields), (hist_id, hist_fields), prev, event in zip(
        feed, history, ["0-0", results[0].position], [first, second], strict=True
    ):
        assert feed_fields.pop(b"prev").decode() == prev
        assert feed_fields.pop(b"pos") == hist_id
        assert feed_fields == hist_fields
        [opened] = await redis_data_keys(redis_store).open_all([feed_fields])
        assert codec.from_fields(opened) == event
        assert set(hist_fields) == {b"type", b"event_id", b"user_id", b"data", b"enc", b"dek"}


async def test_rxfeed_entry_carries_pos(redis_store: RedisStore, redis: Redis) -> None:
    """A PrescriptionChanged goes to the user's rx stream and the rxfeed with pos and prev."""
    change = make_change(1)
    result = await redis_store.append_change(change)
    [(_, fields)] = await redis.xrange(redis_store.keys.rxfeed_of("u-1"))
    assert fields.pop(b"pos").decode() == result.position
    assert fields.pop(b"prev") == b"0-0"
    [opened] = await redis_data_keys(redis_store).open_all([fields])
    assert codec.from_fields(opened) == change
    assert await redis.xlen(redis_store.keys.feed_of("u-1")) == 0


async def test_history_is_never_trimmed(redis_store: RedisStore, redis: Redis) -> None:
    """After 2,000 appends every entry is still in the history and the feed."""
    events = [make_pain(i % 11, i) for i in range(2000)]
    for start in range(0, 2000, 500):
        await redis_store.append_many(events[start : start + 500])
    info = await redis.xinfo_stream(redis_store.keys.history("u-1"))
    assert info["length"] == 2000
    assert info["entries-added"] == 2000
    assert await redis.xlen(redis_store.keys.feed_of("u-1")) == 2000
    history = await redis_store.history("u-1")
    assert [e for _, e in history] == events


async def test_dedupe_key_expires_after_the_configured_ttl(redis: Redis) -> None:
    """The dedupe key holds the position and expires after the settings' TTL."""
    ttl = Settings().dedupe_ttl_seconds
    store = RedisStore(redis, partitions=16, dedupe_ttl=ttl)
    event = make_pain()
    result = await store.append(event)
    seen = store.keys.seen("u-1", str(event.event_id))
    assert (await redis.get(seen)).decode() == result.position
    assert ttl - 5 <= await redis.ttl(seen) <= ttl
    assert await redis.ttl(store.keys.history("u-1")) == -1
    assert await redis.exists(store.keys.legacy_seen("u-1", str(event.event_id))) == 0


async def test_a_conflict_writes_nothing(redis_store: RedisStore, redis: Redis) -> None:
    """A reused event_id with another payload leaves the history, the feed, the dedupe key
    (value and TTL) and the clinic as they were."""
    keys, first = redis_store.keys, make_started(clinic_id="clinic-a")
    await redis_store.append(first)
    seen = keys.seen("u-1", str(first.event_id))

    async def state() -> list[object]:
        return [
            await redis.xrange(keys.history("u-1")),
            await redis.xrange(keys.feed_of("u-1")),
            await redis.get(seen),
            await redis.get(keys.clinic("u-1")),
            await redis.exists(keys.legacy_seen("u-1", str(first.event_id))),
        ]

    before = await state()
    await redis.expire(seen, 100)
    other = first.model_copy(update={"clinic_id": "clinic-b"})
    assert (await redis_store.append(other)).status == "conflict"
    assert (await redis_store.append_many([other]))[0].status == "conflict"
    assert await state() == before
    assert 0 < await redis.ttl(seen) <= 100


async def _store_as_before(redis: Redis, store: RedisStore, event: PainLogged) -> str:
    """Store ``event`` as versions before per-user dedupe did: history and feed entries and
    the partition's dedupe key ``bt:{pNN}:seen:<event_id>`` holding the position, with the TTL."""
    keys, user = store.keys, event.user_id
    fields: dict[Any, Any] = codec.to_fields(event)
    position = text(await redis.xadd(keys.history(user), fields))
    await redis.xadd(keys.feed_of(user), {"pos": position, "prev": "0-0", **fields})
    legacy = f"bt:{keys.tag(keys.partition(user))}:seen:{event.event_id}"
    await redis.set(legacy, position, ex=store.dedupe_ttl)
    return position


async def test_a_dedupe_key_written_before_still_dedupes_only_its_user(
    redis_store: RedisStore, redis: Redis
) -> None:
    """A partition-wide dedupe key written by an older version still answers its user's
    retry (duplicate; conflict for another payload) until it expires, and swallows no
    other user's event with that id."""
    event = make_pain(4)
    position = await _store_as_before(redis, redis_store, event)
    retry = await redis_store.append(event)
    assert (retry.status, retry.position) == ("duplicate", position)
    [changed] = await redis_store.append_many([event.model_copy(update={"score": 8})])
    assert (changed.status, changed.position) == ("conflict", position)
    [other] = neighbours("u-1")
    theirs = make_pain(6, event_id=event.event_id, user_id=other)
    assert (await redis_store.append(theirs)).status == "accepted"
    assert [e for _, e in await redis_store.history(other)] == [theirs]
    assert [e for _, e in await redis_store.history("u-1")] == [event]
    assert await redis.xlen(redis_store.keys.feed_of("u-1")) == 2  # event, theirs
    legacy = redis_store.keys.legacy_seen("u-1", str(event.event_id))
    assert await redis.get(legacy) == position.encode()  # read, never rewritten


async def test_a_dedupe_key_written_before_needs_its_event_at_that_position(
    redis_store: RedisStore, redis: Redis
) -> None:
    """Positions are per stream: another user's entry at the old key's position, carrying
    another event_id, does not make that key theirs."""
    event = make_pain(4)
    position = await _store_as_before(redis, redis_store, event)
    [other] = neighbours("u-1")
    earlier = make_pain(2, user_id=other)
    fields: dict[Any, Any] = codec.to_fields(earlier)
    await redis.xadd(redis_store.keys.history(other), fields, id=position)
    theirs = make_pain(6, event_id=event.event_id, user_id=other)
    result = await redis_store.append(theirs)
    assert result.status == "accepted"
    assert [e for _, e in await redis_store.history(other)] == [earlier, theirs]


async def test_an_older_encoding_of_the_same_event_is_a_duplicate(
    redis_store: RedisStore, redis: Redis
) -> None:
    """A retry meeting its event stored under an older schema version (other bytes, the same
    event once upcast) is a duplicate; another payload is still a conflict."""
    event = make_pain(4)
    fields: dict[Any, Any] = codec.to_fields(event)
    raw = orjson.loads(fields["data"])
    del raw["location"]
    fields["data"] = orjson.dumps(raw | {"schema_version": 1})
    assert codec.from_fields(fields) == event
    keys = redis_store.keys
    position = text(await redis.xadd(keys.history("u-1"), fields))
    await redis.set(keys.seen("u-1", str(event.event_id)), position, ex=60)
    again = await redis_store.append(event)
    assert (again.status, again.position) == ("duplicate", position)
    other = await redis_store.append(event.model_copy(update={"score": 5}))
    assert (other.status, other.position) == ("conflict", position)
    assert len(await redis_store.history("u-1")) == 1


async def test_wrong_type_feed_leaves_nothing_written(
    redis_store: RedisStore, redis: Redis
) -> None:
    """If the feed cannot take the entry, the script writes nothing (no history, no seen)."""
    keys = redis_store.keys
    await redis.set(keys.feed_of("u-1"), "not a stream")
    event = make_started(clinic_id="clinic-a")
    with pytest.raises(rx.ResponseError, match="WRONGTYPE"):
        await redis_store.append(event)
    assert await redis.exists(keys.history("u-1")) == 0
    assert await redis.exists(keys.seen("u-1", str(event.event_id))) == 0
    assert await redis.exists(keys.clinic("u-1")) == 0
    await redis.delete(keys.feed_of("u-1"))
    assert (await redis_store.append(event)).status == "accepted"


async def test_wrong_type_history_leaves_nothing_written(
    redis_store: RedisStore, redis: Redis
) -> None:
    """If the history key is not a stream, neither the feed nor the dedupe key is written."""
    keys = redis_store.keys
    await redis.hset(keys.history("u-1"), "x", "y")
    event = make_pain()
    with pytest.raises(rx.ResponseError, match="WRONGTYPE"):
        await redis_store.append_many([event])
    assert await redis.exists(keys.feed_of("u-1")) == 0
    assert await redis.exists(keys.seen("u-1", str(event.event_id))) == 0


async def test_script_rejects_bad_arguments_before_writing(redis: Redis) -> None:
    """A bad TTL, field count, version or argument list (of any item) is refused before any
    write; the same call with good arguments is accepted."""
    keys = [
        "bt:{p00}:seen:u:e",
        "bt:{p00}:seen:e",
        "bt:{p00}:user:u",
        "bt:{p00}:feed",
        "bt:{p00}:clinic:u",
        "bt:{p00}:erased:u",
    ]
    good = ["2", "a", "b", "", ""]
    for ttl, items in (
        ("0", [good]),
        ("x", [good]),
        ("60", [["1", "a", "", ""]]),  # an odd field count
        ("60", [["2", "a", "b", ""]]),  # no version argument
        ("60", [good, ["4", "a", "b", "", ""]]),  # the second item runs short
        ("60", [good, [*good, "extra"]]),  # arguments left over
    ):
        args = [ttl, *(arg for item in items for arg in item)]
        with pytest.raises(rx.ResponseError, match="backtrack append"):
            await redis.eval(APPEND_LUA, 6 * len(items), *keys * len(items), *args)
    with pytest.raises(rx.ResponseError, match="backtrack append"):
        await redis.eval(APPEND_LUA, 5, *keys[:5], "60", *good)  # not six keys per item
    assert await _key_count(redis) == 0
    [bad_version] = await redis.eval(APPEND_LUA, 6, *keys, "60", "2", "a", "b", "", "x")
    assert bad_version == [b"error", b"backtrack append: bad version"]
    assert await _key_count(redis) == 0
    [accepted] = await redis.eval(APPEND_LUA, 6, *keys, "60", *good)
    assert accepted[0] == b"accepted"
    await redis.hset("bt:{p00}:erased:u", "state", "started")
    [erased] = await redis.eval(APPEND_LUA, 6, *keys, "60", "2", "a", "c", "", "")
    assert erased == [b"erased", b""]
    assert await redis.xlen("bt:{p00}:user:u") == 1


async def test_a_change_stream_written_before_versions_were_fields_keeps_its_order(
    redis_store: RedisStore, redis: Redis
) -> None:
    """An rx entry without a version field is read from its JSON: next accepted, old ones not."""
    old = make_change(1)
    fields = codec.to_fields(old)
    del fields["version"]
    await redis.xadd(redis_store.keys.rx("u-1"), fields)  # type: ignore[arg-type]
    assert (await redis_store.append_change(make_change(1))).status == "duplicate"
    assert (await redis_store.append_change(make_change(2))).status == "accepted"
    assert [c.version for _, c in await redis_store.prescriptions("u-1")] == [1, 2]


async def test_a_batch_goes_as_one_script_call_per_partition(
    redis_store: RedisStore, redis: Redis
) -> None:
    """500 events of many users: a few EVALSHA calls, every event stored once, in order."""
    events = [make_pain(i % 11, i, user_id=f"u-{i % 40}") for i in range(500)]
    await redis_data_keys(redis_store).seal_many([to_fields(e) for e in events[:40]])
    await redis.config_resetstat()  # the users' data keys exist: their scripts ran
    results = await redis_store.append_many([*events, events[3]])
    assert [r.status for r in results] == ["accepted"] * 500 + ["duplicate"]
    assert results[-1].position == results[3].position
    stats = await redis.info("commandstats")
    partitions = {redis_store.keys.partition(e.user_id) for e in events}
    assert stats["cmdstat_evalsha"]["calls"] <= len(partitions) + 500 // 100
    for user in {e.user_id for e in events}:
        history = await redis_store.history(user)
        assert [e for _, e in history] == [e for e in events if e.user_id == user]


async def test_a_wrong_type_key_fails_only_its_own_item(
    redis_store: RedisStore, redis: Redis
) -> None:
    """In one call, the item whose history key is not a stream writes nothing; the others
    are stored, and the batch raises so the client retries (the stored answer duplicate)."""
    keys = redis_store.keys
    users = [f"u-{i}" for i in range(200) if keys.partition(f"u-{i}") == 0][:3]
    events = [make_pain(1, i, user_id=user) for i, user in enumerate(users)]
    await redis.hset(keys.history(users[1]), "x", "y")
    with pytest.raises(rx.ResponseError, match="WRONGTYPE"):
        await redis_store.append_many(events)
    assert await redis.exists(keys.seen(users[1], str(events[1].event_id))) == 0
    assert [len(await redis_store.history(u)) for u in (users[0], users[2])] == [1, 1]
    await redis.delete(keys.history(users[1]))
    retried = await redis_store.append_many(events)
    assert [r.status for r in retried] == ["duplicate", "accepted", "duplicate"]


async def _key_count(redis: Redis) -> int:
    """Keys in the whole database: on a cluster, summed over every master."""
    if isinstance(redis, RedisCluster):  # its DBSIZE asks one node unless told otherwise
        return int(await redis.dbsize(target_nodes=RedisCluster.PRIMARIES))
    return int(await redis.dbsize())


async def test_append_survives_a_script_flush(redis_store: RedisStore, redis: Redis) -> None:
    """After SCRIPT FLUSH (as after a restart) append and append_many reload the script."""
    await redis.script_flush()
    assert (await redis_store.append(make_pain())).status == "accepted"
    await redis.script_flush()
    results = await redis_store.append_many([make_pain(), make_pain()])
    assert [r.status for r in results] == ["accepted", "accepted"]


async def test_a_wrong_type_enrolment_stream_leaves_the_clinic_unchanged(
    redis_store: RedisStore, redis: Redis
) -> None:
    """If the enrolment record cannot be written, the user's clinic does not change either."""
    keys = redis_store.keys
    await redis_store.enrol("u-1", "clinic-a", "clinic:clinic-a")
    await redis.delete(keys.enrolments("u-1"))
    await redis.set(keys.enrolments("u-1"), "not a stream")
    with pytest.raises(rx.ResponseError, match="WRONGTYPE"):
        await redis_store.enrol("u-1", "clinic-b", "clinic:clinic-b")
    with pytest.raises(rx.ResponseError, match="WRONGTYPE"):
        await redis_store.unenrol("u-1", None, "operator")
    assert await redis_store.clinic_of("u-1") == "clinic-a"


async def test_the_enrolment_stream_is_never_trimmed(redis_store: RedisStore, redis: Redis) -> None:
    """Every enrolment of a partition stays on its stream, with who and when."""
    for i in range(300):
        await redis_store.enrol("u-1", f"clinic-{i % 3}", "operator")
    info = await redis.xinfo_stream(redis_store.keys.enrolments("u-1"))
    assert info["length"] == info["entries-added"] == 300
    assert len(await redis_store.enrolments("u-1")) == 300


@pytest.mark.fault
async def test_unavailable_when_killed_and_working_after_restart(
    own_redis_server: Callable[..., RedisServer],
) -> None:
    """A dead Redis raises StoreUnavailable quickly; after restart data and dedupe survive."""
    server = own_redis_server(appendfsync="always")
    client = connect(server.url)
    try:
        store = RedisStore(client, partitions=16)
        kept = make_pain()
        first = await store.append(kept)
        server.kill()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.append(make_pain())
        with pytest.raises(StoreUnavailable):
            await store.append_many([make_pain()])
        with pytest.raises(StoreUnavailable):
            await store.history("u-1")
        assert time.monotonic() - started < 5
        assert await ping(client) is False
        server.restart()
        assert await ping(client) is True
        again = await store.append(kept)
        assert (again.status, again.position) == ("duplicate", first.position)
        assert (await store.append(make_pain())).status == "accepted"
        assert len(await store.history("u-1")) == 2
    finally:
        await client.aclose()


def redis_data_keys(store: RedisStore) -> DataKeys:
    """The data keys a store seals with (the fixtures give it some)."""
    assert store.data_keys is not None
    return store.data_keys
