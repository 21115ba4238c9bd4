"""Open SSE streams counted per owner in Redis: capped, renewed while open, given back."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from services.channels.slots import StreamSlots, owner_of, slots_key
from shared.auth import Principal
from shared.settings import Settings

pytestmark = pytest.mark.anyio


async def test_an_owner_gets_its_cap_and_no_more(redis: Redis) -> None:
    """Two slots of a cap of two are taken; the third is refused until one is given back."""
    slots = StreamSlots(redis, lease_seconds=30)
    first, second = await slots.take("clinic:a", 2), await slots.take("clinic:a", 2)
    assert first is not None
    assert second is not None
    assert await slots.take("clinic:a", 2) is None
    assert await slots.take("clinic:b", 2) is not None  # another owner, its own cap
    await first.release()
    assert await slots.take("clinic:a", 2) is not None


async def test_slots_of_a_dead_process_come_back_after_the_lease(redis: Redis) -> None:
    """Slots nobody renews (their process was killed) lapse, and the owner may open again."""
    slots = StreamSlots(redis, lease_seconds=1)
    for _ in range(2):
        assert await slots.take("clinic:dead", 2) is not None
    started = time.monotonic()
    while await slots.take("clinic:dead", 2) is None:
        assert time.monotonic() - started < 10, "the lapsed slots never came back"
        await asyncio.sleep(0.05)
    print(f"lapsed slots came back after {time.monotonic() - started:.2f} s (lease 1 s)")


async def test_a_held_slot_is_renewed_then_given_back(redis: Redis) -> None:
    """While held, its expiry moves on past the first lease; when the stream ends it is gone."""
    slots = StreamSlots(redis, lease_seconds=1)
    slot = await slots.take("user:u", 1)
    assert slot is not None
    first = await redis.zscore(slot.key, slot.stream)
    async with slot.held():
        while (await redis.zscore(slot.key, slot.stream) or 0) < first + 1000:
            await asyncio.sleep(0.05)  # two renewals later it expires a lease after the first
        assert await slots.take("user:u", 1) is None
    assert await redis.zcard(slot.key) == 0


async def test_a_cancelled_stream_still_gives_its_slot_back(redis: Redis) -> None:
    """A client that goes away cancels the stream's task: the slot is released all the same."""
    slots = StreamSlots(redis, lease_seconds=30)
    slot = await slots.take("clinic:c", 1)
    assert slot is not None
    entered = asyncio.Event()

    async def stream() -> None:
        async with slot.held():
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(stream())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await redis.zcard(slots_key("clinic:c")) == 0


async def test_owners_and_caps_per_role() -> None:
    """Clinics count per clinic, devices per user, operators in one pool with a clinic's cap."""
    settings = Settings(sse_max_streams_per_clinic=7, sse_max_streams_per_user=2)
    assert owner_of(Principal("clinic", "c-1"), settings) == ("clinic:c-1", 7)
    assert owner_of(Principal("device", "p-1"), settings) == ("user:p-1", 2)
    assert owner_of(Principal("operator", None), settings) == ("operator", 7)
