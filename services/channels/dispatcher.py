"""The webhook dispatcher: rx feed entries in, signed POSTs out, with retries.

The rx feed consumer only enqueues (cheap; never waits on an endpoint) and
acks. A loop every ``tick`` seconds claims due queue heads and attempts each
in its own task, bounded per endpoint (scheme + host + port) and overall, so
a slow or hanging endpoint only ever holds its own slots. Outcomes: 2xx pops
the head and the next change of that user becomes due at once; 410 disables
the subscription and drops its queues; anything else is retried after the
next backoff step (with jitter) and, after the last, dead-lettered on
``bt:dlq``. Each attempt checks the URL again and connects only to an
address that check accepted (``services.channels.egress``); a refused URL is
a failed attempt that sent nothing. Every attempt is one entry in ``bt:wh:log:<sub_id>``. A queued
change is the rx feed entry as sealed (``queue_item``); each attempt opens it
with the patient's data key and decodes it once, by the codec; the body
posted is the change's JSON as the prescriber wrote it (what the signature
covers). A change whose patient was erased meanwhile leaves the queue unsent.

Access is checked at every attempt, not only when a change is queued
(invariant 9): right before posting, the patient must still be enrolled with
the subscription's clinic. If not (a transfer, an unenrolment), nothing is
sent: the change leaves the queue and the log gets a ``dropped`` entry with
the reason. Every subscription belongs to one clinic (an operator creates it
for a named clinic), so this holds for operators' subscriptions too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.channels import notices
from services.channels.egress import webhook_client
from services.channels.metrics import WebhookMetrics
from services.channels.options import ChannelSettings
from services.channels.queues import Queues, queue_item, sub_of
from services.channels.subscriptions import (
    Subscription,
    SubscriptionDisabled,
    SubscriptionLog,
    stream_ms,
)
from services.channels.webhooks import Attempt, post
from shared import codec, sealing, tasks
from shared.data_keys import KeyDestroyed
from shared.dead_letters import dead_letter
from shared.events import PrescriptionChanged
from shared.keys import DLQ
from shared.redis_store import RedisStore
from shared.store import StoreUnavailable
from shared.streams import text

log = structlog.get_logger("backtrack.channel.webhook")

GROUP = "channel-webhook"
LOG_MAXLEN = 10_000
#: the delivery log's reason for a change dropped unsent
NOT_ENROLLED = "the patient is no longer enrolled with the subscription's clinic"
Entry = tuple[Any, Mapping[Any, Any]]


def log_key(sub_id: str) -> str:
    """The delivery log of a subscription (capped near LOG_MAXLEN attempts)."""
    return f"bt:wh:log:{sub_id}"


def backoff(schedule: Sequence[float], failed: int, jitter: float, rand: float) -> float | None:
    """Seconds before the attempt after ``failed`` failed ones, or None to give up.

    ``rand`` in [0, 1) spreads the delay by +-``jitter`` (a fraction). Pure.
    """
    if failed > len(schedule):
        return None
    return schedule[failed - 1] * (1 + jitter * (2 * rand - 1))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt at a queue head: the queued bytes, the body posted (the change's JSON,
    opened) and the change it holds."""

    sub: Subscription
    queue: str
    item: bytes
    body: bytes
    change: PrescriptionChanged
    attempt: int


def _change(item: bytes) -> PrescriptionChanged:
    """The queued change; DecodeError (or ValidationError) if the bytes are not one."""
    event = codec.loads(item)
    if not isinstance(event, PrescriptionChanged):
        raise codec.DecodeError(f"webhooks deliver PrescriptionChanged, not {event.type}")
    return event


