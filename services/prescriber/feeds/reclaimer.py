"""Reclaims feed entries left pending by a failed batch or a dead consumer (invariant 7).

The feed readers read only new entries (XREADGROUP ``>``), so an entry whose
user failed would stay pending forever. Every ``interval`` seconds this loop
claims, in the partitions this instance owns, entries idle longer than
``min_idle_ms`` (XAUTOCLAIM), hands them to the same ``FeedConsumer``, and
sends any entry delivered more than ``max_deliveries`` times to the
dead-letter stream, so one poison entry never stalls its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.prescriber.feeds.consumer import GROUP, FeedConsumer
from shared import tasks
from shared.streams import START

log = structlog.get_logger(__name__)


class Reclaimer:
    """Sweeps the owned partitions' pending entries: retry, or dead-letter past the cap."""

    def __init__(
        self,
        redis: Redis,
        consumer: FeedConsumer,
        name: str,
        min_idle_ms: int,
        *,
        owned: Callable[[], Iterable[int]] | None = None,
        interval: float = 1.0,
    ) -> None:
        self.redis = redis
        self.consumer = consumer
        self.name = name
        self.min_idle_ms = min_idle_ms
        self.interval = interval
        #: the partitions to sweep: those this instance owns (all of them if not told)
        self.owned = owned or (lambda: range(consumer.keys.partitions))

    async def sweep(self, partition: int) -> int:
        """Claim and handle one partition's idle entries; return how many."""
        _, count = await self._claim(partition, self.min_idle_ms, START)
        return count

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
