"""A small simulated cohort processed live, for the replay tests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from services.prescriber.processing.processor import Processor
from shared import cohort
from shared.events import Input
from shared.store import EventStore

PATIENTS = 14
SEED = 11


def arrivals(patients: int = PATIENTS, seed: int = SEED, weeks: int = 8) -> list[Input]:
    """Every event of a seeded cohort in arrival order (late syncs included)."""
    return [a.event for a in cohort.simulate(patients, seed, weeks=weeks)]


async def run_live(
    store: EventStore, events: Sequence[Input], chunk: int = 25, snapshot_every: int = 10
) -> Processor:
    """Append in arrival order, ``chunk`` events at a time, processing after each chunk."""
    processor = Processor(store, snapshot_every=snapshot_every)
    for start in range(0, len(events), chunk):
        batch = events[start : start + chunk]
        await store.append_many(batch)
        await processor.process_users([e.user_id for e in batch])
    return processor


async def raw_stream(redis: Redis, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """A stream's entries exactly as stored (ids and fields)."""
    entries: Any = await redis.xrange(key)
    return [(bytes(i), dict(f)) for i, f in entries]


async def keyspace_digest(redis: Redis) -> str:
    """SHA-256 over every key's name, type, TTL presence and DUMP, in key order."""
    digest = hashlib.sha256()
    keys: list[bytes] = sorted([k async for k in redis.scan_iter(count=1000)])
    for key in keys:
        dumped = await redis.dump(key)
        expires = await redis.ttl(key) >= 0
        digest.update(key + b"\0" + (dumped or b"") + (b"\1" if expires else b"\0"))
    return digest.hexdigest()
