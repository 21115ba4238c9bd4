"""Replay throughput from Redis: ~1,000,000 events over 10,000 users, streamed.

The log is written straight into the users' history streams (pipelined XADD
of ``codec.to_fields``): 500 distinct simulated courses (``shared.cohort``,
7 weeks each) reused under 20 user ids each. Then the users are found with
SCAN and split between one or two worker processes by the replay tools' own
``services.replay.workers`` (what ``--workers`` does; a fresh process, so its
peak RSS is the replay's own); each reads its histories with XRANGE in pages
of 1,000 for 64 users per pipeline, decoded and folded one user at a time;
nothing holds more than one group of users.

Two folds are timed: ``engine.replay`` + ``decide`` (event-time order: what
what-if and as-of do) and ``fold_history`` (arrival order with refolds: what
a rebuild does). Figures only; nothing is asserted.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from redis.asyncio import Redis

from services.prescriber import engine
from services.prescriber.arrivals import fold_history
from services.replay import scan
from services.replay.workers import Job, in_workers
from shared import cohort
from shared.codec import to_fields
from shared.keys import Keys
from shared.redis_server import RedisServer
from tests.bench.report import NOTES, ROWS, Row

PARTITIONS = 16
COURSES, COPIES, WEEKS = 500, 20, 7


async def build_log(url: str) -> tuple[int, int]:
    """Write COURSES x COPIES users' histories; returns (users, events)."""
    courses: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in cohort.events(COURSES, seed=42, weeks=WEEKS):
        courses[event.user_id].append(to_fields(event))
    keys = Keys(PARTITIONS)
    redis = Redis.from_url(url)
    total = 0
    try:
        for original, fields in courses.items():
            needle = f'"user_id":"{original}"'.encode()
            pipe = redis.pipeline(transaction=False)
            for copy in range(COPIES):
                user = f"{original}-c{copy:02d}"
                swap = f'"user_id":"{user}"'.encode()
                for f in fields:
                    data = f["data"].replace(needle, swap)
                    pipe.xadd(keys.history(user), {**f, "user_id": user, "data": data})  # type: ignore[dict-item]
                total += len(fields)
            await pipe.execute()
    finally:
        await redis.aclose()
    return len(courses) * COPIES, total


async def _fold_share(
    redis: Redis, keys: Keys, fold: str, users: list[str], on_progress: Any
) -> tuple[int, float]:
    """A worker's share: fold each user's history; (events, this process's peak RSS MB)."""
    total = 0
    async for logs in scan.stream_histories(redis, keys, users, group=64, page=1000):
        for log in logs:
            if fold == "rebuild":
                fold_history(log.user_id, log.events)
            else:
                engine.decide(engine.replay(log.events))
        events = sum(len(log.entries) for log in logs)
        on_progress(len(logs), events)
        total += events
    return total, _peak_rss_mb()


def _peak_rss_mb() -> float:
    """This process's peak RSS since it began (VmHWM).

    Not ``ru_maxrss``: Linux carries that across the exec of a spawned
    child, so a child would report its parent's size when it forked.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


async def _user_ids(url: str) -> list[str]:
    redis = Redis.from_url(url)
    try:
        return await scan.user_ids(redis, Keys(PARTITIONS))
    finally:
        await redis.aclose()


def replay_in_workers(url: str, fold: str, workers: int) -> tuple[int, float, float]:
    """(events, seconds, largest peak RSS MB) of a streamed replay by ``workers`` processes.

    The clock covers the user scan, the workers' start-up and the last answer.
    """
    started = time.perf_counter()
    users = asyncio.run(_user_ids(url))
    answers = in_workers(Job(_fold_share, url, PARTITIONS, fold), users, workers)
    seconds = time.perf_counter() - started
    return sum(a[0] for a in answers), seconds, max(a[1] for a in answers)


def main(runs: int = 3) -> None:
    """Build the log once, then time each fold with one and two worker processes."""
    server = RedisServer.start(extra_args=("--appendonly", "no"))
    try:
        started = time.perf_counter()
        users, events = asyncio.run(build_log(server.url))
        took = time.perf_counter() - started
        print(f"replay: log of {events:,} events over {users:,} users written in {took:.1f} s")
        folds = (("replay", "engine.replay + decide"), ("rebuild", "fold_history"))
        for fold, name in folds:
            for workers in (1, 2):
                rates, peaks = [], []
                for _ in range(runs):
                    seen, seconds, peak = replay_in_workers(server.url, fold, workers)
                    rates.append(seen / seconds)
                    peaks.append(peak)
                rates.sort()
                label = f"replay from Redis, {name}, {workers} proc"
                row = Row(label, "events/s", rates[len(rates) // 2], rates[0], rates[-1], runs)
                ROWS.append(row)
                print(f"{row.line()}  peak RSS {max(peaks):.0f} MB/proc", flush=True)
                NOTES.append(f"{label}: peak RSS {max(peaks):.0f} MB per process")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
