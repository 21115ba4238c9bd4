"""What-if, as-of, re-delivery, dead letters and schema v1/v2 on real Redis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from services.channels.queues import DUE, item_ids, queue_key
from services.channels.subscriptions import SubscriptionCreated, SubscriptionLog
from services.prescriber import engine
from services.prescriber.arrivals import fold_history
from services.prescriber.feeds.consumer import GROUP, FeedConsumer
from services.prescriber.processing.processor import Processor
from services.replay import asof, deadletters, scan, whatif
from services.replay.readonly import ReadOnly
from services.replay.rebuild import Rebuild
from services.replay.redeliver import redeliver
from services.replay.rulesets import load_rules
from shared.codec import dumps, from_fields
from shared.events import PainLogged
from shared.keys import Keys
from shared.redis_store import RedisStore
from shared.settings import Settings
from tests.integration.events_factory import make_outcome, make_pain, make_review, make_started
from tests.integration.replay_fixtures import arrivals, keyspace_digest, run_live

pytestmark = pytest.mark.anyio


async def test_what_if_reports_differences_and_changes_no_key(
    redis: Redis, redis_store: RedisStore
) -> None:
    """Under stricter progression rules some users differ, and the keyspace digest is unchanged."""
    await run_live(redis_store, arrivals())
    before = await keyspace_digest(redis)
    rules = load_rules(None, ["progress_greens=4", "flare_jump=1"])
    found = await whatif.what_if(redis, redis_store.keys, rules, data_keys=redis_store.data_keys)
    assert found
    assert all(d.summary for d in found)
    assert await keyspace_digest(redis) == before
    same = await whatif.what_if(
        redis, redis_store.keys, engine.DEFAULT_RULES, data_keys=redis_store.data_keys
    )
    assert same == []


async def test_what_if_output_files(tmp_path: Any, redis: Redis, redis_store: RedisStore) -> None:
    """Differences are written as CSV with a header, or as a JSON list."""
    await run_live(redis_store, arrivals(patients=6))
    found = await whatif.what_if(
        redis,
        redis_store.keys,
        load_rules(None, ["progress_greens=5"]),
        data_keys=redis_store.data_keys,
    )
    csv = whatif.write(found, str(tmp_path / "d.csv")).read_text().splitlines()
    assert csv[0].startswith("user_id,phase_now")
    assert len(csv) == len(found) + 1
    rows = orjson.loads(whatif.write(found, str(tmp_path / "d.json")).read_bytes())
    assert [r["user_id"] for r in rows] == [d.user_id for d in found]


def test_read_only_client_refuses_writes() -> None:
    """The what-if client has no write command at all."""
    client = ReadOnly(object())
    with pytest.raises(AttributeError):
        client.xadd  # noqa: B018
    with pytest.raises(ValueError, match="NAME=VALUE"):
        load_rules(None, ["progress_greens"])


async def test_as_of_folds_what_occurred_or_arrived_by_then(
    redis: Redis, redis_store: RedisStore
) -> None:
    """As-of equals a replay of the events that occurred by then; --arrived the live fold then."""
    events = arrivals(patients=4, weeks=6)
    await run_live(redis_store, events)
    user = events[0].user_id
    mine = [e for e in events if e.user_id == user]
    at = sorted(e.occurred_at for e in mine)[len(mine) // 2]
    view = await asof.as_of(redis, redis_store.keys, user, at, data_keys=redis_store.data_keys)
    occurred = [e for e in mine if e.occurred_at <= at]
    assert view.events == len(occurred)
    assert view.prescription == engine.decide(engine.replay(occurred))
    assert dict(asof.summary(view))["events folded"] == str(len(occurred))

    history = await redis_store.history(user)
    later = datetime.fromtimestamp(int(history[-1][0].split("-")[0]) / 1000 + 1, UTC)
    known = await asof.as_of(
        redis, redis_store.keys, user, later, known=True, data_keys=redis_store.data_keys
    )
    assert known.state == fold_history(user, [e for _, e in history]).state
    assert known.announced == await redis_store.latest_prescription(user)
    counts = await asof.phases_as_of(redis, redis_store.keys, at, data_keys=redis_store.data_keys)
    assert sum(counts.values()) == 4


async def _subscribe(redis: Redis, clinic: str) -> str:
    sub_id = f"sub-{uuid.uuid4().hex[:8]}"
    created = SubscriptionCreated(
        sub_id=sub_id,
        clinic_id=clinic,
        url="https://clinic.example/hook",
        user_ids=None,
        secret="whsec_" + "A" * 32,
        occurred_at=datetime.now(UTC),
    )
    await SubscriptionLog(redis, Settings().master_keys()).append(created)
    return sub_id


async def test_redelivery_reaches_only_the_chosen_subscription(
    redis: Redis, redis_store: RedisStore
) -> None:
    """Changes fed in the range are queued for one subscription; the other gets nothing."""
    chosen, other = await _subscribe(redis, "clinic-a"), await _subscribe(redis, "clinic-a")
    since = datetime.now(UTC) - timedelta(seconds=1)
    user = "rd-1"
    events = [make_started(user_id=user, clinic_id="clinic-a")]
    events += [make_pain(9, 60 * 24 * d, user_id=user, context="morning") for d in range(1, 9)]
    await run_live(redis_store, events, chunk=1)
    changes = [c for _, c in await redis_store.prescriptions(user)]
    assert len(changes) >= 2

    done = await redeliver(redis, redis_store.keys, chosen, since)
    assert done.queued == len(changes)
    queued = [item_ids(i)[0] for i in await redis.lrange(queue_key(chosen, user), 0, -1)]
    assert queued == [str(c.event_id) for c in changes]
    assert not await redis.exists(queue_key(other, user))
    assert {k.decode() for k in await redis.zrange(DUE, 0, -1)} == {queue_key(chosen, user)}
    nothing = await redeliver(
        redis, redis_store.keys, chosen, datetime.now(UTC) + timedelta(hours=1)
    )
    assert nothing.queued == 0


async def test_dead_letter_is_retried_into_the_pipeline(redis: Redis) -> None:
    """A dead-lettered feed entry, retried, is consumed again and yields the prescription."""
    keys = Keys(1)
    store = RedisStore(redis, partitions=1)
    await redis.xgroup_create(keys.feed(0), GROUP, id="0", mkstream=True)
    await store.append(make_started(user_id="dl-1"))
    consumer = FeedConsumer(redis, Processor(store), keys)
    [(_, entries)] = await redis.xreadgroup(GROUP, "c1", {keys.feed(0): ">"}, count=10)
    entry_id, fields = entries[0]
    await consumer.dead_letter(keys.feed(0), entry_id, fields, "boom")
    await redis.xack(keys.feed(0), GROUP, entry_id)
    assert await store.latest_prescription("dl-1") is None  # only the letter can bring it back

    [letter] = await deadletters.list_letters(redis)
    assert letter.error == "boom"
    assert letter.fields[b"user_id"] == b"dl-1"
    where = await deadletters.retry(redis, letter.letter_id)
    assert where is not None
    assert where.startswith(keys.feed(0))
    assert await deadletters.list_letters(redis) == []
    [(_, entries)] = await redis.xreadgroup(GROUP, "c1", {keys.feed(0): ">"}, count=10)
    assert entries[-1][1][b"user_id"] == b"dl-1"
    await consumer.handle(0, entries)
    assert await store.latest_prescription("dl-1") is not None
    [(_, resolved)] = await redis.xrange(deadletters.RESOLVED)
    assert resolved[b"action"] == b"retried"
    assert resolved[b"error"] == b"boom"


async def test_dead_letter_drop_keeps_an_audit_record(redis: Redis) -> None:
    """Dropping removes the letter from bt:dlq and records it, fields included, as resolved."""
    await redis.xadd(
        Keys.dlq, {"stream": "bt:{p00}:feed", "entry_id": "1-0", "error": "x", "f:user_id": "u"}
    )
    [letter] = await deadletters.list_letters(redis)
    assert (await deadletters.show(redis, letter.letter_id)) == letter
    assert await deadletters.drop(redis, letter.letter_id)
    assert not await deadletters.drop(redis, letter.letter_id)
    [(_, resolved)] = await redis.xrange(deadletters.RESOLVED)
    assert (resolved[b"action"], resolved[b"f:user_id"]) == (b"dropped", b"u")


async def test_v1_and_v2_pain_logs_replay_and_rebuild_together(
    redis: Redis, redis_store: RedisStore
) -> None:
    """A history holding v1 and v2 PainLogged decodes, processes live and rebuilds identically."""
    user, keys = "sv-1", redis_store.keys
    events: list[Any] = [make_started(user_id=user)]
    for day in range(1, 15):
        location = "leg_below_knee" if day % 2 else None
        events.append(make_pain(5 - day // 4, 60 * 24 * day, user_id=user, location=location))
    processor = Processor(redis_store)
    for i, event in enumerate(events):
        if isinstance(event, PainLogged) and i % 2 == 0:  # written by an old client: v1 JSON
            raw = orjson.loads(dumps(event))
            del raw["location"]
            raw["schema_version"] = 1
            fields = {"type": "PainLogged", "event_id": str(event.event_id), "user_id": user}
            await redis.xadd(keys.history(user), {**fields, "data": orjson.dumps(raw)})
        else:
            await redis_store.append(event)
        await processor.process_user(user)
    raw: Any = await redis.xrange(keys.history(user))
    assert redis_store.data_keys is not None
    stored = await redis_store.data_keys.open_all([f for _, f in raw])  # plaintext and sealed
    assert 0 < sum(b"enc" in f for _, f in raw) < len(events)  # the store sealed its own writes
    versions = {orjson.loads(f[b"data"]).get("schema_version") for f in stored}
    assert versions == {1, 2}
    decoded = [from_fields(f) for f in stored]
    assert [e.event_id for e in decoded] == [e.event_id for e in events]
    assert all(e.schema_version == 2 for e in decoded if isinstance(e, PainLogged))
    live = [c for _, c in await redis_store.prescriptions(user)]
    assert live
    assert live == fold_history(user, events).changes
    report = await Rebuild(redis, keys, "sv", data_keys=redis_store.data_keys).run([user])
    assert report.changed == 0
    assert [c for _, c in await redis_store.prescriptions(user)] == live
    [log] = await scan.histories(redis, keys, [user], data_keys=redis_store.data_keys)
    assert len(log.entries) == len(events)


async def test_reviews_and_outcomes_replay_and_rebuild_with_the_rest(
    redis: Redis, redis_store: RedisStore
) -> None:
    """A history holding a review and an outcome scans, processes live and rebuilds identically."""
    user, keys = "ro-1", redis_store.keys
    events: list[Any] = [make_started(user_id=user)]
    for day in range(1, 10):
        events.append(make_pain(4, 60 * 24 * day, user_id=user))
    last = events[-1].occurred_at
    events.append(make_review(user_id=user, occurred_at=last + timedelta(hours=1)))
    events.append(make_outcome(user_id=user, occurred_at=last + timedelta(hours=2)))
    processor = Processor(redis_store)
    for event in events:
        await redis_store.append(event)
        await processor.process_user(user)
    live = [c for _, c in await redis_store.prescriptions(user)]
    assert live
    assert live == fold_history(user, events).changes
    report = await Rebuild(redis, keys, "ro", data_keys=redis_store.data_keys).run([user])
    assert report.changed == 0
    [log] = await scan.histories(redis, keys, [user], data_keys=redis_store.data_keys)
    assert log.events == events
