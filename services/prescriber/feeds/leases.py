"""Partition leases in Redis: at most one live owner per partition (invariant 4).

A lease is one key per partition, ``bt:{pNN}:owner`` (the partition's hash
tag, so it lives in the partition's cluster slot), holding the owner's
instance id with a TTL of ``lease_ms``. It is taken with ``SET NX PX``, and
renewed or released only by a compare-and-set script (only while the value
is still the caller's), so an owner that stops renewing (killed, paused, cut
off) loses the partition when the TTL runs out and nobody else's lease is
ever extended or deleted.

Instances also announce themselves in ``bt:instances`` (a sorted set scored
by last-seen milliseconds, Redis's clock); one not seen for ``lease_ms`` counts as gone.
The live count gives each instance its fair share, ``ceil(K / live)``.
"""

from __future__ import annotations

import math

from redis.asyncio import Redis

from shared.keys import PREFIX, Keys
from shared.streams import text

INSTANCES = f"{PREFIX}:instances"

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def fair_share(partitions: int, live: int) -> int:
    """How many partitions each of ``live`` instances should own: ``ceil(K / live)``."""
    return math.ceil(partitions / max(1, live))


def owner_key(keys: Keys, partition: int) -> str:
    """The lease key of ``partition``: ``bt:{pNN}:owner``."""
    return f"{PREFIX}:{keys.tag(partition)}:owner"


class Leases:
    """One instance's view of the partition leases (all calls are single round trips)."""

    def __init__(self, redis: Redis, keys: Keys, instance: str, lease_ms: int) -> None:
        self.redis = redis
        self.keys = keys
        self.instance = instance
        self.lease_ms = lease_ms

    async def acquire(self, partition: int) -> bool:
        """Take ``partition`` if nobody holds it; True if it is now ours."""
        return bool(
            await self.redis.set(
                owner_key(self.keys, partition), self.instance, nx=True, px=self.lease_ms
            )
        )

    async def renew(self, partition: int) -> bool:
        """Extend our lease by ``lease_ms``; False if it is no longer ours."""
        key = owner_key(self.keys, partition)
        reply = await self.redis.eval(_RENEW, 1, key, self.instance, self.lease_ms)
        return bool(reply)

    async def release(self, partition: int) -> bool:
        """Drop our lease so another instance can take it at once; False if not ours."""
        key = owner_key(self.keys, partition)
        return bool(await self.redis.eval(_RELEASE, 1, key, self.instance))

    async def owner(self, partition: int) -> str | None:
        value = await self.redis.get(owner_key(self.keys, partition))
        return None if value is None else text(value)

    async def heartbeat(self) -> int:
        """Announce this instance, forget the silent ones; return the live count."""
        seconds, micros = await self.redis.time()  # one clock for every host
        now = seconds * 1000 + micros // 1000
        await self.redis.zadd(INSTANCES, {self.instance: now})
        await self.redis.zremrangebyscore(INSTANCES, "-inf", now - self.lease_ms)
        return int(await self.redis.zcard(INSTANCES))

    async def leave(self) -> None:
        """Stop counting this instance (graceful shutdown), so the others grow their share."""
        await self.redis.zrem(INSTANCES, self.instance)


__all__ = ["INSTANCES", "Leases", "fair_share", "owner_key"]
