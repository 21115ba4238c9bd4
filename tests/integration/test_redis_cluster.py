"""RedisStore and the feed consumers' commands on a local 3-master Redis Cluster."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import RedisCluster as SyncRedisCluster

from services.prescriber.feeds.consumer import GROUP
from shared import redis_cluster as cluster_module
from shared.broker import broker_for
from shared.events import PainLogged
from shared.keys import Keys
from shared.redis_cluster import ClusterServer
from shared.redis_store import RedisStore, connect, is_cluster_url, node_url, ping
from shared.store import Appended, StoreUnavailable
from shared.streams import ensure_groups
from tests.integration.events_factory import make_pain

pytestmark = pytest.mark.anyio
USERS = [f"u-{i}" for i in range(40)]


def test_cluster_urls_select_the_cluster_client_and_broker() -> None:
    """redis+cluster:// (and rediss+cluster://) URLs mean a cluster; plain ones do not."""
    assert is_cluster_url("redis+cluster://10.0.0.1:7000")
    assert is_cluster_url("rediss+cluster://u:p@h:7000")
    assert not is_cluster_url("redis://h:6379/0")
    assert node_url("redis+cluster://u:p@h:7000") == "redis://u:p@h:7000"
    assert node_url("rediss+cluster://h:7000") == "rediss://h:7000"
    assert node_url("redis://h:6379/0") == "redis://h:6379/0"
    assert type(broker_for("redis+cluster://h:7000")).__name__ == "RedisClusterBroker"
    assert type(broker_for("redis://h:6379")).__name__ == "RedisBroker"


def test_cluster_formed_by_hand_without_redis_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a redis-cli the launcher assigns the slots and MEETs the nodes itself."""
    monkeypatch.setattr(cluster_module, "find_cli", lambda binary: None)
    with ClusterServer.start(masters=3) as cluster:
        client = SyncRedisCluster.from_url(node_url(cluster.url))
        try:
            assert len(client.get_primaries()) == 3
            for feed in Keys(16).feeds():
                assert client.xadd(feed, {"k": "v"})
            assert client.dbsize(target_nodes=SyncRedisCluster.PRIMARIES) == 16
        finally:
            client.close()


async def test_one_batch_spreads_over_every_master(
    redis_cluster: ClusterServer, cluster_redis: Redis, cluster_store: RedisStore
) -> None:
    """One append_many across 16 partitions lands on all three masters, each user intact."""
    assert isinstance(cluster_redis, RedisCluster)
    events = [make_pain(i % 11, i, user_id=user) for i, user in enumerate(USERS * 2)]
    results = await cluster_store.append_many(events)
    assert [r.status for r in results] == ["accepted"] * len(events)
    again = await cluster_store.append_many(events)
    assert [r.position for r in again] == [r.position for r in results]
    for url in redis_cluster.urls:
        node = Redis.from_url(url)
        try:
            assert await node.dbsize() > 0
        finally:
            await node.aclose()
    for user in USERS:
        assert [e for _, e in await cluster_store.history(user)] == [
            e for e in events if e.user_id == user
        ]


async def test_consumer_commands_route_to_each_feed(
    cluster_redis: Redis, cluster_store: RedisStore
) -> None:
    """Group creation, XREADGROUP, XAUTOCLAIM and XACK work on every partition feed."""
    keys = Keys(16)
    await ensure_groups(cluster_redis, keys.feeds(), GROUP)
    await ensure_groups(cluster_redis, keys.feeds(), GROUP)  # BUSYGROUP is fine
    await cluster_store.append_many([make_pain(user_id=user) for user in USERS])
    for feed in keys.feeds():
        read = await cluster_redis.xreadgroup(GROUP, "c1", {feed: ">"}, count=100)
        ids = [entry_id for _, entries in read for entry_id, _ in entries]
        _, claimed, _ = await cluster_redis.xautoclaim(feed, GROUP, "c2", 0, "0-0")
        assert [entry_id for entry_id, _ in claimed] == ids
        if ids:
            assert await cluster_redis.xack(feed, GROUP, *ids) == len(ids)
    assert sum([await cluster_redis.xlen(feed) for feed in keys.feeds()]) == len(USERS)


@pytest.mark.fault
async def test_a_dead_master_is_unavailable_then_recovers() -> None:
    """A killed master makes appends raise StoreUnavailable fast and ping False; then heals."""
    with ClusterServer.start(masters=3) as cluster:
        client = connect(cluster.url)
        try:
            store = RedisStore(client, partitions=16)
            kept = make_pain(user_id="u-1")
            first = await store.append(kept)
            cluster.nodes[1].kill()
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.append_many([make_pain(user_id=user) for user in USERS])
            assert time.monotonic() - started < 5
            assert await ping(client) is False
            cluster.nodes[1].restart()
            deadline = time.monotonic() + 15
            while not await ping(client) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            again = await _retrying(store, kept, deadline)
            assert again.status == "duplicate"
            assert again.position == first.position
        finally:
            await client.aclose()


async def _retrying(store: RedisStore, event: PainLogged, deadline: float) -> Appended:
    while True:
        try:
            return await store.append(event)
        except StoreUnavailable:
            assert time.monotonic() < deadline, "cluster did not recover"
            await asyncio.sleep(0.1)
