"""The PatientErased notice through the real dispatcher to real HTTP receivers on localhost."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from services.channels.dispatcher import Dispatcher, log_key
from services.channels.options import ChannelSettings
from services.channels.queues import DUE
from services.channels.webhooks import new_secret
from services.prescriber.erasure import Eraser
from shared.data_keys import DataKeys
from shared.keys import DLQ, Keys
from shared.redis_store import RedisStore
from shared.settings import Settings
from tests.erasure_setup import entries_of, populate, subscribe
from tests.webhook_receiver import Receiver, receiver_factory

pytestmark = pytest.mark.anyio
KEYS = Keys(16)
USER = "zq8-notice"


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    with receiver_factory() as start:
        yield start


@contextlib.asynccontextmanager
async def dispatching(redis_url: str, redis: Redis) -> AsyncIterator[Dispatcher]:
    """The dispatcher loop alone (no feed consumer), started once the erasure has run, so
    the change queued before it can only have been deleted: it delivers what is queued."""
    settings = ChannelSettings(
        redis_url=redis_url,
        webhook_allow_private=True,
        webhook_backoff=(0.05, 0.05, 0.05),
        webhook_timeout=1.0,
        webhook_lease=3.0,
    )
    running = Dispatcher(redis, RedisStore(redis, partitions=16), settings)
    async with running.running(interval=0.02):
        yield running


async def _erase(redis: Redis, receiver: Receiver) -> str:
    """Subscribe ``receiver``, give USER data (a change queued for it), erase USER."""
    receiver.secret = new_secret()
    sub_id = await subscribe(redis, url=receiver.url, secret=receiver.secret)
    await populate(redis, KEYS, USER, [sub_id])
    settings = Settings()
    data_keys = DataKeys(redis, KEYS, settings.master_keys())
    await Eraser(redis, KEYS, data_keys, settings.token_lifetimes()).erase(USER, "cli:t")
    return sub_id


async def _until(check: Callable[[], Any], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _sample(dispatcher: Dispatcher, outcome: str) -> float:
    value = dispatcher.metrics.registry.get_sample_value(
        "backtrack_webhook_attempts_total", {"outcome": outcome}
    )
    assert value is not None
    return value


async def test_a_failed_notice_is_retried_with_the_same_id_and_only_the_notice_is_sent(
    redis_url: str, redis: Redis, receivers: Callable[..., Receiver]
) -> None:
    """500 then 200: two signed posts of the notice under one webhook-id; the change queued
    before the erasure is never sent; the delivery log shows both attempts as PatientErased."""
    hook = receivers(script=[500])
    sub_id = await _erase(redis, hook)

    async def delivered() -> bool:
        return len(hook.delivered()) == 1 and await redis.zcard(DUE) == 0

    async with dispatching(redis_url, redis):
        await _until(delivered)
    assert [r.status for r in hook.received] == [500, 200]
    assert all(r.verified for r in hook.received)
    assert {r.webhook_id for r in hook.received} == {hook.received[0].webhook_id}
    assert all(r.body["type"] == "PatientErased" for r in hook.received)
    log: Any = await redis.xrevrange(log_key(sub_id))
    statuses = [(f[b"type"], f[b"status"], f[b"attempt"]) for _, f in log]
    assert statuses == [(b"PatientErased", b"200", b"2"), (b"PatientErased", b"500", b"1")]


async def test_a_notice_out_of_retries_is_given_up_without_a_dead_letter(
    redis_url: str, redis: Redis, receivers: Callable[..., Receiver]
) -> None:
    """Every attempt fails: after the last backoff step the queue is empty and bt:dlq holds
    nothing naming the erased patient."""
    hook = receivers(default=500)
    await _erase(redis, hook)

    async with dispatching(redis_url, redis) as dispatcher:

        async def given_up() -> bool:
            return _sample(dispatcher, "dead") == 1 and await redis.zcard(DUE) == 0

        await _until(given_up)
    assert len(hook.received) == 4
    assert await entries_of(redis, DLQ, USER, "f:user_id") == 0
