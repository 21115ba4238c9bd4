"""The channels' FastStream parser on real Redis: entries arrive as Redis returned them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faststream import AckPolicy
from faststream.redis import RedisStreamMessage, StreamSub
from redis.asyncio import Redis

from shared import codec
from shared.broker import broker_for, raw_entries
from tests.integration.events_factory import make_change

pytestmark = pytest.mark.anyio


async def test_a_batch_subscriber_gets_the_raw_entries_and_acks_them(
    redis_url: str, redis: Redis
) -> None:
    """Every entry reaches the handler untouched, even one that is not JSON or UTF-8,
    in order with its id; FastStream's body is empty; the ack covers the batch."""
    stream = "bt:test:rxfeed"
    change = make_change(1)
    written = [
        codec.to_fields(change),
        {"data": b"\xff\xfe not json"},
        {"pos": "1-0", "data": b"[1, 2]"},
    ]
    await redis.xgroup_create(stream, "g", id="0", mkstream=True)
    ids = [await redis.xadd(stream, fields) for fields in written]
    got: list[Any] = []
    done = asyncio.Event()
    broker = broker_for(redis_url)
    sub = StreamSub(stream, group="g", consumer="c", batch=True, max_records=10)

    @broker.subscriber(stream=sub, ack_policy=AckPolicy.MANUAL, parser=raw_entries)
    async def on_entries(body: list[Any], msg: RedisStreamMessage) -> None:
        got.append((body, list(msg.raw_message["message_ids"]), list(msg.raw_message["data"])))
        await msg.ack()
        done.set()

    async with broker:
        await broker.start()
        await asyncio.wait_for(done.wait(), 10)
    [(body, message_ids, entries)] = got
    assert body == []
    assert message_ids == ids
    assert entries[1] == {b"data": b"\xff\xfe not json"}
    assert entries[2] == {b"pos": b"1-0", b"data": b"[1, 2]"}
    assert codec.from_fields(entries[0]) == change
    assert (await redis.xpending(stream, "g"))["pending"] == 0
