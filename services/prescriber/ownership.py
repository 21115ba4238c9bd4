"""Partition ownership: consume exactly the partitions whose lease this instance holds.

Every ``renew_interval`` seconds the instance heartbeats, renews its leases
(a lease it can no longer renew is lost: its reader stops), takes free
partitions up to its fair share and, when instances have joined, hands back
what is above it (reader stopped and its cache saved first, then the lease
released, so the taker starts at once). A single instance therefore owns all
K partitions from its first tick, and a dead instance's partitions are taken
within ``lease_ms`` plus one tick.

Each owned partition has its own reader: first it takes over every entry
pending in the partition (XAUTOCLAIM, min-idle 0: a dead owner's entries are
redone now, not after ``claim_idle_ms``), then it loops XREADGROUP ``>`` into
``FeedConsumer.handle``, sending the acknowledgements of each batch in one
round trip with the next read. Before each read, and again before handling
what it returned, it checks that the lease was confirmed less than
``lease_ms`` ago (fencing by check); a paused process whose lease lapsed may
still overlap a new owner for one batch, which is safe because processing is
idempotent and deterministic (invariant 2). Entries read but not handled stay
pending for the next owner's take-over (or this one's reclaimer).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import RedisError

from services.prescriber.consumer import GROUP, FeedConsumer
from services.prescriber.leases import Leases, fair_share
from services.prescriber.reclaimer import Reclaimer
from shared import tasks

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Reader:
    task: asyncio.Task[None]
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class Ownership:
    """Holds this instance's share of partition leases and runs one reader per lease."""

    def __init__(
        self,
        leases: Leases,
        consumer: FeedConsumer,
        reclaimer: Reclaimer,
        *,
        renew_interval: float = 1.5,
        max_records: int = 200,
        block_ms: int | None = None,
        stop_timeout: float = 15.0,
    ) -> None:
        self.leases = leases
        self.consumer = consumer
        self.reclaimer = reclaimer
        self.renew_interval = renew_interval
        self.max_records = max_records
        # a read waits at most a tenth of a lease (500 ms at most): long enough
        # that idle partitions cost little, short enough that readers stop fast
        self.block_ms = block_ms or max(10, min(500, leases.lease_ms // 10))
        self.stop_timeout = stop_timeout
        self._readers: dict[int, _Reader] = {}
        self._valid_until: dict[int, float] = {}

    @property
    def partitions(self) -> int:
        return self.consumer.keys.partitions

    def owned(self) -> list[int]:
        """The partitions this instance consumes now, lowest first."""
        return sorted(self._readers)

    async def tick(self) -> None:
        """Heartbeat, renew, acquire up to the fair share, release above it."""
        share = fair_share(self.partitions, await self.leases.heartbeat())
        for partition in self.owned():
            confirmed = asyncio.get_running_loop().time()
            if await self.leases.renew(partition):
                self._valid_until[partition] = confirmed + self.leases.lease_ms / 1000
            else:
                await self._stop(partition, save=False)
                log.info("lease_lost", partition=partition)
        for partition in self._free_order():
            if len(self._readers) >= share:
                break
            confirmed = asyncio.get_running_loop().time()
            if await self.leases.acquire(partition):
                self._valid_until[partition] = confirmed + self.leases.lease_ms / 1000
                self._start(partition)
                log.info("lease_acquired", partition=partition, share=share)
        surplus = self.owned()[share:]
        self._signal_stop(surplus)  # all their reads end together, not one after another
        for partition in surplus:
            await self.hand_back(partition)

    async def hand_back(self, partition: int) -> None:
        """Stop consuming ``partition``, save its users' state, then release its lease."""
        await self._stop(partition, save=True)
        await self.leases.release(partition)
        log.info("lease_released", partition=partition)

    def _signal_stop(self, partitions: list[int]) -> None:
        for partition in partitions:
            self._readers[partition].stop.set()

    def _free_order(self) -> list[int]:
        """Partitions not owned here, starting at an instance-specific offset to spread takes."""
        start = sum(self.leases.instance.encode()) % self.partitions
        order = [(start + i) % self.partitions for i in range(self.partitions)]
        return [p for p in order if p not in self._readers]

    def _start(self, partition: int) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(self._consume(partition, stop), name=f"feed-p{partition:02d}")
        self._readers[partition] = _Reader(task, stop)

    async def _stop(self, partition: int, *, save: bool) -> None:
        """Stop the partition's reader; with ``save`` (a hand-back) it finishes its batch first.

        A lost lease ends the reader's right to handle at once; a lease still
        held stays valid until the reader is done, so a batch it has read is
        handled and acknowledged rather than left pending.
        """
        reader = self._readers.pop(partition)
        if not save:
            self._valid_until.pop(partition, None)
        reader.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(reader.task), self.stop_timeout)
        except TimeoutError:
            await tasks.stop(reader.task)
        self._valid_until.pop(partition, None)
        keys = self.consumer.keys
        await self.consumer.processor.evict(lambda user: keys.partition(user) == partition, save)

    def _valid(self, partition: int) -> bool:
        return asyncio.get_running_loop().time() < self._valid_until.get(partition, 0.0)

    async def _consume(self, partition: int, stop: asyncio.Event) -> None:
        # a cache from an earlier ownership may lag what another owner did since
        keys = self.consumer.keys
        await self.consumer.processor.evict(lambda user: keys.partition(user) == partition, False)
        taken_over = False
        feed = self.consumer.keys.feed(partition)
        done: list[bytes] = []  # handled, to be acknowledged with the next read
        try:
            while not stop.is_set():
                if not self._valid(partition):  # lease not confirmed lately: do not read
                    await asyncio.sleep(self.block_ms / 1000)
                    continue
                try:
                    if not taken_over:
                        await self.reclaimer.take_over(partition)
                        taken_over = True
                        continue
                    reply = await self._read(feed, done)
                    done = []
                    if not self._valid(partition):  # the lease lapsed while the read waited
                        continue
                    for entries in _entries(reply):
                        done += await self.consumer.handle(partition, entries, ack=False)
                except RedisError as exc:
                    log.warning("feed_read_failed", partition=partition, error=type(exc).__name__)
                    await asyncio.sleep(0.5)
        finally:
            if done:
                with contextlib.suppress(RedisError):
                    await self.consumer.redis.xack(feed, GROUP, *done)

    async def _read(self, feed: str, done: list[bytes]) -> Any:
        """XREADGROUP the next batch, after acknowledging ``done`` in the same round trip."""
        redis = self.consumer.redis
        if not done:
            return await redis.xreadgroup(
                GROUP, self.leases.instance, {feed: ">"}, self.max_records, self.block_ms
            )
        pipe = redis.pipeline(transaction=False)
        pipe.xack(feed, GROUP, *done)
        pipe.xreadgroup(GROUP, self.leases.instance, {feed: ">"}, self.max_records, self.block_ms)
        _, reply = await pipe.execute()
        return reply

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except RedisError as exc:
                log.warning("lease_tick_failed", error=type(exc).__name__)
            await asyncio.sleep(self.renew_interval)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Ownership]:
        """Own partitions while inside; on exit stop readers, save state, release, leave."""
        task = asyncio.create_task(self.run(), name="ownership")
        try:
            yield self
        finally:
            await tasks.stop(task)
            self._signal_stop(self.owned())
            for partition in self.owned():
                with contextlib.suppress(RedisError):
                    await self.hand_back(partition)
            with contextlib.suppress(RedisError):
                await self.leases.leave()


def _entries(reply: Any) -> list[list[Any]]:
    """XREADGROUP's per-stream entry lists (RESP2: ``[[stream, [(id, fields), ...]], ...]``)."""
    return [list(item[1]) for item in reply or () if item[1]]


__all__ = ["Ownership"]
