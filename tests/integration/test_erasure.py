"""Erasing a patient on a real Redis (services.prescriber.erasure, shared.erasure)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from services.channels import notices
from services.channels.dispatcher import log_key
from services.channels.queues import DUE, TRIES, queue_key, queues_of, seen_key
from services.prescriber import engine
from services.prescriber.erasure import Eraser
from services.replay import bluegreen, scan, whatif
from services.replay.rebuild import Rebuild
from shared.data_keys import DataKeys
from shared.erasure import DLQ_RESOLVED, ErasureRecords
from shared.keys import DLQ, REVOCATIONS, Keys
from shared.settings import Settings
from shared.streams import text
from tests.erasure_setup import entries_of, keys_naming, populate, subscribe
from tests.integration.events_factory import neighbours
from tests.integration.replay_fixtures import keyspace_digest

pytestmark = pytest.mark.anyio

KEYS = Keys(16)
USER = "zq9-erasable"
[OTHER] = neighbours(USER)


def _eraser(redis: Redis) -> Eraser:
    settings = Settings()
    data_keys = DataKeys(redis, KEYS, settings.master_keys())
    return Eraser(redis, KEYS, data_keys, settings.token_lifetimes())


async def _contents(redis: Redis, keys: set[str]) -> dict[str, Any]:
    return {key: await redis.dump(key) for key in sorted(keys)}


def _shared_streams(sub_id: str) -> list[tuple[str, str]]:
    return [
        (KEYS.feed_of(USER), "user_id"),
        (KEYS.rxfeed_of(USER), "user_id"),
        (KEYS.enrolments(USER), "user_id"),
        (DLQ, "f:user_id"),
        (DLQ_RESOLVED, "f:user_id"),
        (log_key(sub_id), "user_id"),
    ]


async def test_erase_deletes_every_key_of_the_user_and_nothing_of_anyone_else(
    redis: Redis,
) -> None:
    """After erase only the record and the notice's queue name the user; their entries are out
    of every shared stream; the other user of the same partition is untouched, key for key."""
    sub_id = await subscribe(redis)
    await populate(redis, KEYS, USER, [sub_id])
    await populate(redis, KEYS, OTHER, [sub_id])
    named = await keys_naming(redis, USER)
    assert len(named) >= 12  # history, rx, snap, clinic, 4 read models, 4 seen, dek, queue
    others = await keys_naming(redis, OTHER)
    before = await _contents(redis, others)
    counts = {(s, f): await entries_of(redis, s, OTHER, f) for s, f in _shared_streams(sub_id)}

    report = await _eraser(redis).erase(USER, "cli:test")

    record = KEYS.erased(USER)
    assert await keys_naming(redis, USER) == {record, queue_key(sub_id, USER)}
    assert set(await redis.hgetall(record)) == {b"at", b"by", b"state"}
    assert (await redis.hget(record, "state"), report.record.state) == (b"done", "done")
    [item] = await redis.lrange(queue_key(sub_id, USER), 0, -1)
    notice = orjson.loads(item)
    occurred_at = report.record.occurred_at
    assert notice == {"type": "PatientErased", "user_id": USER, "occurred_at": occurred_at}
    assert (report.notices, report.queues, report.key_destroyed) == (1, 1, True)
    for stream, name in _shared_streams(sub_id):
        assert await entries_of(redis, stream, USER, name) == 0, stream
        assert await entries_of(redis, stream, OTHER, name) == counts[(stream, name)], stream
    assert await _contents(redis, others) == before
    audit: Any = await redis.xrange(KEYS.audit(USER))
    assert sorted(f[b"user_id"] for _, f in audit) == sorted([OTHER.encode(), USER.encode()])
    revoked: Any = await redis.xrange(REVOCATIONS)
    assert [(f[b"value"], f[b"role"]) for _, f in revoked] == [(USER.encode(), b"device")]


async def test_a_rerun_is_a_no_op_with_the_same_end_state(redis: Redis) -> None:
    """Erasing a second time writes nothing: every key's DUMP is the same, the notice is not
    queued again."""
    sub_id = await subscribe(redis)
    await populate(redis, KEYS, USER, [sub_id])
    first = await _eraser(redis).erase(USER, "cli:test")
    digest = await keyspace_digest(redis)
    again = await _eraser(redis).erase(USER, "operator:someone-else")
    assert await keyspace_digest(redis) == digest
    assert (again.state_before, again.notices, again.keys, again.queues) == ("done", 0, 0, 0)
    assert again.record == first.record


async def test_a_half_done_erasure_is_finished_by_resume(redis: Redis) -> None:
    """Killed after the key and the subscriptions were kept, before anything was deleted:
    resume finishes it, and the notice goes to the subscription collected while enrolled."""
    sub_id = await subscribe(redis)
    await populate(redis, KEYS, USER, [sub_id])
    eraser = _eraser(redis)
    record = await eraser.begin(USER, "cli:test")
    await eraser.records.note_notify(USER, [sub_id])
    await redis.delete(KEYS.clinic(USER))  # as if the deletion had started
    assert await eraser.records.started() == [USER]
    assert await eraser.resume() == 1
    assert await eraser.records.started() == []
    [item] = await redis.lrange(queue_key(sub_id, USER), 0, -1)
    assert item == notices.body(USER, record.occurred_at)
    assert await redis.exists(seen_key(sub_id, notices.notice_id(USER, record.occurred_at)))


async def test_a_queued_notice_survives_a_rerun_and_is_queued_once(redis: Redis) -> None:
    """A notice waiting for its endpoint stays queued (once, head, same due time) when the
    erasure runs again; a change that reached the queue meanwhile is deleted."""
    sub_id = await subscribe(redis)
    await populate(redis, KEYS, USER, [sub_id])
    eraser = _eraser(redis)
    first = await eraser.erase(USER, "cli:test")
    item = notices.body(USER, first.record.occurred_at)
    await redis.rpush(queue_key(sub_id, USER), b'{"event_id":"late change"}')
    await redis.hset(TRIES, queue_key(sub_id, USER), 3)
    await eraser.erase(USER, "cli:test")
    assert await redis.lrange(queue_key(sub_id, USER), 0, -1) == [item]
    assert await redis.zscore(DUE, queue_key(sub_id, USER)) is not None
    assert await redis.sismember(queues_of(sub_id), queue_key(sub_id, USER))
    assert await redis.hget(TRIES, queue_key(sub_id, USER)) is None


async def test_a_user_with_no_data_gets_a_record_and_nothing_else(redis: Redis) -> None:
    """Erasing an unknown id writes the record (done) and destroys nothing."""
    report = await _eraser(redis).erase("nobody-here", "cli:test")
    assert (report.key_destroyed, report.keys, report.notices) == (False, 0, 0)
    assert await keys_naming(redis, "nobody-here") == {KEYS.erased("nobody-here")}
    assert report.record.state == "done"


async def test_replays_skip_an_erased_user_and_a_rebuild_writes_nothing_of_theirs(
    redis: Redis,
) -> None:
    """With one erasure begun (history still there) and one done, user_ids lists only the
    living; rebuild --all and what-if run; a rebuild that staged a user before the erasure
    began switches nothing and leaves no staged key."""
    sub_id = await subscribe(redis)
    for user in (USER, OTHER, "zq9-done"):
        await populate(redis, KEYS, user, [sub_id])
    eraser = _eraser(redis)
    await eraser.erase("zq9-done", "cli:test")
    staged = Rebuild(redis, KEYS, "before-erasure")
    logs = await scan.histories(redis, KEYS, [USER])
    await eraser.begin(USER, "cli:test")  # begun: the history is still there
    assert await scan.user_ids(redis, KEYS) == [OTHER]
    await redis.script_load(bluegreen.SWITCH_LUA)
    assert await staged._switch(logs) == []  # neither switched nor stale
    assert await redis.exists(KEYS.read_model("rx", USER, "staged:before-erasure")) == 0
    assert await redis.exists(KEYS.read_model("rx", USER, "retired:before-erasure")) == 0
    job = Rebuild(redis, KEYS, "after")
    report = await job.run(*(await job.plan()))
    assert (report.users, report.switched, report.deferred) == (1, 1, [])
    differences = await whatif.what_if(redis, KEYS, engine.DEFAULT_RULES)
    assert USER not in {d.user_id for d in differences}
    names = [text(k) async for k in redis.scan_iter(match="*:after:*")]
    assert names
    assert all(OTHER in name for name in names)


async def test_the_subscriptions_kept_are_the_first_runs_and_go_when_done(
    redis: Redis,
) -> None:
    """``notify`` lives only while the erasure runs; get() reads what destroy wrote."""
    records = ErasureRecords(redis, KEYS)
    assert await records.get(USER) is None
    await _eraser(redis).begin(USER, "cli:x")
    assert await records.note_notify(USER, ["sub_a", "sub_b"]) == ("sub_a", "sub_b")
    assert await records.note_notify(USER, ["sub_c"]) == ("sub_a", "sub_b")
    record = await records.get(USER)
    assert record is not None
    assert record.notify == ("sub_a", "sub_b")
    await records.finish(USER)
    done = await records.get(USER)
    assert done is not None
    assert (done.state, done.notify) == ("done", None)


async def test_erasure_works_on_a_cluster(cluster_redis: Redis) -> None:
    """Every script and scan of an erasure runs on a 3-master Redis Cluster, with the same end:
    the record and the notice's queue are all that name the user."""
    sub_id = await subscribe(cluster_redis)
    await populate(cluster_redis, KEYS, USER, [sub_id])
    assert len(await keys_naming(cluster_redis, USER)) >= 12
    report = await _eraser(cluster_redis).erase(USER, "cli:test")
    assert await keys_naming(cluster_redis, USER) == {KEYS.erased(USER), queue_key(sub_id, USER)}
    assert (report.record.state, report.notices) == ("done", 1)
    for stream, name in _shared_streams(sub_id):
        assert await entries_of(cluster_redis, stream, USER, name) == 0, stream


def test_the_cli_asks_first_and_refuses_a_bad_id(redis_url: str) -> None:
    """Without --yes and no terminal to ask, ``backtrack erase`` erases nothing (exit 2); an id
    that is not a user id is refused too."""
    env = {**os.environ, "BACKTRACK_REDIS_URL": redis_url, "BACKTRACK_PARTITIONS": "16"}
    for args, says in (([USER], "--yes"), (["no:colons", "--yes"], "not a user id")):
        done = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "erase", "--user", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2
        assert says in done.stderr
    with SyncRedis.from_url(redis_url) as client:
        assert client.keys("*") == []
