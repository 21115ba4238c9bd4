"""kill -9 the prescriber again and again while events stream in: nothing lost, nothing twice.

The prescriber runs with a one-second dedupe window, so a change stored only
once proves the version check of the append script, not the window.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import threading
import time
from collections import defaultdict
from typing import Any

import pytest
import redis

from services.prescriber import engine
from services.prescriber.feeds.consumer import GROUP
from shared import cohort
from shared.events import Input, PrescriptionChanged
from shared.keys import Keys
from shared.redis_store import RedisStore, connect
from tests.fault.prescribers import start_prescriber
from tests.sealed import decoded

pytestmark = pytest.mark.fault

PARTITIONS = 8
KILLS = 20


def _start(url: str) -> subprocess.Popen[bytes]:
    # a one-second dedupe window, shorter than the storm: a change decided again must be
    # refused by its version, not by a dedupe key still waiting to expire
    return start_prescriber(
        url, PARTITIONS, claim_idle_ms="500", snapshot_every="7", dedupe_ttl_seconds="1"
    )


def _write(url: str, events: list[Input], done: threading.Event) -> None:
    async def run() -> None:
        client = connect(url)
        store = RedisStore(client, partitions=PARTITIONS)
        for start in range(0, len(events), 400):
            await store.append_many(events[start : start + 400])
            await asyncio.sleep(0.05)
        await client.aclose()

    asyncio.run(run())
    done.set()


def _backlog(client: redis.Redis, keys: Keys) -> int:
    """Feed entries not yet acknowledged by the prescriber group (all, if it has none)."""
    total = 0
    for feed in keys.feeds():
        groups = [g for g in client.xinfo_groups(feed) if g["name"] == GROUP.encode()]
        total += (
            sum((g["lag"] or 0) + g["pending"] for g in groups) if groups else client.xlen(feed)
        )
    return total


def _changes(client: redis.Redis, keys: Keys, user: str) -> list[PrescriptionChanged]:
    out = [decoded(client, f, keys.partitions) for _, f in client.xrange(keys.rx(user))]
    return [c for c in out if isinstance(c, PrescriptionChanged)]


def test_twenty_kills_lose_nothing_and_duplicate_nothing(own_redis_server: Any) -> None:
    """After 20 SIGKILLs every event is logged once and prescriptions match a clean replay."""
    server = own_redis_server()
    events = [a.event for a in cohort.simulate(130, seed=21)]
    assert len(events) >= 20_000
    rng = random.Random(5)
    done = threading.Event()
    writer = threading.Thread(target=_write, args=(server.url, events, done))
    process = _start(server.url)
    writer.start()
    keys = Keys(PARTITIONS)
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.5))
            process.kill()
            process.wait()
            process = _start(server.url)
        writer.join()
        with redis.Redis.from_url(server.url) as client:
            deadline = time.monotonic() + 300
            while _backlog(client, keys):
                assert time.monotonic() < deadline, "consumer lag did not drain"
                time.sleep(0.2)
            by_user: dict[str, list[Input]] = defaultdict(list)
            for event in events:
                by_user[event.user_id].append(event)
            for user, mine in by_user.items():
                assert client.xlen(keys.history(user)) == len(mine), f"{user}: events lost"
                changes = _changes(client, keys, user)
                ids = [str(c.event_id) for c in changes]
                assert len(set(ids)) == len(ids), f"{user}: a change stored twice"
                assert [c.version for c in changes] == list(range(1, len(changes) + 1))
                clean = engine.decide(engine.replay(mine))
                assert clean is not None
                last = changes[-1]
                assert (last.phase, last.exercises, last.referral) == (
                    clean.phase,
                    clean.exercises,
                    clean.referral,
                ), f"{user}: differs from replay"
    finally:
        process.kill()
        process.wait()
