"""Reclaims feed entries left pending by a dead or failed consumer (invariant 7).

FastStream reads only new entries (``>``), so pending ones would wait forever.
Every ``interval`` seconds this loop claims entries idle longer than
``min_idle_ms`` (XAUTOCLAIM), hands them to the same handler, and sends any
entry delivered more than ``max_deliveries`` times to the dead-letter stream,
so one poison entry never stalls its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.prescriber.consumer import GROUP, FeedConsumer
from shared import tasks

log = structlog.get_logger(__name__)


class Reclaimer:
    def __init__(
        self,
        redis: Redis,
        consumer: FeedConsumer,
        name: str,
        min_idle_ms: int,
        interval: float = 1.0,
    ) -> None:
        self.redis = redis
        self.consumer = consumer
        self.name = name
        self.min_idle_ms = min_idle_ms
        self.interval = interval
        #: the partitions to sweep: all of them, or only those this instance owns
        self.owned: Callable[[], Iterable[int]] = lambda: range(consumer.keys.partitions)

    async def sweep(self, partition: int) -> int:
        """Claim and handle one partition's idle entries; return how many."""
        _, count = await self._claim(partition, self.min_idle_ms, "0-0")
        return count

    async def take_over(self, partition: int) -> int:
        """Claim and handle every entry pending in ``partition``, whoever holds it, once.

        A new owner calls this first: a dead owner's entries are redone at
        once rather than after ``min_idle_ms``. The claim (XPENDING, then XCLAIM
        JUSTID) is not counted as a delivery, so partitions changing hands
        never push a healthy entry towards the dead-letter cap; one pass over the PEL, so an
        entry that fails again waits for the sweep instead of spinning.
        """
        feed = self.consumer.keys.feed(partition)
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

    async def _claim(self, partition: int, min_idle_ms: int, start: Any) -> tuple[Any, int]:
        feed = self.consumer.keys.feed(partition)
        cursor, entries, _ = await self.redis.xautoclaim(
            feed, GROUP, self.name, min_idle_ms, start, count=100
        )
        if not entries:
            return cursor, 0
        counts: dict[bytes, int] = {
            p["message_id"]: int(p["times_delivered"])  # type: ignore[misc]
            for p in await self.redis.xpending_range(
                feed, GROUP, entries[0][0], entries[-1][0], len(entries) * 2, self.name
            )
        }
        retry: list[tuple[bytes, Any]] = []
        for entry_id, fields in entries:
            if counts.get(entry_id, 0) > self.consumer.max_deliveries:
                error = f"failed {counts[entry_id]} deliveries"
                await self.consumer.dead_letter(feed, entry_id, fields, error)
                await self.redis.xack(feed, GROUP, entry_id)
            else:
                retry.append((entry_id, fields))
        if retry:
            await self.consumer.handle(partition, retry)
        return cursor, len(entries)

    async def run(self) -> None:
        while True:
            for partition in list(self.owned()):
                try:
                    await self.sweep(partition)
                except RedisError as exc:
                    log.warning("reclaim_failed", partition=partition, error=type(exc).__name__)
            await asyncio.sleep(self.interval)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Reclaimer]:
        task = asyncio.create_task(self.run(), name="reclaimer")
        try:
            yield self
        finally:
            await tasks.stop(task)
