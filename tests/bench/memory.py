"""Prescriber memory with 10,000 active users in its cache.

A simulated cohort is cloned under new user and event ids until it covers
10,000 users (the first events of each course, so every user is active);
the log is prefilled, one prescriber process works it off, and its resident
memory is read from /proc once the lag is zero.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from shared import cohort
from shared.events import Input
from shared.keys import Keys
from shared.redis_server import RedisServer
from shared.redis_store import RedisStore, connect
from tests.bench.pipeline import PARTITIONS, _lag, service
from tests.bench.report import NOTES


def _users(count: int, per_user: int = 40) -> list[Input]:
    """``count`` users with ``per_user`` events each, cloned from 250 simulated courses."""
    courses: dict[str, list[Input]] = {}
    for arrival in cohort.simulate(250, seed=17):
        courses.setdefault(arrival.event.user_id, []).append(arrival.event)
    base = [events[:per_user] for events in courses.values()]
    out: list[Input] = []
    for n in range(count):
        for event in base[n % len(base)]:
            out.append(
                event.model_copy(
                    update={
                        "user_id": f"m{n:05d}",
                        "event_id": uuid.uuid5(event.event_id, str(n)),
                    }
                )
            )
    return out


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _fill(url: str, events: list[Input]) -> None:
    client = connect(url)
    store = RedisStore(client, partitions=PARTITIONS)
    for start in range(0, len(events), 5_000):
        await store.append_many(events[start : start + 5_000])
    await client.aclose()


async def _wait_drained(url: str) -> float:
    client = connect(url)
    keys = Keys(PARTITIONS)
    started = time.perf_counter()
    while await _lag(client, keys) == 0:
        await asyncio.sleep(0.05)
    while await _lag(client, keys):
        await asyncio.sleep(0.2)
    await client.aclose()
    return time.perf_counter() - started


def run(users: int = 10_000) -> tuple[int, float, float, float]:
    events = _users(users)
    with RedisServer.start() as server:
        asyncio.run(_fill(server.url, events))
        with service("services.prescriber", server.url, "BACKTRACK_CLINIC_PORT") as (_, process):
            idle = _rss_mb(process.pid)
            took = asyncio.run(_wait_drained(server.url))
            time.sleep(1.0)
            loaded = _rss_mb(process.pid)
    return len(events), took, idle, loaded


def main(users: int = 10_000) -> None:
    count, took, idle, loaded = run(users)
    line = (
        f"prescriber memory, {users:,} active users ({count:,} events, worked off in "
        f"{took:.1f} s): RSS {loaded:,.0f} MB ({idle:,.0f} MB at start)"
    )
    print(line)
    NOTES.append(line)


if __name__ == "__main__":
    main()
