"""Webhook delivery against real Redis and real HTTP receivers on localhost.

The rx feed consumer (FastStream, group ``channel-webhook``) and the
dispatcher run in the test's event loop; receivers verify every signature
with the ``standardwebhooks`` package.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from faststream.redis import RedisBroker
from redis.asyncio import Redis

from services.channels.dispatcher import GROUP, Dispatcher, log_key
from services.channels.feed import ensure_groups, subscribe_webhook_channel
from services.channels.options import ChannelSettings
from services.channels.queues import DUE, Queues
from services.channels.subscriptions import SubscriptionCreated, SubscriptionLog
from services.channels.webhooks import new_secret
from shared import codec
from shared.keys import DLQ, Keys
from shared.log import configure_logging
from shared.redis_store import RedisStore
from shared.settings import Settings
from tests.integration.events_factory import make_change, make_started
from tests.webhook_receiver import Receiver, receiver_factory

pytestmark = pytest.mark.anyio
Start = Callable[..., Receiver]


@pytest.fixture
def receivers() -> Iterator[Start]:
    """Real webhook receivers on localhost, stopped after the test."""
    with receiver_factory() as start:
        yield start


def _settings(redis_url: str, **overrides: Any) -> ChannelSettings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "webhook_allow_private": True,
        "webhook_backoff": (0.05, 0.05, 0.05),
        "webhook_timeout": 1.0,
        "webhook_lease": 3.0,
    }
    return ChannelSettings(**(values | overrides))


@contextlib.asynccontextmanager
async def _running(
    redis_url: str, redis: Redis, store: RedisStore, interval: float, **overrides: Any
) -> AsyncIterator[Dispatcher]:
    """The rx feed consumer and the dispatcher loop, running against the test Redis."""
    settings = _settings(redis_url, **overrides)
    keys = Keys(16)
    dispatcher = Dispatcher(redis, store, settings)
    await ensure_groups(redis, keys)
    broker = RedisBroker(redis_url, logger=structlog.get_logger("faststream"))
    subscribe_webhook_channel(broker, redis, keys, "test", dispatcher)
    async with broker, dispatcher.running(interval=interval):
        await broker.start()
        yield dispatcher


@pytest.fixture
async def channel(
    redis_url: str, redis: Redis, redis_store: RedisStore
) -> AsyncIterator[Dispatcher]:
    async with _running(redis_url, redis, redis_store, interval=0.02) as dispatcher:
        yield dispatcher


def _attempts(dispatcher: Dispatcher, outcome: str) -> float:
    """The dispatcher's ``backtrack_webhook_attempts_total`` for ``outcome``."""
    value = dispatcher.metrics.registry.get_sample_value(
        "backtrack_webhook_attempts_total", {"outcome": outcome}
    )
    assert value is not None
    return value


async def _enrol(store: RedisStore, *users: str, clinic: str = "clinic-a") -> None:
    for user in users:
        await store.append(make_started(user_id=user, clinic_id=clinic))


async def _subscribe(
    redis: Redis, receiver: Receiver, clinic: str = "clinic-a", users: tuple[str, ...] | None = None
) -> str:
    secret = new_secret()
    receiver.secret = secret
    event = SubscriptionCreated(
        sub_id=f"sub_{len(receiver.received)}_{receiver.port}",
        clinic_id=clinic,
        url=receiver.url,
        user_ids=users,
        secret=secret,
        occurred_at=datetime.now(UTC),
    )
    await SubscriptionLog(redis, Settings().master_keys()).append(event)
    return event.sub_id


