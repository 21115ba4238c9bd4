"""The stack as real processes: ingest and prescriber on free ports, a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from services.cli.stack import Stack
from shared.redis_server import free_port
from shared.settings import Settings
from tests.redis_server import RedisEndpoint

SECRET = "e2e-secret"


@pytest.fixture(scope="module")
def stack(redis_server: RedisEndpoint) -> Iterator[Stack]:
    """ingest + prescriber processes on a flushed test Redis, shared by a module's tests.

    Tests sharing it use their own user ids.
    """
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    settings = stack_settings(redis_server.url)
    with Stack(settings, quiet=True) as running:
        yield running


def stack_settings(redis_url: str, **overrides: Any) -> Settings:
    """A test stack's settings on ``redis_url``: free ports, ``SECRET``, 4 partitions and
    quick reclaims, unless ``overrides`` say otherwise."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "secret": SECRET,
        "partitions": 4,
        "ingest_port": free_port(),
        "clinic_port": free_port(),
        "channels_port": free_port(),
        "claim_idle_ms": 1000,
    }
    return Settings(**(values | overrides))