class Dispatcher:
    def __init__(
        self,
        redis: Redis,
        store: RedisStore,
        settings: ChannelSettings,
        *,
        client: httpx.AsyncClient | None = None,
        rand: Callable[[], float] = random.random,
        metrics: WebhookMetrics | None = None,
    ) -> None:
        self.redis = redis
        self.store = store
        self.settings = settings
        self.subs = SubscriptionLog(redis, settings.master_keys())
        self.queues = Queues(redis)
        self.client = client or webhook_client(settings.webhook_timeout)
        self.rand = rand
        self.metrics = metrics or WebhookMetrics()
        self._wake = asyncio.Event()  # set when a delivery may have become due
        self._endpoints: dict[str, asyncio.Semaphore] = {}
        self._inflight: dict[str, asyncio.Task[None]] = {}

    @property
    def in_flight(self) -> int:
        """Attempts started and not finished yet."""
        return len(self._inflight)

    # -- in: the rx feed -----------------------------------------------------

    async def enqueue(self, entries: Sequence[Entry]) -> int:
        """Queue each change for every matching subscription; returns how many queued.

        Matching uses the user's clinic now; every attempt checks it again."""
        subs = [s for s in (await self.subs.refresh()).values() if s.status == "active"]
        queued, clinics = 0, dict[str, str | None]()
        for entry_id, fields in entries:
            user = text(fields.get(b"user_id", fields.get("user_id", "")))
            data = fields.get(b"data", fields.get("data"))
            event_id = text(fields.get(b"event_id", fields.get("event_id", "")))
            if not subs or not user or data is None:
                continue
            if user not in clinics:
                clinics[user] = await self.store.clinic_of(user)
            fed = stream_ms(text(entry_id))
            item = queue_item(fields)
            for sub in subs:
                if sub.matches(user, clinics[user], fed):
                    queued += await self.queues.enqueue(sub.sub_id, user, event_id, item, _now_ms())
        if queued:
            self._wake.set()
        return queued

    # -- out: attempts ---------------------------------------------------------

    async def tick(self) -> int:
        """Claim due heads and start an attempt for each; returns how many started."""
        room = self.settings.webhook_max_inflight - len(self._inflight)
        if room <= 0:
            return 0
        lease = round(self.settings.webhook_lease * 1000)
        claimed = await self.queues.claim(_now_ms(), lease, room)
        subs = await self.subs.refresh() if claimed else {}
        for queue, item, attempt in claimed:
            if queue in self._inflight:  # our own lease ran out; the attempt is still going
                continue
            sub = subs.get(sub_of(queue))
            if sub is None or sub.status != "active":
                await self.queues.drop(sub_of(queue))
                continue
            task = asyncio.create_task(self._deliver(sub, queue, item, attempt))
            self._inflight[queue] = task
            task.add_done_callback(self._forget(queue))
        return len(claimed)

    def _forget(self, queue: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(_: asyncio.Task[None]) -> None:
            self._inflight.pop(queue, None)

        return forget

    def _endpoint(self, url: str) -> asyncio.Semaphore:
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        if key not in self._endpoints:
            self._endpoints[key] = asyncio.Semaphore(self.settings.webhook_per_endpoint)
        return self._endpoints[key]

    async def _body(self, queue: str, item: bytes) -> bytes | None:
        """The change's JSON a queued item holds; None (and the item gone) if the patient was
        erased since it was queued."""
        if not sealing.is_packed(item):
            return item
        fields = sealing.unpack(item)
        if self.store.data_keys is None:
            raise sealing.Unreadable("a sealed webhook item, and no data keys to open it")
        [opened] = await self.store.data_keys.open_many([fields])
        if isinstance(opened, KeyDestroyed):
            await self.queues.finish(queue, item, _now_ms())
            log.info("webhook_erased_dropped", sub_id=sub_of(queue))
            return None
        if isinstance(opened, Exception):
            raise opened
        return bytes(opened["data"])

    async def _deliver(self, sub: Subscription, queue: str, item: bytes, attempt: int) -> None:
        notice = notices.parse(item)
        if notice is not None:
            await self._notify(sub, queue, item, attempt, notice)
            return
        try:
            body = await self._body(queue, item)
            change = None if body is None else _change(body)
        except (RedisError, StoreUnavailable) as exc:  # the lease runs out; attempted again
            log.warning("webhook_redis_error", sub_id=sub.sub_id, error=type(exc).__name__)
            return
        except ValueError as exc:  # SealingError, DecodeError, ValidationError: never mends
            await self._unreadable(sub, queue, item, exc)
            return
        if body is None or change is None:
            return
        delivery = Delivery(sub, queue, item, body, change, attempt)
        try:
            gate = await self._slot(sub, queue)
            if gate is None:
                return
            try:
                # checked after the wait for the endpoint, just before anything is sent
                allowed = await self._still_enrolled(delivery)
                result = await self._attempt(delivery) if allowed else None
            finally:
                gate.release()
            if result is None:
                await self._drop(delivery, NOT_ENROLLED)
                return
            await self._record(delivery, result)
            await self._settle(delivery, result)
        except (RedisError, StoreUnavailable) as exc:  # the lease runs out; attempted again
            log.warning("webhook_redis_error", sub_id=sub.sub_id, error=type(exc).__name__)

    async def _notify(
        self,
        sub: Subscription,
        queue: str,
        item: bytes,
        attempt: int,
        notice: notices.PatientErased,
    ) -> None:
        """One attempt at an erasure notice: signed and retried like a change, no enrolment
        check; past the last backoff step it is given up."""
        try:
            gate = await self._slot(sub, queue)
            if gate is None:
                return
            try:
                result = await post(
                    self.client,
                    sub.url,
                    sub.secret,
                    notice.webhook_id,
                    item,
                    allow_private=self.settings.webhook_allow_private,
                    https_only=not self.settings.is_local,
                )
            finally:
                gate.release()
            at = datetime.now(UTC).isoformat()
            entry: dict[Any, Any] = notices.log_entry(notice, attempt, at, result)
            await self.redis.xadd(log_key(sub.sub_id), entry, maxlen=LOG_MAXLEN, approximate=True)
            await self._settle_notice(sub, queue, item, attempt, result)
        except (RedisError, StoreUnavailable) as exc:  # the lease runs out; attempted again
            log.warning("webhook_redis_error", sub_id=sub.sub_id, error=type(exc).__name__)

    async def _unreadable(self, sub: Subscription, queue: str, item: bytes, exc: Exception) -> None:
        """Park a queued item that does not open or decode, so the user's queue moves on."""
        error = f"unreadable queued item: {type(exc).__name__}"
        record = dead_letter(queue, "", GROUP, error, {"data": item}, subscription=sub.sub_id)
        await self.redis.xadd(DLQ, record)
        await self.queues.finish(queue, item, _now_ms())
        self._wake.set()
        log.error("webhook_item_unreadable", sub_id=sub.sub_id, error=type(exc).__name__)

    async def _slot(self, sub: Subscription, queue: str) -> asyncio.Semaphore | None:
        """The endpoint's slot, acquired (the caller releases it); None, with the queue's
        lease given back, if none came free while the lease leaves time to send."""
        wait = self.settings.webhook_lease - self.settings.webhook_timeout - 1.0
        gate = self._endpoint(sub.url)
        try:
            async with asyncio.timeout(max(wait, 0.1)):
                await gate.acquire()
        except TimeoutError:
            await self.queues.release(queue, _now_ms())
            return None
        return gate

    async def _settle_notice(
        self, sub: Subscription, queue: str, item: bytes, attempt: int, result: Attempt
    ) -> None:
        now, options = _now_ms(), self.settings
        delay = backoff(options.webhook_backoff, attempt, options.webhook_jitter, self.rand())
        if result.gone:
            outcome = "gone"
            await self.disable(sub.sub_id, "endpoint answered 410 Gone")
        elif result.delivered or delay is None:
            outcome = "delivered" if result.delivered else "dead"
            await self.queues.finish(queue, item, now)
            self._wake.set()
        else:
            outcome = "retry"
            await self.queues.retry_at(queue, now + round(delay * 1000))
        log.info(
            "webhook_notice",
            sub_id=sub.sub_id,
            attempt=attempt,
            status=result.status,
            outcome=outcome,
        )
        self.metrics.attempt(outcome, result.latency_ms)

    async def _still_enrolled(self, delivery: Delivery) -> bool:
        """Whether the change's patient is enrolled with the subscription's clinic now."""
        return await self.store.clinic_of(delivery.change.user_id) == delivery.sub.clinic_id

    async def _drop(self, delivery: Delivery, reason: str) -> None:
        """Send nothing: log the change as ``dropped`` and take it off the queue."""
        entry = await self._log(delivery, "dropped", reason=reason)
        await self.queues.finish(delivery.queue, delivery.item, _now_ms())
        self._wake.set()  # the user's next change is due now, to be dropped in turn
        self.metrics.dropped.inc()
        log.info(
            "webhook_dropped",
            sub_id=delivery.sub.sub_id,
            event_id=entry["event_id"],
            attempt=delivery.attempt,
            reason=reason,
        )

    async def _log(
        self,
        delivery: Delivery,
        status: int | str,
        latency_ms: int = 0,
        error: str = "",
        reason: str | None = None,
    ) -> dict[Any, Any]:
        """Add one entry to the subscription's delivery log (an attempt, or a drop with its
        reason) and return it."""
        change = delivery.change
        entry: dict[Any, Any] = {
            "event_id": str(change.event_id),
            "user_id": change.user_id,
            "version": str(change.version),
            "attempt": delivery.attempt,
            "at": datetime.now(UTC).isoformat(),
            "status": status,
            "latency_ms": latency_ms,
            "error": error,
        }
        if reason is not None:
            entry["reason"] = reason
        key = log_key(delivery.sub.sub_id)
        await self.redis.xadd(key, entry, maxlen=LOG_MAXLEN, approximate=True)
        return entry

    async def _attempt(self, delivery: Delivery) -> Attempt:
        sub = delivery.sub
        return await post(
            self.client,
            sub.url,
            sub.secret,
            str(delivery.change.event_id),
            delivery.body,
            allow_private=self.settings.webhook_allow_private,
            https_only=not self.settings.is_local,
        )

    async def _record(self, delivery: Delivery, result: Attempt) -> None:
        change, sub_id = delivery.change, delivery.sub.sub_id
        entry = await self._log(delivery, result.status, result.latency_ms, result.error)
        log.info(
            "webhook_attempt",
            sub_id=sub_id,
            event_id=entry["event_id"],
            caused_by=str(change.caused_by),
            attempt=delivery.attempt,
            status=result.status,
            latency_ms=result.latency_ms,
        )

    async def _settle(self, delivery: Delivery, result: Attempt) -> None:
        now, queue, item, attempt = _now_ms(), delivery.queue, delivery.item, delivery.attempt
        if result.delivered:
            outcome = "delivered"
            await self.queues.finish(queue, item, now)
            self._wake.set()  # the user's next change may be waiting behind this one
        elif result.gone:
            outcome = "gone"
            await self.disable(delivery.sub.sub_id, "endpoint answered 410 Gone")
        else:
            options = self.settings
            delay = backoff(options.webhook_backoff, attempt, options.webhook_jitter, self.rand())
            if delay is None:
                outcome = "dead"
                error = f"gave up after {attempt} attempts: {result.error}"
                await self.dead_letter(delivery, error)
                await self.queues.finish(queue, item, now)
                self._wake.set()
            else:
                outcome = "retry"
                await self.queues.retry_at(queue, now + round(delay * 1000))
        self.metrics.attempt(outcome, result.latency_ms)

    async def disable(self, sub_id: str, reason: str) -> None:
        """Mark a subscription disabled (an event) and drop everything queued for it."""
        await self.subs.append(
            SubscriptionDisabled(sub_id=sub_id, reason=reason, occurred_at=datetime.now(UTC))
        )
        dropped = await self.queues.drop(sub_id)
        log.warning("subscription_disabled", sub_id=sub_id, reason=reason, dropped=dropped)

    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        """Park a change that could not be delivered (same shape as the feed's dead letters)."""
        change = delivery.change
        original = {
            "type": change.type,
            "event_id": str(change.event_id),
            "user_id": change.user_id,
            "data": delivery.item,
        }
        record = dead_letter(
            delivery.queue,
            str(change.event_id),
            GROUP,
            error,
            original,
            subscription=delivery.sub.sub_id,
        )
        await self.redis.xadd(DLQ, record)
        log.warning(
            "webhook_dead_lettered", sub_id=delivery.sub.sub_id, event_id=str(change.event_id)
        )

    # -- the loop ---------------------------------------------------------------

    async def run(self, interval: float = 0.2) -> None:
        """Tick forever: at once when a change is queued or a delivery ends, else every
        ``interval`` s (for retries coming due). Redis errors are logged and retried."""
        while True:
            self._wake.clear()
            try:
                await self.tick()
            except RedisError as exc:
                log.warning("webhook_tick_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()

    @contextlib.asynccontextmanager
    async def running(self, interval: float = 0.2) -> AsyncIterator[Dispatcher]:
        """Run the loop in a task; on exit cancel it and every attempt in flight."""
        task = asyncio.create_task(self.run(interval), name="webhook-dispatcher")
        try:
            yield self
        finally:
            await tasks.stop(task, *self._inflight.values())
            await self.client.aclose()


__all__ = ["GROUP", "Delivery", "Dispatcher", "backoff", "log_key"]
