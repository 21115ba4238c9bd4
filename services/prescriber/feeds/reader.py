"""One partition's feed reader: take over what is pending, then read new entries while allowed.

A new owner first takes over every entry pending in the partition (XPENDING,
then XCLAIM JUSTID, min-idle 0: a dead owner's entries are redone now, not
after the reclaimer's idle time), then loops XREADGROUP ``>`` into
``FeedConsumer.handle``, sending the acknowledgements of each batch in one
round trip with the next read. Before each read, and again before handling
what it returned, it asks whether the partition's lease is still confirmed
(fencing by check); a paused process whose lease lapsed may still overlap a
new owner for one batch, which is safe because processing is idempotent and
deterministic (invariant 2). Entries read but not handled stay pending for
the next owner's take-over (or this one's reclaimer).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.prescriber.feeds.consumer import GROUP, FeedConsumer
from shared.keys import Keys

log = structlog.get_logger(__name__)


def block_ms_for(lease_ms: int) -> int:
    """How long a read waits for entries: a tenth of a lease, 10 to 500 ms.

    Long enough that idle partitions cost little, short enough that readers
    stop fast and notice a lapsed lease within the lease.
    """
    return max(10, min(500, lease_ms // 10))


class FeedReader:
    """Reads partition feeds for one instance (``name``), one batch at a time per partition."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        consumer: FeedConsumer,
        name: str,
        *,
        max_records: int = 200,
        block_ms: int = 500,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.name = name
        self.max_records = max_records
        self.block_ms = block_ms

    async def take_over(self, partition: int) -> int:
        """Claim and handle every entry pending in ``partition``, whoever holds it, once.

        The claim (XPENDING, then XCLAIM JUSTID) is not counted as a delivery,
        so partitions changing hands never push a healthy entry towards the
        dead-letter cap; one pass over the PEL, so an entry that fails again
        waits for the reclaimer's sweep instead of spinning.
        """
        feed = self.keys.feed(partition)
        start: Any = "-"
        total = 0
        while True:
            pending = await self.redis.xpending_range(feed, GROUP, start, "+", 100)
            if not pending:
                return total
            ids: list[Any] = [p["message_id"] for p in pending]
            await self.redis.xclaim(feed, GROUP, self.name, 0, ids, justid=True)
            pipe = self.redis.pipeline(transaction=False)
            for entry_id in ids:
                pipe.xrange(feed, entry_id, entry_id)
            entries = [found[0] for found in await pipe.execute() if found]
            if entries:
                await self.consumer.handle(partition, entries)
            total += len(ids)
            start = b"(" + ids[-1]

    async def consume(
        self, partition: int, stop: asyncio.Event, allowed: Callable[[], bool]
    ) -> None:
        """Take over, then read and handle batches until ``stop``, while ``allowed()``."""
        feed = self.keys.feed(partition)
        taken_over = False
        done: list[bytes] = []  # handled, to be acknowledged with the next read
        try:
            while not stop.is_set():
                if not allowed():  # lease not confirmed lately: do not read
                    await asyncio.sleep(self.block_ms / 1000)
                    continue
                try:
                    if not taken_over:
                        await self.take_over(partition)
                        taken_over = True
                        continue
                    reply = await self._read(feed, done)
                    done = []
                    if not allowed():  # the lease lapsed while the read waited
                        continue
                    for entries in _entries(reply):
                        done += await self.consumer.handle(partition, entries, ack=False)
                except RedisError as exc:
                    log.warning("feed_read_failed", partition=partition, error=type(exc).__name__)
                    await asyncio.sleep(0.5)
                except Exception as exc:  # the batch stays pending: reclaimed, retried, parked
                    # no traceback: an exception's message may quote what an entry holds
                    log.error("feed_batch_failed", partition=partition, error=type(exc).__name__)  # noqa: TRY400
                    await asyncio.sleep(1.0)
        finally:
            if done:
                with contextlib.suppress(RedisError):
                    await self.redis.xack(feed, GROUP, *done)

    async def _read(self, feed: str, done: list[bytes]) -> Any:
        """XREADGROUP the next batch, after acknowledging ``done`` in the same round trip."""
        if not done:
            return await self.redis.xreadgroup(
                GROUP, self.name, {feed: ">"}, self.max_records, self.block_ms
            )
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(feed, GROUP, *done)
        pipe.xreadgroup(GROUP, self.name, {feed: ">"}, self.max_records, self.block_ms)
        _, reply = await pipe.execute()
        return reply


def _entries(reply: Any) -> list[list[Any]]:
    """XREADGROUP's per-stream entry lists (RESP2: ``[[stream, [(id, fields), ...]], ...]``)."""
    return [list(item[1]) for item in reply or () if item[1]]


__all__ = ["FeedReader", "block_ms_for"]
