"""The webhook channel's side of the rx feeds: consumer group ``channel-webhook``.

One FastStream batch subscriber per partition rx feed (MANUAL ack) hands its
entries to ``Dispatcher.enqueue`` and acks after they are queued. Enqueueing
is idempotent (per subscription and event id), so an entry left pending by a
crash is simply reclaimed (XAUTOCLAIM) and enqueued again.
"""

from __future__ import annotations

from typing import Any

import structlog
from faststream import AckPolicy
from faststream.redis import RedisBroker, RedisStreamMessage, StreamSub
from redis.asyncio import Redis

from services.channels.dispatcher import GROUP, Dispatcher
from shared.broker import raw_entries
from shared.keys import Keys
from shared.streams import START
from shared.streams import ensure_groups as ensure_rx_groups

log = structlog.get_logger("backtrack.channel.webhook")


async def ensure_groups(redis: Redis, keys: Keys) -> None:
    """The webhook group on every rx feed, from its start: changes fed before a
    subscription existed never match it, so starting from 0 only catches up what this
    channel has not seen yet."""
    await ensure_rx_groups(redis, keys.rxfeeds(), GROUP)


def subscribe_webhook_channel(
    broker: RedisBroker, redis: Redis, keys: Keys, consumer: str, dispatcher: Dispatcher
) -> None:
    """One batch subscriber per rx feed: enqueue for matching subscriptions, then ack."""
    for partition in range(keys.partitions):
        stream = keys.rxfeed(partition)
        sub = StreamSub(
            stream,
            group=GROUP,
            consumer=consumer,
            batch=True,
            max_records=200,
            polling_interval=100,
        )
        handler = _handler(dispatcher)
        handler.__name__ = f"webhook_changes_p{partition:02d}"
        broker.subscriber(stream=sub, ack_policy=AckPolicy.MANUAL, parser=raw_entries)(handler)


def _handler(dispatcher: Dispatcher) -> Any:
    # Only ``body`` and ``msg`` as parameters: FastStream reads any other one
    # (even with a default) as a field of the message body.
    async def on_changes(body: list[Any], msg: RedisStreamMessage) -> None:
        raw = msg.raw_message
        ids = raw["message_ids"]
        data: list[Any] = list(raw["data"])
        await dispatcher.enqueue(list(zip(ids, data, strict=True)))
        await msg.ack()  # XACK of the whole batch; also tells FastStream it is settled

    return on_changes


async def sweep_pending(
    redis: Redis, keys: Keys, consumer: str, dispatcher: Dispatcher, min_idle_ms: int
) -> int:
    """Reclaim rx feed entries idle longer than ``min_idle_ms``, enqueue and ack them."""
    total = 0
    for stream in keys.rxfeeds():
        _, entries, _ = await redis.xautoclaim(
            stream, GROUP, consumer, min_idle_ms, START, count=200
        )
        if entries:
            await dispatcher.enqueue(entries)
            await redis.xack(stream, GROUP, *[entry_id for entry_id, _ in entries])
            total += len(entries)
    if total:
        log.info("webhook_feed_reclaimed", entries=total)
    return total


__all__ = ["ensure_groups", "subscribe_webhook_channel", "sweep_pending"]
