"""``migrate_encrypt`` on a real Redis: a plaintext deployment sealed in place, ids kept."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from services.channels.subscriptions import SUBS, SubscriptionCreated, SubscriptionLog
from services.channels.webhooks import new_secret
from services.replay.deadletters import RESOLVED
from services.replay.migrate import Report, migrate_encrypt
from services.replay.stream_copies import TEMP_PATTERNS
from shared import sealing
from shared.data_keys import DataKeys
from shared.keys import Keys
from shared.redis_store import RedisStore, snapshot_envelope
from tests.conftest import data_keys_for
from tests.integration.plaintext_fixtures import GROUPS, PARTITIONS, Plain, deployment
from tests.integration.replay_fixtures import keyspace_digest, raw_stream

pytestmark = pytest.mark.anyio


async def _streams(redis: Redis) -> dict[bytes, list[tuple[bytes, dict[bytes, bytes]]]]:
    """Every stream of users and read models, as stored."""
    found: dict[bytes, Any] = {}
    for pattern in ("bt:{p*}:user:*", "bt:{p*}:rx:*"):
        async for key in redis.scan_iter(match=pattern):
            found[bytes(key)] = await raw_stream(redis, key.decode())
    return found


async def _reads(store: RedisStore, users: list[str]) -> dict[str, Any]:
    return {
        user: (
            await store.history(user),
            await store.prescriptions(user),
            await store.load_snapshot(user),
        )
        for user in users
    }


async def _temporaries(redis: Redis) -> list[bytes]:
    return [k for pattern in TEMP_PATTERNS async for k in redis.scan_iter(match=pattern)]


@pytest.fixture
async def plain(redis: Redis) -> Plain:
    return await deployment(redis, data_keys_for(redis, PARTITIONS))


@pytest.fixture
def data_keys(redis: Redis) -> DataKeys:
    return data_keys_for(redis, PARTITIONS)


async def _migrate(redis: Redis, data_keys: DataKeys) -> Report:
    return await migrate_encrypt(redis, Keys(PARTITIONS), data_keys, required_groups=GROUPS)


async def test_every_stream_is_sealed_under_the_same_ids_and_reads_the_same(
    redis: Redis, plain: Plain, data_keys: DataKeys
) -> None:
    """Histories, prescription streams and the rebuilt read model come out sealed, entry for
    entry under the same ids, and the store reads exactly what it read before; the erased
    patient's streams are left as they were."""
    before = await _streams(redis)
    reads = await _reads(RedisStore(redis, PARTITIONS), plain.users)
    report = await _migrate(redis, data_keys)
    after = await _streams(redis)
    assert after.keys() == before.keys()
    keys = Keys(PARTITIONS)
    erased = {keys.history(plain.erased).encode(), keys.rx(plain.erased).encode()}
    for key, entries in after.items():
        assert [i for i, _ in entries] == [i for i, _ in before[key]], key
        if key in erased:
            assert entries == before[key]
            continue
        assert all(fields[b"enc"] == b"1" for _, fields in entries), key
        opened = await data_keys.open_all([fields for _, fields in entries])
        assert opened == [fields for _, fields in before[key]], key
    sealed = RedisStore(redis, PARTITIONS, data_keys=data_keys)
    assert await _reads(sealed, plain.users) == reads
    history = sum(len(v) for k, v in before.items() if b":user:" in k and k not in erased)
    assert report.sealed["history"] == history
    assert report.skipped == {plain.erased}
    assert report.users == len(plain.users) + 1
    assert await _temporaries(redis) == []


async def test_snapshots_queues_and_dead_letters_are_sealed_in_place(
    redis: Redis, plain: Plain, data_keys: DataKeys
) -> None:
    """Snapshots (a read model's keeps its TTL), every queue item but the head, and every dead
    letter naming a patient come out sealed and open to what they held."""
    keys = Keys(PARTITIONS)
    first = plain.changed[0]
    retired = keys.read_model("snap", first, "retired:r1")
    snapshot: Any = await redis.hgetall(retired)
    items: list[bytes] = await redis.lrange(plain.queue, 0, -1)
    letters = await raw_stream(redis, keys.dlq)
    resolved = await raw_stream(redis, RESOLVED)
    report = await _migrate(redis, data_keys)

    now: Any = await redis.hgetall(retired)
    assert now[b"enc"] == b"1"
    assert 0 < await redis.ttl(retired) <= 3600
    [opened] = await data_keys.open_all(
        [snapshot_envelope(first, {k.decode(): v for k, v in now.items()})]
    )
    assert opened["data"] == snapshot[b"data"]

    queued: list[bytes] = await redis.lrange(plain.queue, 0, -1)
    assert queued[0] == items[0]  # the head may be in flight: never rewritten
    assert all(sealing.is_packed(item) for item in queued[1:])
    bodies = await data_keys.open_all([sealing.unpack(item) for item in queued[1:]])
    assert [body["data"] for body in bodies] == items[1:]
    assert report.left["queue items"] == 1
    assert report.sealed["queue items"] == len(items) - 1

    sealed_letters = await raw_stream(redis, keys.dlq)
    assert [i for i, _ in sealed_letters] == [i for i, _ in letters]
    feed_letter, webhook_letter, junk = (fields for _, fields in sealed_letters)
    entry = {k[2:]: v for k, v in feed_letter.items() if k.startswith(b"f:")}
    [opened_entry] = await data_keys.open_all([entry])
    assert opened_entry[b"data"] == letters[0][1][b"f:data"]
    [change] = await data_keys.open_all([sealing.unpack(webhook_letter[b"f:data"])])
    assert change["data"] == letters[1][1][b"f:data"]
    assert junk == letters[2][1]
    assert report.unsealable["dead letters"] == 1
    [(_, record)] = await raw_stream(redis, RESOLVED)
    assert record[b"f:enc"] == b"1"
    assert record[b"letter_id"] == resolved[0][1][b"letter_id"]
    assert report.sealed["dead letters"] == 3


