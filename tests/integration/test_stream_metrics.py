"""Stream gauges: lag, pending and dead letters as Prometheus reads them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from services.prescriber.feeds.consumer import GROUP
from services.prescriber.feeds.metrics import StreamMetrics
from shared.keys import Keys
from shared.streams import ensure_groups

pytestmark = pytest.mark.anyio


async def test_gauges_follow_lag_pending_and_dead_letters(redis: Redis) -> None:
    """Five entries, two delivered and unacked, one dead letter: the gauges say 3, 2 and 1."""
    keys = Keys(2)
    await ensure_groups(redis, keys.feeds(), GROUP)
    feed = keys.feed(1)
    for i in range(5):
        await redis.xadd(feed, {"n": i})
    await redis.xreadgroup(GROUP, "c", {feed: ">"}, count=2)
    await redis.xadd(keys.dlq, {"error": "x"})
    registry = CollectorRegistry()
    await StreamMetrics(redis, keys, registry).refresh()
    labels = {"stream": feed, "group": GROUP}
    assert registry.get_sample_value("backtrack_consumer_lag", labels) == 3
    assert registry.get_sample_value("backtrack_consumer_pending", labels) == 2
    assert registry.get_sample_value("backtrack_dead_letters") == 1
    idle = {"stream": keys.feed(0), "group": GROUP}
    assert registry.get_sample_value("backtrack_consumer_lag", idle) == 0