async def _until(check: Callable[[], Any], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


async def _quiet(redis: Redis, dispatcher: Dispatcher, within: float = 10.0) -> None:
    """Wait until nothing more can be delivered: every rx feed entry read and acknowledged
    by the webhook group, no delivery due, none in flight."""
    deadline = time.monotonic() + within
    while True:
        busy = dispatcher.in_flight or await redis.zcard(DUE)
        for feed in Keys(16).rxfeeds():
            for group in await redis.xinfo_groups(feed):
                if group["name"] == GROUP.encode():
                    busy = busy or group["lag"] or group["pending"]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise AssertionError("the channel did not settle")
        await asyncio.sleep(0.02)


async def _log(redis: Redis, sub_id: str, count: int) -> list[Any]:
    for _ in range(200):
        entries: list[Any] = await redis.xrange(log_key(sub_id))
        if len(entries) >= count:
            return entries
        await asyncio.sleep(0.02)
    raise AssertionError(f"delivery log has {len(entries)} entries, expected {count}")


async def test_each_change_is_delivered_once_signed_and_in_version_order(
    channel: Dispatcher, redis: Redis, redis_store: RedisStore, receivers: Start
) -> None:
    """Every matching change arrives exactly once, verified, per user in version order."""
    hook = receivers()
    await _enrol(redis_store, "u-1", "u-2")
    await _enrol(redis_store, "other", clinic="clinic-b")
    sub_id = await _subscribe(redis, hook)
    await _enrol(redis_store, "late")  # enrolled after subscribing: still covered
    changes = [
        make_change(v, user_id=u) for v in (1, 2, 3) for u in ("u-1", "u-2", "late", "other")
    ]
    for change in changes:
        await redis_store.append_change(change)
    await _until(lambda: len(hook.delivered()) >= 9)
    await _quiet(redis, channel)
    got = hook.delivered()
    assert len(got) == 9
    assert all(r.verified for r in got)
    expected = {str(c.event_id) for c in changes if c.user_id != "other"}
    assert {r.webhook_id for r in got} == expected
    for user in ("u-1", "u-2", "late"):
        assert [r.body["version"] for r in got if r.body["user_id"] == user] == [1, 2, 3]
    log = await _log(redis, sub_id, 9)
    assert {fields[b"status"] for _, fields in log} == {b"200"}


async def test_three_500s_then_200_is_delivered_on_the_fourth_try(
    channel: Dispatcher, redis: Redis, redis_store: RedisStore, receivers: Start
) -> None:
    """A receiver answering 500 three times gets the change on attempt four, same webhook-id."""
    hook = receivers(script=[500, 500, 500])
    await _enrol(redis_store, "u-1")
    sub_id = await _subscribe(redis, hook)
    change = make_change(1)
    configure_logging("INFO", json=True)  # an earlier test may have left WARNING
    with structlog.testing.capture_logs() as logs:
        await redis_store.append_change(change)
        await _until(lambda: len(hook.delivered()) == 1)
        await _log(redis, sub_id, 4)
    # each attempt's line names the change and the event that caused it
    attempts = [line for line in logs if line["event"] == "webhook_attempt"]
    assert [(a["event_id"], a["caused_by"]) for a in attempts] == [
        (str(change.event_id), str(change.caused_by))
    ] * 4
    assert [r.status for r in hook.received] == [500, 500, 500, 200]
    assert {r.webhook_id for r in hook.received} == {str(change.event_id)}
    assert all(r.verified for r in hook.received)
    log = await _log(redis, sub_id, 4)
    assert [(f[b"attempt"], f[b"status"]) for _, f in log] == [
        (b"1", b"500"),
        (b"2", b"500"),
        (b"3", b"500"),
        (b"4", b"200"),
    ]
    await _until(lambda: _attempts(channel, "delivered") == 1)
    assert [_attempts(channel, o) for o in ("retry", "gone", "dead")] == [3, 0, 0]
    timed = channel.metrics.registry.get_sample_value("backtrack_webhook_latency_seconds_count")
    assert timed == 4


async def test_a_queued_change_is_sent_at_once_not_at_the_next_tick(
    redis_url: str, redis: Redis, redis_store: RedisStore, receivers: Start
) -> None:
    """With a 30 s tick, changes still go out within a second: queueing wakes the loop."""
    hook = receivers()
    await _enrol(redis_store, "u-1")
    await _subscribe(redis, hook)
    async with _running(redis_url, redis, redis_store, interval=30):
        await asyncio.sleep(0.2)  # the first tick has run; the next is 30 s away
        for version in (1, 2):  # the second waits behind the first; its delivery wakes it
            await redis_store.append_change(make_change(version))
        await _until(lambda: len(hook.delivered()) == 2, within=2)


async def test_410_disables_the_subscription(
    channel: Dispatcher, redis: Redis, redis_store: RedisStore, receivers: Start
) -> None:
    """A 410 answer disables the subscription: nothing more is sent and its queues are gone."""
    hook = receivers(script=[410])
    await _enrol(redis_store, "u-1")
    sub_id = await _subscribe(redis, hook)
    await redis_store.append_change(make_change(1))
    await redis_store.append_change(make_change(2))
    await _until(lambda: len(hook.received) == 1)
    for _ in range(100):
        sub = await SubscriptionLog(redis).get(sub_id)
        if sub is not None and sub.status == "disabled":
            break
        await asyncio.sleep(0.02)
    assert sub is not None
    assert sub.status == "disabled"
    await _until(lambda: _attempts(channel, "gone") == 1)
    await redis_store.append_change(make_change(3))
    await _quiet(redis, channel)
    assert len(hook.received) == 1
    assert await redis.zcard(DUE) == 0


async def test_a_hanging_endpoint_does_not_delay_another_subscription(
    redis_url: str, redis: Redis, redis_store: RedisStore, receivers: Start
) -> None:
    """While one endpoint hangs, another gets every change before the hung attempt ends.

    The hung attempt ends only at the 4 s timeout (counted as a retry), so a
    second endpoint whose changes waited behind it would see no delivery
    before that count moved.
    """
    stuck = receivers(hang=6.0)
    fine = receivers()
    await _enrol(redis_store, "u-1", "u-2")
    overrides = {"webhook_timeout": 4.0, "webhook_lease": 8.0}
    async with _running(redis_url, redis, redis_store, 0.02, **overrides) as channel:
        await _subscribe(redis, stuck)
        await _subscribe(redis, fine)
        for version in (1, 2, 3):
            for user in ("u-1", "u-2"):
                await redis_store.append_change(make_change(version, user_id=user))
        await _until(lambda: len(fine.delivered()) == 6)
        assert _attempts(channel, "retry") == 0, "the hung attempt ended first"
        assert len(stuck.received) <= 2  # one head per user in flight, nothing behind it


async def test_the_last_failure_is_dead_lettered_and_the_queue_moves_on(
    channel: Dispatcher, redis: Redis, redis_store: RedisStore, receivers: Start
) -> None:
    """After the last backoff step the change goes to bt:dlq and the next change is delivered."""
    hook = receivers(script=[503] * 4)
    await _enrol(redis_store, "u-1")
    sub_id = await _subscribe(redis, hook)
    first, second = make_change(1), make_change(2)
    await redis_store.append_change(first)
    await redis_store.append_change(second)
    await _until(lambda: len(hook.delivered()) == 1)
    assert [r.body["version"] for r in hook.received] == [1, 1, 1, 1, 2]
    dead = await redis.xrange(DLQ)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"entry_id"] == str(first.event_id).encode()
    assert fields[b"subscription"] == sub_id.encode()
    assert b"gave up after 4 attempts" in fields[b"error"]
    await _until(lambda: _attempts(channel, "delivered") == 1)
    assert [_attempts(channel, o) for o in ("retry", "dead")] == [3, 1]


