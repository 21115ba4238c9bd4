"""Open SSE streams per owner, counted in Redis across every process that serves them.

The owner of a stream is whoever's token opened it: a clinic (its clinic
id), a device (its user) or the operators (one pool for all of them, with a
clinic's cap: their streams are for looking into a patient's feed, not for
following a population). Each owner has a sorted set ``bt:sse:<owner>`` of
its open streams' ids scored by when each expires (milliseconds, on Redis's
clock). A stream takes its slot with one script (drop the expired, count,
add if under the cap), renews it every third of the lease while it lives,
and gives it back when it closes. A process killed with streams open leaves
members that stop being renewed: they expire after one lease and their slots
come back by themselves; the key itself expires one lease after the last
renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisClusterException, RedisError

from shared import tasks
from shared.auth import Principal
from shared.keys import PREFIX
from shared.settings import Settings
from shared.store import StoreUnavailable

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""
#: KEYS[1] the owner's set; ARGV: stream id, lease ms, cap. Returns 1 if taken, else 0.
_TAKE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)
#: KEYS[1] the owner's set; ARGV: stream id, lease ms. The stream is open: counted again
#: even if a stall let its slot lapse.
_RENEW = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)
_REDIS_DOWN = (RedisError, RedisClusterException, OSError, TimeoutError)


def owner_of(principal: Principal, settings: Settings) -> tuple[str, int]:
    """The owner a principal's streams count under, and that owner's cap."""
    if principal.role == "clinic":
        return f"clinic:{principal.subject}", settings.sse_max_streams_per_clinic
    if principal.role == "device":
        return f"user:{principal.subject}", settings.sse_max_streams_per_user
    return "operator", settings.sse_max_streams_per_clinic


def slots_key(owner: str) -> str:
    return f"{PREFIX}:sse:{owner}"


class StreamSlots:
    """Takes, renews and gives back stream slots; Redis failures are StoreUnavailable."""

    def __init__(self, redis: Redis, lease_seconds: float) -> None:
        self.redis = redis
        self.lease_ms = int(lease_seconds * 1000)
        self._take = redis.register_script(_TAKE)
        self._renew = redis.register_script(_RENEW)

    async def take(self, owner: str, cap: int) -> Slot | None:
        """A slot among ``owner``'s ``cap``, or None when all are held by open streams."""
        slot = Slot(self, slots_key(owner), uuid.uuid4().hex)
        taken = await self._call(self._take, slot.key, [slot.stream, self.lease_ms, cap])
        return slot if taken else None

    async def renew(self, slot: Slot) -> None:
        """Push the slot's expiry one lease ahead (taking it again if it had lapsed)."""
        await self._call(self._renew, slot.key, [slot.stream, self.lease_ms])

    async def release(self, slot: Slot) -> None:
        """Give the slot back now (if Redis is down it lapses after one lease)."""
        with contextlib.suppress(*_REDIS_DOWN):
            await self.redis.zrem(slot.key, slot.stream)

    async def _call(self, script: Any, key: str, args: list[Any]) -> Any:
        try:
            return await script(keys=[key], args=args)
        except _REDIS_DOWN as exc:
            raise StoreUnavailable(f"stream slots unavailable: {type(exc).__name__}") from exc


class Slot:
    """One open stream's place in its owner's set."""

    def __init__(self, slots: StreamSlots, key: str, stream: str) -> None:
        self.slots = slots
        self.key = key
        self.stream = stream

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Renew the slot while the body runs; give it back when it ends, however it ends."""
        renewer = asyncio.create_task(self._renew_forever())
        try:
            yield
        finally:
            # a disconnect cancels the stream: stop renewing and give the slot back all the same
            with anyio.move_on_after(5, shield=True):
                await tasks.stop(renewer)
                await self.release()

    async def release(self) -> None:
        """Give the slot back now."""
        await self.slots.release(self)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.slots.lease_ms / 3000)
            with contextlib.suppress(StoreUnavailable):  # tried again at the next renewal
                await self.slots.renew(self)


__all__ = ["Slot", "StreamSlots", "owner_of", "slots_key"]
