"""A patient with something of every kind Redis can hold about them, for the erasure tests.

``populate`` writes, for one user, through the real writers where there is
one: the clinic and an enrolment record, a history (dedupe keys and partition
feed entries with it), a prescription change (rx stream and rx feed), a
snapshot, staged and retired read models, a data key, a queued webhook per
subscription, delivery-log entries, a dead letter and a resolved one, and an
audit entry. ``keys_naming`` lists the keys whose name carries a user id.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from services.channels.dispatcher import log_key
from services.channels.queues import Queues
from services.channels.subscriptions import SubscriptionCreated, SubscriptionLog
from services.channels.webhooks import new_secret
from shared import codec
from shared.audit import AuditLog
from shared.data_keys import DataKeys
from shared.dead_letters import dead_letter, originals
from shared.erasure import DLQ_RESOLVED
from shared.keys import DLQ, Keys
from shared.redis_store import RedisStore
from shared.sealing import MasterKeys
from shared.settings import Settings
from shared.store import Snapshot
from shared.streams import text
from tests.integration.events_factory import make_change, make_pain, make_started

CLINIC = "clinic-erase"


async def subscribe(
    redis: Redis,
    clinic: str = CLINIC,
    url: str = "http://127.0.0.1:9/h",
    secret: str | None = None,
) -> str:
    """A webhook subscription of ``clinic`` for all its users (signing with ``secret``, or a
    new one); its id."""
    sub_id = f"sub_{time.time_ns():x}"
    event = SubscriptionCreated(
        sub_id=sub_id,
        clinic_id=clinic,
        url=url,
        user_ids=None,
        secret=secret or new_secret(),
        occurred_at=datetime.now(UTC),
    )
    await SubscriptionLog(redis, Settings().master_keys()).append(event)
    return sub_id


async def populate(
    redis: Redis,
    keys: Keys,
    user: str,
    sub_ids: Sequence[str],
    *,
    events: int = 4,
    masters: MasterKeys | None = None,
) -> None:
    """Everything the stack keeps about ``user`` (see the module doc); ``events`` in history."""
    store = RedisStore(redis, partitions=keys.partitions)
    await store.enrol(user, CLINIC, by=f"clinic:{CLINIC}")
    history: list[Any] = [make_started(user_id=user, clinic_id=CLINIC)]
    history += [make_pain(user_id=user, minutes=i) for i in range(events - 1)]
    for start in range(0, len(history), 500):
        appended = await store.append_many(history[start : start + 500])
    change = make_change(1, user_id=user)
    await store.append_change(change)
    await store.save_snapshot(user, Snapshot(b"{}", appended[-1].position, "1", 1))
    for version in ("staged:r2", "retired:r1"):
        await redis.xadd(keys.read_model("rx", user, version), codec.to_fields(change))  # type: ignore[arg-type]
        await redis.hset(keys.read_model("snap", user, version), mapping={"data": b"{}"})
    await DataKeys(redis, keys, masters or Settings().master_keys()).seal(
        user, codec.to_fields(history[1])
    )
    item, now = codec.dumps(change), int(time.time() * 1000)
    for sub_id in sub_ids:
        await Queues(redis).enqueue(sub_id, user, str(change.event_id), item, now)
        entry = {"event_id": str(change.event_id), "user_id": user, "version": "1", "status": 500}
        await redis.xadd(log_key(sub_id), entry)  # type: ignore[arg-type]
    fields = codec.to_fields(history[1])
    await redis.xadd(DLQ, dead_letter(keys.feed_of(user), "1-1", "prescriber", "boom", fields))
    resolved = {"letter_id": "1-2", "action": "dropped", **originals(fields)}
    await redis.xadd(DLQ_RESOLVED, resolved)
    audit = AuditLog(redis, keys, 400)
    await audit.record("clinic", CLINIC, "GET /v1/users/{user_id}/prescription", user)


async def keys_naming(redis: Redis, user: str) -> set[str]:
    """Every key whose name has ``user`` as a whole ``:``-separated part."""
    found = {text(k) async for k in redis.scan_iter(match=f"*{user}*", count=1000)}
    return {k for k in found if user in k.split(":")}


async def entries_of(redis: Redis, stream: str, user: str, field: str = "user_id") -> int:
    """How many entries of ``stream`` have ``field`` equal to ``user``."""
    raw: Any = await redis.xrange(stream)
    name = field.encode()
    return sum(1 for _, fields in raw if fields.get(name) == user.encode())


__all__ = ["CLINIC", "entries_of", "keys_naming", "populate", "subscribe"]
