"""The SSE stream's access checks on a real Redis: before each event, and while it is quiet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from redis.asyncio import Redis

from services.channels.sse import events
from shared.redis_store import RedisStore
from shared.streams import START
from tests.integration.events_factory import make_change

pytestmark = pytest.mark.anyio


class _Connected:
    """The one thing ``events`` asks of the request: the client is still there."""

    async def is_disconnected(self) -> bool:
        return False


class _Gate:
    """An access check that allows until ``close`` is called, counting its calls."""

    def __init__(self) -> None:
        self.refusal: str | None = None
        self.calls = 0

    async def __call__(self) -> str | None:
        self.calls += 1
        return self.refusal

    def close(self, why: str) -> None:
        self.refusal = why


async def _next(stream: AsyncIterator[bytes]) -> bytes:
    async with asyncio.timeout(10):
        return await anext(stream)


async def test_no_event_is_sent_once_access_is_refused(
    redis: Redis, redis_store: RedisStore
) -> None:
    """The check before each event stops the stream at the first change after access ended,
    though the periodic check is a minute away."""
    await redis_store.append_change(make_change(1))
    gate = _Gate()
    key = redis_store.keys.rx("u-1")
    stream = _stream(redis, redis_store, key, gate, recheck=60.0)
    assert await _next(stream) == b"retry: 2000\n\n"
    first = await _next(stream)
    assert orjson.loads(first.split(b"data: ")[1])["version"] == 1
    assert gate.calls == 1
    gate.close("this token may not read that user")
    await redis_store.append_change(make_change(2))
    assert await _next(stream) == b": closed: this token may not read that user\n\n"
    with pytest.raises(StopAsyncIteration):
        await _next(stream)


async def test_a_quiet_stream_is_checked_and_closed(redis: Redis, redis_store: RedisStore) -> None:
    """With nothing to send, the stream asks again every ``recheck`` seconds and ends, with
    the reason on one line, once the answer is no."""
    gate = _Gate()
    key = redis_store.keys.rx("u-1")
    stream = _stream(redis, redis_store, key, gate, recheck=0.05)
    assert await _next(stream) == b"retry: 2000\n\n"
    last = asyncio.ensure_future(_next(stream))
    while gate.calls < 3:  # asked again and again while nothing comes
        await asyncio.sleep(0.01)
    gate.close("unauthorised:\ntoken expired")
    assert await last == b": closed: unauthorised: token expired\n\n"
    with pytest.raises(StopAsyncIteration):
        await _next(stream)


def _stream(
    redis: Redis, store: RedisStore, key: str, gate: _Gate, recheck: float
) -> AsyncIterator[bytes]:
    """The SSE frames of ``key`` from the start, as the API streams them to a connected
    client: heartbeats a minute apart, ``gate`` asked for access, entries opened."""
    return events(
        _Connected(),  # type: ignore[arg-type]
        redis,
        key,
        START,
        60.0,
        access=gate,
        recheck=recheck,
        data_keys=store.data_keys,
    )
