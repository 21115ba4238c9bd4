"""Prometheus gauges for what the streams hold: consumer lag, pending entries, dead letters.

Read from XINFO GROUPS and XLEN by a background task every ``interval``
seconds (a scrape never waits on Redis), for every consumer group on the
partition feeds and prescription feeds: the prescriber, and each channel.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from prometheus_client import CollectorRegistry, Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import tasks
from shared.keys import Keys
from shared.streams import text

log = structlog.get_logger(__name__)


class StreamMetrics:
    def __init__(self, redis: Redis, keys: Keys, registry: CollectorRegistry) -> None:
        self.redis = redis
        self.keys = keys
        labels = ("stream", "group")
        self.lag = Gauge(
            "backtrack_consumer_lag",
            "Entries not yet delivered to the group",
            labels,
            registry=registry,
        )
        self.pending = Gauge(
            "backtrack_consumer_pending",
            "Entries delivered but not acknowledged",
            labels,
            registry=registry,
        )
        self.dead = Gauge(
            "backtrack_dead_letters", "Entries in the dead-letter stream", registry=registry
        )

    async def refresh(self) -> None:
        """Read every feed's groups once and set the gauges."""
        for stream in (*self.keys.feeds(), *self.keys.rxfeeds()):
            try:
                groups = await self.redis.xinfo_groups(stream)
            except RedisError:  # a feed nobody has written to yet
                continue
            for group in groups:
                name = text(group["name"])
                self.lag.labels(stream, name).set(group.get("lag") or 0)
                self.pending.labels(stream, name).set(group["pending"])
        self.dead.set(await self.redis.xlen(self.keys.dlq))

    @contextlib.asynccontextmanager
    async def running(self, interval: float = 5.0) -> AsyncIterator[StreamMetrics]:
        async def loop() -> None:
            while True:
                try:
                    await self.refresh()
                except RedisError as exc:
                    log.warning("stream_metrics_failed", error=type(exc).__name__)
                await asyncio.sleep(interval)

        task = asyncio.create_task(loop(), name="stream-metrics")
        try:
            yield self
        finally:
            await tasks.stop(task)
