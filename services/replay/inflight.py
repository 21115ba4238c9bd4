"""Which users live processing has not finished yet (from the prescriber's group).

A rebuilt read model may replace a user's current one only if live processing
has folded everything the rebuild folded: otherwise the prescriber would
later fold the same tail from its older cursor and append, a second time,
changes the rebuild already wrote. A user is in flight when the prescriber
group has a feed entry for them pending (delivered, not acknowledged: changes
are appended before the ack) or not yet delivered. Read AFTER the histories,
this is conservative; anything arriving later moves the history tip, which
the switch script checks.
"""

from __future__ import annotations

from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis

from shared.keys import PRESCRIBER_GROUP, Keys
from shared.streams import text

GROUP = PRESCRIBER_GROUP


class Lagging(Exception):  # noqa: N818 - a state, not an error name
    """More feed entries are outstanding than we are willing to list."""


async def _group(redis: Redis, feed: str) -> dict[str, Any] | None:
    try:
        groups: Any = await redis.xinfo_groups(feed)
    except rx.ResponseError:  # no such stream: nothing was ever fed
        return None
    for group in groups:
        info = {text(k): v for k, v in group.items()}
        if text(info["name"]) == GROUP:
            return info
    return None


def _users(entries: Any) -> set[str]:
    found = set()
    for _, fields in entries:
        user = fields.get(b"user_id", fields.get("user_id"))
        if user is not None:
            found.add(text(user))
    return found


async def in_flight(redis: Redis, keys: Keys, partition: int, limit: int = 10_000) -> set[str]:
    """Users of ``partition`` with feed entries pending or undelivered; Lagging past ``limit``."""
    feed = keys.feed(partition)
    group = await _group(redis, feed)
    if group is None:
        return set()
    last = text(group["last-delivered-id"])
    fresh: Any = await redis.xrange(feed, f"({last}", "+", count=limit)
    if len(fresh) >= limit or int(group["pending"]) >= limit:
        raise Lagging(f"partition {partition} has {limit}+ entries outstanding")
    users = _users(fresh)
    if int(group["pending"]):
        pending: Any = await redis.xpending_range(feed, GROUP, "-", "+", limit)
        pipe = redis.pipeline(transaction=False)
        for item in pending:
            pipe.xrange(feed, item["message_id"], item["message_id"])
        for entries in await pipe.execute():
            users |= _users(entries)
    return users


__all__ = ["GROUP", "Lagging", "in_flight"]
