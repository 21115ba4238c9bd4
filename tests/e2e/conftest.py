"""The stack as real processes: ingest and prescriber on free ports, a real Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from services.cli.stack import Stack
from shared.redis_server import free_port
from shared.settings import Settings
from tests.redis_server import RedisEndpoint
from tests.webhook_receiver import Receiver, receiver_factory

SECRET = "e2e-secret"


@pytest.fixture(scope="module")
def stack(redis_server: RedisEndpoint) -> Iterator[Stack]:
    """The services on a flushed test Redis, shared by a module's tests.

    Tests sharing it use their own user ids.
    """
    with running_stack(redis_server.url) as running:
        yield running


@contextmanager
def running_stack(redis_url: str, **overrides: Any) -> Iterator[Stack]:
    """The services on ``redis_url``, flushed first, with ``stack_settings(**overrides)``."""
    with redis.Redis.from_url(redis_url) as client:
        client.flushall()
    with Stack(stack_settings(redis_url, **overrides), quiet=True) as running:
        yield running


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Start webhook receivers on free loopback ports; all stop with the test."""
    with receiver_factory() as start:
        yield start


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
