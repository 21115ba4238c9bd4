"""Patients' data keys on a real Redis (shared.data_keys): creation, erasure, rotation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from shared import codec, sealing
from shared.data_keys import DataKeys, ErasureUnfinished, KeyDestroyed
from shared.erasure import ErasureRecords
from shared.keys import Keys
from shared.sealing import MasterKey, MasterKeys, UnknownMasterKey, Unreadable

pytestmark = pytest.mark.anyio

GOLDEN = sorted((Path(__file__).parent.parent / "golden").glob("*.json"))
KEYS = Keys(16)
OLD = MasterKey(b"o" * 32)
NEW = MasterKey(b"n" * 32)
PLAINTEXT_MARKERS = [b'"score"', b'"note"', b"Examined today", b'"red_flags"']


class Clock:
    """Monotonic seconds a test moves by hand (times the cache entries)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _keyring(redis: Redis, masters: MasterKeys | None = None, **options: Any) -> DataKeys:
    return DataKeys(redis, KEYS, masters or MasterKeys(OLD), **options)


def _fields(path: Path, user_id: str = "p-0001") -> dict[str, Any]:
    event = codec.loads(path.read_bytes()).model_copy(update={"user_id": user_id})
    return codec.to_fields(event)


def _as_read(fields: dict[str, Any]) -> dict[bytes, bytes]:
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}


async def _append(redis: Redis, user_id: str, fields: dict[Any, Any]) -> bytes:
    position: bytes = await redis.xadd(KEYS.history(user_id), fields)
    return position


async def _entries(redis: Redis, user_id: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await redis.xrange(KEYS.history(user_id))]


async def test_every_golden_event_round_trips_sealed_through_a_stream(redis: Redis) -> None:
    """Sealed, appended and read back, each entry opens to exactly the fields it was made from."""
    keyring = _keyring(redis)
    for path in GOLDEN:
        await _append(redis, "p-0001", await keyring.seal("p-0001", _fields(path)))
    stored = await _entries(redis, "p-0001")
    assert len(stored) == len(GOLDEN)
    for path, entry in zip(GOLDEN, stored, strict=True):
        assert entry[b"enc"] == b"1"
        assert entry[b"type"] == path.stem.split(".")[0].encode()
        assert await keyring.open("p-0001", entry) == _as_read(_fields(path))
        assert await _keyring(redis).open("p-0001", entry) == _as_read(_fields(path))


async def test_a_plaintext_entry_opens_unchanged_and_a_moved_one_does_not(redis: Redis) -> None:
    """Entries from before encryption pass through; another user's entry is refused."""
    keyring = _keyring(redis)
    plain = _as_read(_fields(GOLDEN[0]))
    assert await keyring.open("p-0001", plain) == plain
    sealed = await keyring.seal("p-0001", _fields(GOLDEN[0]))
    await keyring.seal("p-0002", _fields(GOLDEN[0], "p-0002"))
    with pytest.raises(Unreadable):
        await keyring.open("p-0002", sealed)
    with pytest.raises(KeyDestroyed):  # sealed under a key that is not p-0002's: never opened
        await keyring.open("p-0002", sealed | {"user_id": "p-0002"})
    with pytest.raises(ValueError, match="not 'p-0002'"):
        await keyring.seal("p-0002", _fields(GOLDEN[0]))


async def test_two_processes_racing_to_create_keys_end_with_one_key_each_user(
    redis: Redis,
) -> None:
    """Two keyrings sealing the same new users at once agree on one stored key per user."""
    first, second = _keyring(redis), _keyring(redis)
    users = [f"race-{n}" for n in range(40)]
    sealed = await asyncio.gather(
        *(ring.seal(u, _fields(GOLDEN[0], u)) for u in users for ring in (first, second))
    )
    for n, user in enumerate(users):
        by_first, by_second = sealed[2 * n], sealed[2 * n + 1]
        assert await second.open(user, by_first) == await first.open(user, by_second)
        assert by_first["dek"] == by_second["dek"]
    stored = [k async for k in redis.scan_iter(match="bt:*:dek:*")]
    assert len(stored) == len(users)


