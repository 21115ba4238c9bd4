"""The FastStream broker for a Redis URL: one server or a Redis Cluster.

A ``redis+cluster://host:port`` URL (see ``shared.redis_store.connect``) gives
FastStream's ``RedisClusterBroker`` seeded with that node: its stream
subscribers read each feed (XREADGROUP, XACK) on the node that owns the feed's
slot, so one broker consumes every partition wherever it lives.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faststream.message import StreamMessage
from faststream.redis import RedisBroker, RedisClusterBroker

from shared.redis_store import is_cluster_url, node_url


def broker_for(url: str, **options: Any) -> RedisBroker:
    """A ``RedisBroker`` for ``url``, a ``RedisClusterBroker`` for a cluster URL."""
    if is_cluster_url(url):
        return RedisClusterBroker(node_url(url), **options)
    return RedisBroker(url, **options)


async def raw_entries(
    message: Mapping[str, Any],
    original: Callable[[Mapping[str, Any]], Awaitable[StreamMessage[Any]]],
) -> StreamMessage[Any]:
    """A batch stream parser that leaves the entries as Redis returned them.

    FastStream's own decodes every entry's ``data`` as JSON and encodes the
    list again as the message body. The channels read the entries from
    ``msg.raw_message["data"]`` and decode them with ``shared.codec``, so this
    parser hands FastStream an empty batch to build the message from (ids,
    channel and ack stay the same) and puts the real entries back: the body is
    ``[]``, and no entry is parsed twice.
    """
    parsed = await original({**message, "data": []})
    parsed.raw_message = message
    return parsed


__all__ = ["broker_for", "raw_entries"]
