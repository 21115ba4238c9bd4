"""Three prescribers share the partitions; two SIGKILLs mid-stream: quick takeover, no loss."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import threading
import time
from collections import defaultdict
from typing import Any

import pytest
import redis

from services.prescriber import engine
from services.prescriber.feeds.consumer import GROUP
from services.prescriber.feeds.leases import owner_key
from shared import cohort
from shared.events import Input, PrescriptionChanged
from shared.keys import Keys
from shared.redis_store import RedisStore, connect
from tests.fault.prescribers import start_prescriber
from tests.sealed import decoded

pytestmark = pytest.mark.fault

PARTITIONS = 8
TAKEOVER_LIMIT = 10.0


def _start(url: str) -> subprocess.Popen[bytes]:
    return start_prescriber(
        url,
        PARTITIONS,
        ready=False,
        claim_idle_ms="500",
        snapshot_every="7",
        lease_ms="1500",
        lease_renew_ms="300",
    )


def _name(process: subprocess.Popen[bytes]) -> str:
    return f"{socket.gethostname()}-{process.pid}"


def _write(url: str, events: list[Input], done: threading.Event) -> None:
    async def run() -> None:
        client = connect(url)
        store = RedisStore(client, partitions=PARTITIONS)
        for start in range(0, len(events), 200):
            await store.append_many(events[start : start + 200])
            await asyncio.sleep(0.1)
        await client.aclose()

    asyncio.run(run())
    done.set()


def _owners(client: redis.Redis, keys: Keys) -> dict[int, str | None]:
    values = [client.get(owner_key(keys, p)) for p in range(PARTITIONS)]
    return {p: v.decode() if v else None for p, v in enumerate(values)}


def _wait_owned(
    client: redis.Redis, keys: Keys, live: list[subprocess.Popen[bytes]], limit: float
) -> tuple[float, dict[int, str | None]]:
    """Seconds until every partition is held by a live instance (fails after ``limit``)."""
    names = {_name(p) for p in live}
    start = time.monotonic()
    while True:
        owners = _owners(client, keys)
        if all(owner in names for owner in owners.values()):
            return time.monotonic() - start, owners
        assert time.monotonic() - start < limit, f"partitions not taken over: {owners}"
        time.sleep(0.05)


def _backlog(client: redis.Redis, keys: Keys) -> int:
    total = 0
    for feed in keys.feeds():
        for group in client.xinfo_groups(feed):
            if group["name"] == GROUP.encode():
                total += (group["lag"] or 0) + group["pending"]
    return total


def _changes(client: redis.Redis, keys: Keys, user: str) -> list[PrescriptionChanged]:
    out = [decoded(client, f, keys.partitions) for _, f in client.xrange(keys.rx(user))]
    return [c for c in out if isinstance(c, PrescriptionChanged)]


def _kill_owner_of_most(
    client: redis.Redis, keys: Keys, live: list[subprocess.Popen[bytes]]
) -> tuple[subprocess.Popen[bytes], list[int]]:
    owners = _owners(client, keys)
    victim = max(live, key=lambda p: sum(o == _name(p) for o in owners.values()))
    orphaned = [p for p, o in owners.items() if o == _name(victim)]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    live.remove(victim)
    return victim, orphaned


def test_killed_instances_partitions_are_taken_over_and_nothing_is_lost(
    own_redis_server: Any,
) -> None:
    """3 instances, 2 SIGKILLs mid-stream: takeover < 10 s, no loss, no duplicate, replay-equal."""
    server = own_redis_server()
    keys = Keys(PARTITIONS)
    events = [a.event for a in cohort.simulate(80, seed=33)]
    done = threading.Event()
    writer = threading.Thread(target=_write, args=(server.url, events, done))
    live = [_start(server.url) for _ in range(3)]
    everyone = list(live)
    try:
        with redis.Redis.from_url(server.url) as client:
            _wait_owned(client, keys, live, 20.0)  # process start-up included
            writer.start()
            deadline = time.monotonic() + 10
            while True:  # joiners make the first instance hand partitions back
                counts = [list(_owners(client, keys).values()).count(_name(p)) for p in live]
                if sorted(counts) == [2, 3, 3]:
                    break
                assert time.monotonic() < deadline, f"no fair share: {counts}"
                time.sleep(0.1)
            for _ in range(2):
                time.sleep(1.5)
                assert not done.is_set(), "the kill must land mid-stream"
                _, orphaned = _kill_owner_of_most(client, keys, live)
                took, owners = _wait_owned(client, keys, live, TAKEOVER_LIMIT)
                print(f"partitions {orphaned} taken over in {took:.2f} s: {owners}")
            writer.join()
            deadline = time.monotonic() + 60
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
        for process in everyone:
            process.kill()
            process.wait()