async def test_destroy_makes_every_sealed_entry_unreadable_and_refuses_a_new_key(
    redis: Redis,
) -> None:
    """After destroy: KeyDestroyed on open and on seal, from this keyring and from a fresh one."""
    keyring = _keyring(redis)
    sealed = await keyring.seal("p-0001", _fields(GOLDEN[0]))
    assert await keyring.destroy("p-0001") is True
    assert await redis.exists(KEYS.data_key("p-0001")) == 0
    assert await keyring.erased("p-0001")
    for ring in (keyring, _keyring(redis)):
        with pytest.raises(KeyDestroyed):
            await ring.open("p-0001", sealed)
        with pytest.raises(KeyDestroyed):
            await ring.seal("p-0001", _fields(GOLDEN[1]))
    assert await redis.exists(KEYS.data_key("p-0001")) == 0
    assert await keyring.destroy("p-0001") is False


async def test_another_process_may_open_from_its_cache_until_the_entry_expires(
    redis: Redis,
) -> None:
    """A keyring that cached the key before the erasure opens until its cache TTL runs out."""
    clock = Clock()
    eraser, cached = _keyring(redis), _keyring(redis, cache_ttl=10.0, clock=clock)
    sealed = await cached.seal("p-0001", _fields(GOLDEN[0]))
    await eraser.destroy("p-0001")
    clock.now += 9.9
    assert await cached.open("p-0001", sealed) == _fields(GOLDEN[0])
    clock.now += 0.2
    with pytest.raises(KeyDestroyed):
        await cached.open("p-0001", sealed)


async def test_the_cache_is_bounded_least_recently_used_first(redis: Redis) -> None:
    """Past cache_size users the least recently used key is dropped and read again from Redis."""
    eraser, cached = _keyring(redis), _keyring(redis, cache_size=2, clock=Clock())
    sealed = {u: await cached.seal(u, _fields(GOLDEN[0], u)) for u in ("a", "b")}
    await cached.open("a", sealed["a"])  # "b" is now the least recently used
    sealed["c"] = await cached.seal("c", _fields(GOLDEN[0], "c"))
    for user in ("a", "b"):
        await eraser.destroy(user)
    assert await cached.open("a", sealed["a"]) == _fields(GOLDEN[0], "a")
    with pytest.raises(KeyDestroyed):
        await cached.open("b", sealed["b"])


async def test_readmit_gives_a_new_key_and_the_old_entries_stay_destroyed(redis: Redis) -> None:
    """Only after readmit does seal make a key again; entries of the old key still say so."""
    keyring = _keyring(redis)
    old = await keyring.seal("p-0001", _fields(GOLDEN[0]))
    await keyring.destroy("p-0001")
    await ErasureRecords(redis, KEYS).finish("p-0001")
    assert await keyring.readmit("p-0001") is True
    new = await keyring.seal("p-0001", _fields(GOLDEN[1]))
    assert new["dek"] != old["dek"]
    assert await keyring.open("p-0001", new) == _fields(GOLDEN[1])
    with pytest.raises(KeyDestroyed):
        await _keyring(redis).open("p-0001", old)


async def test_destroy_writes_the_erasure_record_once_and_a_rerun_keeps_it(redis: Redis) -> None:
    """The tombstone is a hash (at, by, state started) with nothing else; a second destroy by
    someone else changes no field, and finishing marks it done."""
    keyring, records = _keyring(redis), ErasureRecords(redis, KEYS)
    await keyring.seal("p-0001", _fields(GOLDEN[0]))
    assert await keyring.destroy("p-0001", "cli:alice") is True
    first = await redis.hgetall(KEYS.erased("p-0001"))
    assert set(first) == {b"at", b"by", b"state"}
    assert (first[b"by"], first[b"state"]) == (b"cli:alice", b"started")
    server_ms = (await redis.time())[0] * 1000
    assert abs(int(first[b"at"]) - server_ms) < 5000
    await asyncio.sleep(0.01)
    assert await keyring.destroy("p-0001", "operator:other") is False
    assert await redis.hgetall(KEYS.erased("p-0001")) == first
    assert await records.started() == ["p-0001"]
    assert await records.finish("p-0001") is True
    assert await records.finish("p-0001") is False
    record = await records.get("p-0001")
    assert record is not None
    assert (record.state, record.by, record.at_ms) == ("done", "cli:alice", int(first[b"at"]))
    assert await records.started() == []


