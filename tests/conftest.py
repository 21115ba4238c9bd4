"""Shared fixtures: a real Redis for every test that touches Redis.

- ``redis_server`` (session): one server for the whole run (REDIS_URL, a
  testcontainer, or a local redis-server process; see ``tests.redis_server``).
- ``redis_url`` (function): that server's URL, FLUSHALLed before the test.
- ``redis`` (function, async): a ``redis.asyncio.Redis`` from ``shared.redis_store.connect``.
- ``redis_store`` (function, async): a ``RedisStore`` on it (16 partitions).
- ``own_redis_server`` (function): a factory ``(**options) -> RedisServer`` that
  always starts a private process (kill/restart it freely); all stopped after the test.
- ``redis_cluster`` (session): a local 3-master Redis Cluster (``ClusterServer``),
  started on first use only; ``cluster_url`` (function) is its ``redis+cluster://``
  URL, FLUSHALLed first; ``cluster_redis`` / ``cluster_store`` mirror ``redis`` /
  ``redis_store`` on it.

Async tests use ``@pytest.mark.anyio`` (anyio's pytest plugin); the backend is asyncio.

The suite runs as ``BACKTRACK_ENVIRONMENT=test``, set here before anything
reads settings and inherited by every process a test starts: short secrets,
the development secret and webhooks to loopback are allowed. Tests of the
production refusals set their environment explicitly.
"""

from __future__ import annotations

import hashlib
import os

os.environ["BACKTRACK_ENVIRONMENT"] = "test"

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from shared.data_keys import DataKeys
from shared.keys import Keys
from shared.redis_cluster import ClusterServer
from shared.redis_store import RedisStore, connect
from shared.sealing import MasterKey, MasterKeys
from tests.redis_server import RedisEndpoint, RedisServer, session_endpoint


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisEndpoint]:
    endpoint = session_endpoint()
    try:
        yield endpoint
    finally:
        endpoint.close()


@pytest.fixture
def redis_url(redis_server: RedisEndpoint) -> str:
    with SyncRedis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def data_keys_for(client: Redis, partitions: int = 16) -> DataKeys:
    """Data keys under a fixed test master key (what a service builds from its settings)."""
    masters = MasterKeys(MasterKey(hashlib.sha256(b"backtrack test master key").digest()))
    return DataKeys(client, Keys(partitions), masters)


@pytest.fixture
async def redis_store(redis: Redis) -> RedisStore:
    """The store as the services run it: every entry sealed with its user's data key."""
    return RedisStore(redis, partitions=16, data_keys=data_keys_for(redis))


@pytest.fixture
def own_redis_server() -> Iterator[Callable[..., RedisServer]]:
    started: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        server = RedisServer.start(**options)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterServer]:
    cluster = ClusterServer.start(masters=3)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: ClusterServer) -> str:
    redis_cluster.flushall()
    return redis_cluster.url


@pytest.fixture
async def cluster_redis(cluster_url: str) -> AsyncIterator[Redis]:
    client = connect(cluster_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def cluster_store(cluster_redis: Redis) -> RedisStore:
    return RedisStore(cluster_redis, partitions=16, data_keys=data_keys_for(cluster_redis))
