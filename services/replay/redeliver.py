"""Re-delivery: send one subscription the PrescriptionChanged events of a time range again.

For a clinic that lost data. The time range is when the changes were fed
(their ``bt:{pNN}:rxfeed`` entry time, i.e. when clinics were first told),
``since`` inclusive, ``until`` exclusive. Each partition's rxfeed is read in
pages; a change is queued again only for the chosen subscription, and only
if that subscription matches it (the user is enrolled with its clinic, is in
its user list if it has one, and the change was fed after it was created),
through the channels' own durable queues (``services.channels.queues``):
per-user order is kept, deliveries are signed and retried as usual, and no
other subscription, channel or feed sees anything. The queue's one-week
dedupe of event ids is lifted for exactly these changes (``force``): asking
for a re-delivery is the operator saying "again". ``webhook-id`` stays the
change's event id, as the contract promises.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from services.channels.queues import Queues, item_ids, queue_item, seen_key
from services.channels.subscriptions import SubscriptionLog, stream_ms
from shared.keys import Keys
from shared.streams import text


@dataclass(frozen=True, slots=True)
class Redelivery:
    """What a re-delivery queued: changes seen in the range, and queued for the subscription."""

    subscription: str
    seen: int
    queued: int


class SubscriptionNotFound(LookupError):  # noqa: N818 - reads as what happened
    """No active subscription has that id."""


async def requeue(redis: Redis, sub_id: str, items: Sequence[bytes], *, force: bool) -> int:
    """Queue ``items`` (``queue_item``s) for one subscription; ``force`` lifts the dedupe."""
    queues, queued = Queues(redis), 0
    for item in items:
        event_id, user = item_ids(item)
        if force:
            await redis.delete(seen_key(sub_id, event_id))
        queued += await queues.enqueue(sub_id, user, event_id, item, int(time.time() * 1000))
    return queued


async def redeliver(
    redis: Redis,
    keys: Keys,
    sub_id: str,
    since: datetime,
    until: datetime | None = None,
    *,
    page: int = 1000,
) -> Redelivery:
    """Queue again, for ``sub_id`` only, every matching change fed in [since, until)."""
    sub = await SubscriptionLog(redis).get(sub_id)
    if sub is None or sub.status != "active":
        raise SubscriptionNotFound(sub_id)
    low = f"{int(since.timestamp() * 1000)}-0"
    high = "+" if until is None else f"({int(until.timestamp() * 1000)}-0"
    clinics: dict[str, str | None] = {}
    seen = queued = 0
    for feed in keys.rxfeeds():
        after = low
        while True:
            entries: Any = await redis.xrange(feed, after, high, count=page)
            items = []
            for position, fields in entries:
                user = text(fields.get(b"user_id", b""))
                if user not in clinics:
                    clinic = await redis.get(keys.clinic(user))
                    clinics[user] = None if clinic is None else text(clinic)
                seen += 1
                if sub.matches(user, clinics[user], stream_ms(text(position))):
                    items.append(queue_item(fields))
            queued += await requeue(redis, sub_id, items, force=True)
            if len(entries) < page:
                break
            after = f"({text(entries[-1][0])}"
    return Redelivery(sub_id, seen, queued)


__all__ = ["Redelivery", "SubscriptionNotFound", "redeliver", "requeue"]
