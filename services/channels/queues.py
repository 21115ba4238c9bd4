"""Durable webhook delivery queues in Redis: ordering, leases, retries.

One list per (subscription, user) holds that user's changes in feed order;
only its head is ever in flight, so one subscription gets one user's changes
in version order. The sorted set ``bt:{wh}:due`` holds every non-empty queue,
scored by the unix ms its head may next be attempted. Claiming a head moves
its score to a lease deadline (one script, so two dispatchers never take the
same head); a dispatcher killed mid-attempt loses nothing: the lease runs out
and the head is attempted again. Every key the scripts touch carries the
``{wh}`` hash tag (one cluster slot). An item is the rx feed entry as the
prescriber sealed it, packed into one value (``queue_item``): the change
inside stays encrypted with the patient's data key while it waits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from shared import sealing
from shared.streams import text

TAG = "bt:{wh}"
DUE = f"{TAG}:due"
TRIES = f"{TAG}:tries"
SEEN_TTL = 7 * 24 * 3600

_ENQUEUE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then return 0 end
local n = redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[4], KEYS[2])
redis.call('ZADD', KEYS[3], 'NX', ARGV[3], KEYS[2])
return n
"""
_CLAIM = """
local queues = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
for _, q in ipairs(queues) do
  local head = redis.call('LINDEX', q, 0)
  if head then
    redis.call('ZADD', KEYS[1], ARGV[2], q)
    local n = redis.call('HINCRBY', KEYS[2], q, 1)
    table.insert(out, q); table.insert(out, head); table.insert(out, n)
  else
    redis.call('ZREM', KEYS[1], q); redis.call('HDEL', KEYS[2], q)
  end
end
return out
"""
_FINISH = """
if redis.call('LINDEX', KEYS[3], 0) == ARGV[2] then redis.call('LPOP', KEYS[3]) end
redis.call('HDEL', KEYS[2], KEYS[3])
if redis.call('LLEN', KEYS[3]) > 0 then
  redis.call('ZADD', KEYS[1], ARGV[1], KEYS[3])
else
  redis.call('ZREM', KEYS[1], KEYS[3])
end
return 1
"""
_DROP = """
local queues = redis.call('SMEMBERS', KEYS[3])
for _, q in ipairs(queues) do
  redis.call('DEL', q); redis.call('ZREM', KEYS[1], q); redis.call('HDEL', KEYS[2], q)
end
redis.call('DEL', KEYS[3])
return #queues
"""


def queue_item(fields: Mapping[Any, Any]) -> bytes:
    """What a webhook queue holds for one rx feed entry: the sealed entry packed (its
    routing fields readable, the change sealed), or a plaintext entry's JSON."""
    if sealing.is_sealed(fields):
        return sealing.pack({k: v for k, v in fields.items() if text(k) not in _FEED_ONLY})
    data = fields.get(b"data", fields.get("data", b""))
    return data if isinstance(data, bytes) else data.encode()


_FEED_ONLY = frozenset({"pos", "prev"})


def item_ids(item: bytes) -> tuple[str, str]:
    """The (event id, user id) a queued item names, without opening it."""
    fields = sealing.unpack(item) if sealing.is_packed(item) else orjson.loads(item)
    return str(fields["event_id"]), str(fields["user_id"])


#: KEYS due, tries, then (queue, its subscription's set) per subscription; ARGV the item to
#: keep (a notice already queued; '' for none), now ms -> how many queues held something
#: else. A queue holding the kept item alone is left as it is (due time, attempt count).
_PURGE = """
local purged = 0
for i = 3, #KEYS, 2 do
  local q, qs = KEYS[i], KEYS[i + 1]
  local keep = ARGV[1] ~= '' and redis.call('LPOS', q, ARGV[1])
  if not (keep and redis.call('LLEN', q) == 1) then
    purged = purged + redis.call('DEL', q)
    redis.call('ZREM', KEYS[1], q); redis.call('HDEL', KEYS[2], q); redis.call('SREM', qs, q)
    if keep then
      redis.call('RPUSH', q, ARGV[1]); redis.call('SADD', qs, q)
      redis.call('ZADD', KEYS[1], 'NX', ARGV[2], q)
    end
  end
end
return purged
"""


