"""The Redis connection of a CLI command: from the settings, closed when the command ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from shared.redis_store import connect
from shared.settings import Settings


@asynccontextmanager
async def redis_of(settings: Settings) -> AsyncIterator[Redis]:
    """A client for ``settings.redis_url``; SystemExit naming the setting when there is none."""
    if not settings.redis_url:
        raise SystemExit("set BACKTRACK_REDIS_URL or pass --redis-url")
    redis = connect(settings.redis_url)
    try:
        yield redis
    finally:
        await redis.aclose()


__all__ = ["redis_of"]
