"""Partition ownership: consume exactly the partitions whose lease this instance holds.

Every ``renew_interval`` seconds the instance heartbeats, renews its leases
(a lease it can no longer renew is lost: its reader stops), takes free
partitions up to its fair share and, when instances have joined, hands back
what is above it (reader stopped and its cache saved first, then the lease
released, so the taker starts at once). A single instance therefore owns all
K partitions from its first tick, and a dead instance's partitions are taken
within ``lease_ms`` plus one tick.

Each owned partition has its own ``FeedReader.consume`` task, allowed to
read while the lease was confirmed less than ``lease_ms`` ago. Starting or
stopping one drops the cached state of the partition's users (``evict``): a
cache kept from an earlier ownership may lag what another owner did since.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from redis.exceptions import RedisError

from services.prescriber.feeds.leases import Leases, fair_share
from services.prescriber.feeds.reader import FeedReader
from shared import tasks
from shared.keys import Keys

log = structlog.get_logger(__name__)

#: drops the cached state of the users a predicate picks, saving it first if asked
Evict = Callable[[Callable[[str], bool], bool], Awaitable[int]]


@dataclass(slots=True)
class _Reader:
    task: asyncio.Task[None]
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class Ownership:
    """Holds this instance's share of partition leases and runs one reader per lease."""

    def __init__(
        self,
        leases: Leases,
        reader: FeedReader,
        keys: Keys,
        evict: Evict,
        *,
        renew_interval: float = 1.5,
        stop_timeout: float = 15.0,
    ) -> None:
        self.leases = leases
        self.reader = reader
        self.keys = keys
        self.evict = evict
        self.renew_interval = renew_interval
        self.stop_timeout = stop_timeout
        self._readers: dict[int, _Reader] = {}
        self._valid_until: dict[int, float] = {}

    @property
    def partitions(self) -> int:
        return self.keys.partitions

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
        await self._evict(partition, save)

    async def _evict(self, partition: int, save: bool) -> None:
        keys = self.keys
        await self.evict(lambda user: keys.partition(user) == partition, save)

    def _valid(self, partition: int) -> bool:
        return asyncio.get_running_loop().time() < self._valid_until.get(partition, 0.0)

    async def _consume(self, partition: int, stop: asyncio.Event) -> None:
        # a cache from an earlier ownership may lag what another owner did since
        await self._evict(partition, False)
        await self.reader.consume(partition, stop, lambda: self._valid(partition))

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


__all__ = ["Ownership"]