def queue_key(sub_id: str, user_id: str) -> str:
    return f"{TAG}:q:{sub_id}:{user_id}"


def queues_of(sub_id: str) -> str:
    return f"{TAG}:qs:{sub_id}"


def seen_key(sub_id: str, event_id: str) -> str:
    return f"{TAG}:seen:{sub_id}:{event_id}"


def sub_of(queue: str) -> str:
    """The subscription id of a queue key."""
    return queue.removeprefix(f"{TAG}:q:").split(":", 1)[0]


class Queues:
    """The Redis side of delivery: every write is one atomic script."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._enqueue = redis.register_script(_ENQUEUE)
        self._claim = redis.register_script(_CLAIM)
        self._finish = redis.register_script(_FINISH)
        self._drop = redis.register_script(_DROP)
        self._purge = redis.register_script(_PURGE)

    async def enqueue(
        self, sub_id: str, user_id: str, event_id: str, item: bytes, now_ms: int
    ) -> bool:
        """Append a change to its queue once (dedupe by event id for a week); True if new."""
        keys = [seen_key(sub_id, event_id), queue_key(sub_id, user_id), DUE, queues_of(sub_id)]
        return bool(await self._enqueue(keys=keys, args=[item, SEEN_TTL, now_ms]))

    async def claim(self, now_ms: int, lease_ms: int, limit: int) -> list[tuple[str, bytes, int]]:
        """Due heads as (queue, item, attempt number), each leased until ``now + lease``."""
        flat = await self._claim(keys=[DUE, TRIES], args=[now_ms, now_ms + lease_ms, limit])
        return [
            (text(flat[i]), bytes(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)
        ]

    async def finish(self, queue: str, item: bytes, now_ms: int) -> None:
        """The head is done (delivered or dead-lettered): pop it, make the next one due."""
        await self._finish(keys=[DUE, TRIES, queue], args=[now_ms, item])

    async def retry_at(self, queue: str, due_ms: int) -> None:
        """Schedule the head's next attempt (unless the queue was dropped meanwhile)."""
        await self.redis.zadd(DUE, {queue: due_ms}, xx=True)

    async def release(self, queue: str, now_ms: int) -> None:
        """Give a claimed head back without counting an attempt."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(TRIES, queue, -1)
        pipe.zadd(DUE, {queue: now_ms}, xx=True)
        await pipe.execute()

    async def drop(self, sub_id: str) -> int:
        """Delete every queue of a subscription; returns how many."""
        return int(await self._drop(keys=[DUE, TRIES, queues_of(sub_id)]))

    async def purge_user(
        self, sub_ids: Sequence[str], user_id: str, keep: bytes, now_ms: int
    ) -> int:
        """Delete ``user_id``'s queue of each subscription (erasure), with its place in the due
        set, its attempt count and its subscription's set, in one script; an item equal to
        ``keep`` (the user's erasure notice, queued by an earlier run) is queued again alone
        (left untouched if it is alone already). Returns how many queues were deleted."""
        keys = [DUE, TRIES]
        for sub_id in sub_ids:
            keys += [queue_key(sub_id, user_id), queues_of(sub_id)]
        return int(await self._purge(keys=keys, args=[keep, now_ms]))

    async def pending(self) -> int:
        """How many queues have something to deliver."""
        return int(await self.redis.zcard(DUE))


__all__ = [
    "DUE",
    "TAG",
    "TRIES",
    "Queues",
    "item_ids",
    "queue_item",
    "queue_key",
    "queues_of",
    "seen_key",
    "sub_of",
]
