"""Open what the services sealed, from a test's synchronous Redis client.

The services seal each entry with its user's data key (``shared.data_keys``);
tests that read Redis directly open entries here, with the master key the
test environment gives every process (``Settings().master_keys()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio as aioredis

from shared import codec, sealing
from shared.data_keys import DataKeys
from shared.events import Event
from shared.keys import Keys
from shared.redis_store import RedisStore
from shared.sealing import DataKey
from shared.settings import Settings


def opened(client: redis.Redis, fields: Mapping[Any, Any], partitions: int) -> dict[Any, Any]:
    """The plain fields of a stream entry a service wrote (a plaintext one as it is)."""
    if not sealing.is_sealed(fields):
        return dict(fields)
    user = sealing.entry_user(fields)
    wrapped: Any = client.get(Keys(partitions).data_key(user))
    assert wrapped is not None, f"{user} has no data key"
    key = DataKey.of(sealing.unwrap(Settings().master_keys(), bytes(wrapped), user))
    return sealing.open_sealed(key, fields)


def decoded(client: redis.Redis, fields: Mapping[Any, Any], partitions: int) -> Event:
    """The event a stream entry a service wrote holds."""
    return codec.from_fields(opened(client, fields, partitions))


def service_store(client: aioredis.Redis, partitions: int) -> RedisStore:
    """A store that seals and opens as the services of a test stack do."""
    data_keys = DataKeys(client, Keys(partitions), Settings().master_keys())
    return RedisStore(client, partitions, data_keys=data_keys)
