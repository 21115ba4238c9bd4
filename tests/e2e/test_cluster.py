"""The stack on a local 3-master Redis Cluster: ingest and prescriber as real processes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from redis.cluster import RedisCluster

from services.cli.stack import Stack
from services.prescriber.feeds.consumer import GROUP
from shared.keys import Keys
from shared.redis_cluster import ClusterServer
from shared.redis_store import node_url
from tests.e2e.conftest import stack_settings
from tests.e2e.test_pipeline import _auth, _enrolled, _pain, _started, _wait_for

PARTITIONS = 16
USERS = [f"cl-{i}" for i in range(12)]


@pytest.fixture(scope="module")
def cluster_stack(redis_cluster: ClusterServer) -> Iterator[Stack]:
    """ingest + prescriber on the flushed test cluster, 16 partitions over 3 masters."""
    redis_cluster.flushall()
    settings = stack_settings(redis_cluster.url, partitions=PARTITIONS)
    with Stack(settings, quiet=True) as running:
        yield running


@pytest.fixture(scope="module")
def cluster(redis_cluster: ClusterServer) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(node_url(redis_cluster.url))
    try:
        yield client
    finally:
        client.close()


def test_users_on_every_node_get_prescriptions(cluster_stack: Stack, cluster: RedisCluster) -> None:
    """Users whose partitions live on all three masters each get their first prescription."""
    keys = Keys(PARTITIONS)
    owners = {cluster.get_node_from_key(keys.history(u)).name for u in USERS}
    assert len(owners) == 3
    for user in USERS:
        events = [_started(user), _pain(user, 24, 4)]
        reply = httpx.post(
            f"{cluster_stack.ingest_url}/v1/events/batch",
            json={"events": events},
            headers=_enrolled(cluster_stack, user),
        )
        assert reply.status_code == 202
        assert [r["status"] for r in reply.json()["results"]] == ["accepted"] * 2
    operator = _auth("operator", None)
    for user in USERS:
        url = f"{cluster_stack.clinic_url}/v1/users/{user}/prescription"
        body = _wait_for(url, operator, lambda b: True)
        assert body["user_id"] == user
        assert body["change"] == "started"
    _wait_until_acked(cluster, keys)


def _wait_until_acked(cluster: RedisCluster, keys: Keys, timeout: float = 10) -> None:
    """Every partition feed's prescriber group ends with nothing pending (XACK on each node)."""
    deadline = time.monotonic() + timeout
    while True:
        pending = sum(int(cluster.xpending(feed, GROUP)["pending"]) for feed in keys.feeds())
        if pending == 0:
            return
        assert time.monotonic() < deadline, f"{pending} feed entries still pending"
        time.sleep(0.1)


def test_duplicates_are_stored_once_on_the_cluster(
    cluster_stack: Stack, cluster: RedisCluster
) -> None:
    """Events posted twice are stored once in the user's history and emit no extra change."""
    user = "cl-dup"
    device = _enrolled(cluster_stack, user)
    events = [_started(user), *(_pain(user, 24 * d, 8) for d in range(1, 4))]
    url = f"{cluster_stack.ingest_url}/v1/events/batch"
    first = httpx.post(url, json={"events": events}, headers=device).json()["results"]
    again = httpx.post(url, json={"events": events}, headers=device).json()["results"]
    assert [r["status"] for r in first] == ["accepted"] * 4
    assert [r["status"] for r in again] == ["duplicate"] * 4
    assert [r["position"] for r in again] == [r["position"] for r in first]
    assert cluster.xlen(Keys(PARTITIONS).history(user)) == 4
    rx_url = f"{cluster_stack.clinic_url}/v1/users/{user}/prescriptions"
    _wait_for(rx_url, device, lambda b: len(b) >= 1)
    _wait_until_acked(cluster, Keys(PARTITIONS))
    final = httpx.get(rx_url, headers=device).json()
    assert len({c["event_id"] for c in final}) == len(final)
    assert [c["version"] for c in final] == list(range(1, len(final) + 1))


def test_both_services_ready_on_the_cluster(cluster_stack: Stack) -> None:
    """/readyz pings every cluster master and answers 200 on both services."""
    assert httpx.get(f"{cluster_stack.ingest_url}/readyz").status_code == 200
    assert httpx.get(f"{cluster_stack.clinic_url}/readyz").status_code == 200