async def test_feeds_lose_only_what_every_group_acknowledged(
    redis: Redis, plain: Plain, data_keys: DataKeys
) -> None:
    """A feed keeps exactly the entries a group has pending or has not read (and the newest
    delivered one while newer wait); the report counts them as left; every lag stays known."""
    keys = Keys(PARTITIONS)
    total = sum([await redis.xlen(f) for f in (*keys.feeds(), *keys.rxfeeds())])
    report = await _migrate(redis, data_keys)
    for feed in (*keys.feeds(), *keys.rxfeeds()):
        assert {i for i, _ in await raw_stream(redis, feed)} == plain.kept[feed], feed
        for group in await redis.xinfo_groups(feed):
            assert group["lag"] is not None, (feed, group["name"])
    kept = sum(len(ids) for ids in plain.kept.values())
    assert report.left["feed"] + report.left["rxfeed"] == kept
    assert report.deleted["feed"] + report.deleted["rxfeed"] == total - kept
    assert not report.finished


async def test_a_feed_missing_a_required_group_keeps_everything(
    redis: Redis, plain: Plain, data_keys: DataKeys
) -> None:
    """Were a channel never started (its group missing), the rx feeds are left whole."""
    keys = Keys(PARTITIONS)
    lengths = [await redis.xlen(f) for f in keys.rxfeeds()]
    required = {**GROUPS, "rxfeed": (*GROUPS["rxfeed"], "channel-sms")}
    report = await migrate_encrypt(redis, keys, data_keys, required_groups=required)
    assert [await redis.xlen(f) for f in keys.rxfeeds()] == lengths
    assert report.left["rxfeed"] == sum(lengths)
    assert report.deleted["rxfeed"] == 0


async def test_a_rerun_finds_nothing_to_do_and_changes_no_key(
    redis: Redis, plain: Plain, data_keys: DataKeys
) -> None:
    """The second run seals nothing, deletes nothing and leaves the keyspace byte for byte."""
    first = await _migrate(redis, data_keys)
    digest = await keyspace_digest(redis)
    again = await _migrate(redis, data_keys)
    assert await keyspace_digest(redis) == digest
    assert sum(again.sealed.values()) == 0
    assert sum(again.deleted.values()) == 0
    assert again.left == first.left


async def test_a_temporary_copy_left_by_a_killed_run_is_deleted(
    redis: Redis, plain: Plain, data_keys: DataKeys
) -> None:
    """Copies a run left behind (and a dead letters' one) are gone after the next run."""
    keys = Keys(PARTITIONS)
    user = plain.users[0]
    stale = keys.history(user).replace(":user:", ":migrating:user:")
    await redis.xadd(stale, {"half": "a copy"}, id="1-1")
    await redis.xadd("{bt:dlq}:migrating", {"half": "a copy"}, id="1-1")
    await _migrate(redis, data_keys)
    assert await _temporaries(redis) == []


async def test_with_sealing_off_it_refuses(redis: Redis, plain: Plain) -> None:
    """Data keys that do not seal (BACKTRACK_ENCRYPT_AT_REST=0) would copy plaintext: refused."""
    keys = Keys(PARTITIONS)
    off = DataKeys(redis, keys, data_keys_for(redis, PARTITIONS).masters, seals=False)
    with pytest.raises(ValueError, match="encryption at rest is off"):
        await migrate_encrypt(redis, keys, off)


async def test_on_a_redis_cluster_it_seals_the_same_way(cluster_redis: Redis) -> None:
    """Every script touches one slot and the copies share their original's hash tag (the dead
    letters' too), so on a Cluster the same deployment comes out sealed, ids unchanged."""
    data_keys = data_keys_for(cluster_redis, PARTITIONS)
    plain = await deployment(cluster_redis, data_keys)
    before = await _streams(cluster_redis)
    reads = await _reads(RedisStore(cluster_redis, PARTITIONS), plain.users)
    report = await _migrate(cluster_redis, data_keys)
    after = await _streams(cluster_redis)
    assert {k: [i for i, _ in v] for k, v in after.items()} == {
        k: [i for i, _ in v] for k, v in before.items()
    }
    sealed = RedisStore(cluster_redis, PARTITIONS, data_keys=data_keys)
    assert await _reads(sealed, plain.users) == reads
    assert report.sealed["dead letters"] == 3
    assert report.left["queue items"] == 1
    assert await _temporaries(cluster_redis) == []


async def test_an_older_subscriptions_secret_leaves_bt_subs_sealed(
    redis: Redis, plain: Plain, data_keys: DataKeys
) -> None:
    """A secret an older version wrote into ``bt:subs`` is moved out, sealed, and still signs."""
    legacy = SubscriptionCreated(
        sub_id="sub_old",
        clinic_id="clinic-a",
        url="https://clinic.example/hook",
        user_ids=None,
        secret=new_secret(),
        occurred_at=datetime.now(UTC),
    )
    data = legacy.__pydantic_serializer__.to_json(legacy)
    await redis.xadd(SUBS, {"type": legacy.type, "sub_id": legacy.sub_id, "data": data})
    report = await _migrate(redis, data_keys)
    assert report.sealed["webhook secrets"] == 1
    assert legacy.secret is not None
    assert legacy.secret.removeprefix("whsec_").encode() not in (await redis.dump(SUBS) or b"")
    found = await SubscriptionLog(redis, data_keys.masters).get("sub_old")
    assert found is not None
    assert found.secret == legacy.secret
    assert (await _migrate(redis, data_keys)).sealed["webhook secrets"] == 0
