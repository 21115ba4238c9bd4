"""The FastStream broker for a Redis URL: one server or a Redis Cluster.

A ``redis+cluster://host:port`` URL (see ``shared.redis_store.connect``) gives
FastStream's ``RedisClusterBroker`` seeded with that node: its stream
subscribers read each feed (XREADGROUP, XACK) on the node that owns the feed's
slot, so one broker consumes every partition wherever it lives.
"""

from __future__ import annotations

from typing import Any

from faststream.redis import RedisBroker, RedisClusterBroker

from shared.redis_store import is_cluster_url, node_url


def broker_for(url: str, **options: Any) -> RedisBroker:
    """A ``RedisBroker`` for ``url``, a ``RedisClusterBroker`` for a cluster URL."""
    if is_cluster_url(url):
        return RedisClusterBroker(node_url(url), **options)
    return RedisBroker(url, **options)


__all__ = ["broker_for"]