async def test_each_attempt_decodes_its_change_once_through_the_codec(
    channel: Dispatcher,
    redis: Redis,
    redis_store: RedisStore,
    receivers: Start,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Posting, logging and dead-lettering an attempt share one codec decode of the queued bytes."""
    decoded: list[bytes | str] = []
    loads = codec.loads

    def counting(data: bytes | str) -> Any:
        decoded.append(data)
        return loads(data)

    monkeypatch.setattr(codec, "loads", counting)
    hook = receivers(script=[503] * 4)
    await _enrol(redis_store, "u-1")
    sub_id = await _subscribe(redis, hook)
    change = make_change(1)
    await redis_store.append_change(change)
    await _until(lambda: _attempts(channel, "dead") == 1)
    assert [r.body["version"] for r in hook.received] == [1, 1, 1, 1]
    assert len(await _log(redis, sub_id, 4)) == 4
    key = str(change.event_id).encode()
    assert sum(key in (d if isinstance(d, bytes) else d.encode()) for d in decoded) == 4


async def test_enqueueing_twice_queues_once(
    channel: Dispatcher, redis: Redis, redis_store: RedisStore, receivers: Start
) -> None:
    """A redelivered feed entry (crash before ack) is not delivered a second time."""
    hook = receivers()
    await _enrol(redis_store, "u-1")
    await _subscribe(redis, hook)
    await redis_store.append_change(make_change(1))
    await _until(lambda: len(hook.delivered()) == 1)
    entries = await redis.xrange(Keys(16).rxfeed_of("u-1"))
    assert await channel.enqueue(entries) == 0
    await _quiet(redis, channel)
    assert len(hook.received) == 1


async def test_two_claimers_never_take_the_same_head(redis: Redis) -> None:
    """Concurrent claims of due heads hand each head to exactly one claimer."""
    queues = Queues(redis)
    for i in range(50):
        await queues.enqueue("s", f"u{i}", f"e{i}", b"{}", 0)
    claims = await asyncio.gather(*(Queues(redis).claim(10, 60_000, 7) for _ in range(10)))
    taken = [q for claim in claims for q, _, _ in claim]
    assert len(taken) == len(set(taken)) == 50