async def test_a_tombstone_of_the_first_format_becomes_a_record_begun_then(redis: Redis) -> None:
    """A string tombstone (server seconds) is turned into a started record at that time, so
    resuming finishes the deletion the first format never did."""
    await redis.set(KEYS.erased("p-0002"), "1700000000")
    assert await ErasureRecords(redis, KEYS).started() == ["p-0002"]
    await _keyring(redis).destroy("p-0002", "cli:bob")
    record = await ErasureRecords(redis, KEYS).get("p-0002")
    assert record is not None
    assert (record.at_ms, record.state) == (1_700_000_000_000, "started")


async def test_readmit_is_refused_while_the_erasure_is_not_done(redis: Redis) -> None:
    """A begun erasure still deletes: readmitting the id then would lose the new person's data."""
    keyring = _keyring(redis)
    await keyring.destroy("p-0003")
    with pytest.raises(ErasureUnfinished):
        await keyring.readmit("p-0003")
    assert await keyring.erased("p-0003")
    assert await keyring.readmit("p-0004") is False


async def test_redis_holds_neither_the_data_key_nor_the_plaintext(redis: Redis) -> None:
    """DUMPs of the wrapped key and of the history stream show no key bytes and no health data."""
    keyring = _keyring(redis)
    for path in GOLDEN:
        await _append(redis, "p-0001", await keyring.seal("p-0001", _fields(path)))
    wrapped = await redis.get(KEYS.data_key("p-0001"))
    data_key = sealing.unwrap(MasterKeys(OLD), wrapped, "p-0001")
    key_dump = await redis.dump(KEYS.data_key("p-0001"))
    stream_dump = await redis.dump(KEYS.history("p-0001"))
    for dump in (key_dump, stream_dump):
        assert data_key not in dump
        assert OLD.key not in dump
    for marker in PLAINTEXT_MARKERS:
        assert marker not in stream_dump
    for path in GOLDEN:
        assert _fields(path)["data"] not in stream_dump


async def test_rotation_rewraps_every_key_and_the_old_master_key_can_go(redis: Redis) -> None:
    """rewrap under the new master key, resumable; then without the old one everything opens."""
    before = _keyring(redis, MasterKeys(OLD))
    users = [f"rot-{n}" for n in range(25)]
    for user in users:
        for path in GOLDEN[:2]:
            await _append(redis, user, await before.seal(user, _fields(path, user)))
    await before.destroy(users[0])
    rotating = _keyring(redis, MasterKeys(NEW, (OLD,)))
    done = await rotating.rewrap(count=7)
    assert (done.rewrapped, done.current) == (len(users) - 1, 0)
    again = await rotating.rewrap()
    assert (again.rewrapped, again.current) == (0, len(users) - 1)
    after = _keyring(redis, MasterKeys(NEW))
    for user in users[1:]:
        for entry, path in zip(await _entries(redis, user), GOLDEN[:2], strict=True):
            assert await after.open(user, entry) == _as_read(_fields(path, user))
    with pytest.raises(UnknownMasterKey):
        await _keyring(redis, MasterKeys(OLD)).open(users[1], (await _entries(redis, users[1]))[0])
    assert await redis.exists(KEYS.data_key(users[0])) == 0


async def test_rewrap_without_the_old_master_key_says_which_is_missing(redis: Redis) -> None:
    """A key wrapped by a master key not configured stops the rotation with its id."""
    await _keyring(redis, MasterKeys(OLD)).seal("p-0001", _fields(GOLDEN[0]))
    with pytest.raises(UnknownMasterKey, match=OLD.id):
        await _keyring(redis, MasterKeys(NEW)).rewrap()


async def test_data_keys_work_on_a_cluster(cluster_redis: Redis) -> None:
    """Create, open, rewrap (a scan of every node) and destroy on a 3-master Redis Cluster."""
    before = DataKeys(cluster_redis, KEYS, MasterKeys(OLD))
    users = [f"c-{n}" for n in range(12)]
    sealed = {u: await before.seal(u, _fields(GOLDEN[0], u)) for u in users}
    done = await DataKeys(cluster_redis, KEYS, MasterKeys(NEW, (OLD,))).rewrap()
    assert done.rewrapped == len(users)
    after = DataKeys(cluster_redis, KEYS, MasterKeys(NEW))
    for user in users:
        assert await after.open(user, sealed[user]) == _fields(GOLDEN[0], user)
    await after.destroy(users[0])
    with pytest.raises(KeyDestroyed):
        await DataKeys(cluster_redis, KEYS, MasterKeys(NEW)).open(users[0], sealed[users[0]])
