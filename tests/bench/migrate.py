"""What ``backtrack migrate encrypt`` costs: events sealed per second, Redis memory before, after.

A plaintext deployment is written once: 120 simulated patients (``shared.cohort``, seed 5)
appended in arrival order through the store with no data keys and processed live (so
histories, prescription streams, snapshots and both feeds), every feed's groups having
read and acknowledged everything (a deployment at rest). Its keyspace is kept (DUMP) and
restored before each run; each run times ``migrate_encrypt`` over all of it, one process,
and reads ``used_memory`` before and after. Figures only; nothing is asserted.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from typing import Any

from redis.asyncio import Redis

from services.replay.migrate import Report, migrate_encrypt
from shared import cohort
from shared.data_keys import DataKeys
from shared.keys import PRESCRIBER_GROUP, Keys
from shared.redis_server import RedisServer
from shared.redis_store import RedisStore, connect
from shared.sealing import MasterKey, MasterKeys
from tests.bench.report import NOTES, ROWS, Row
from tests.integration.replay_fixtures import run_live

PARTITIONS = 16
PATIENTS = 120
MASTERS = MasterKeys(MasterKey(hashlib.sha256(b"backtrack bench master key").digest()))
GROUPS = {"feed": (PRESCRIBER_GROUP,), "rxfeed": ("channel-log", "channel-webhook")}


async def _plaintext(redis: Redis) -> dict[bytes, bytes]:
    """Write the plaintext deployment; every key's DUMP."""
    keys = Keys(PARTITIONS)
    events = [a.event for a in cohort.simulate(PATIENTS, seed=5)]
    await run_live(RedisStore(redis, PARTITIONS), events, chunk=200, snapshot_every=50)
    for kind, feeds in (("feed", keys.feeds()), ("rxfeed", keys.rxfeeds())):
        for feed in feeds:
            for group in GROUPS[kind]:  # every entry delivered and acknowledged
                await redis.xgroup_create(feed, group, id="$", mkstream=True)
    names = [k async for k in redis.scan_iter(count=1000)]
    return {bytes(name): await redis.dump(name) for name in names}


async def _restore(redis: Redis, dumps: dict[bytes, bytes]) -> None:
    await redis.flushall()
    pipe = redis.pipeline(transaction=False)
    for name, dumped in dumps.items():
        pipe.restore(name, 0, dumped)
    await pipe.execute()


async def _memory(redis: Redis) -> tuple[int, int]:
    """Redis ``used_memory``, and the bytes every history stream takes (MEMORY USAGE)."""
    info: Any = await redis.info("memory")
    histories = [k async for k in redis.scan_iter(match="bt:{p*}:user:*", count=1000)]
    pipe = redis.pipeline(transaction=False)
    for key in histories:
        pipe.memory_usage(key, samples=0)
    return int(info["used_memory"]), sum(await pipe.execute())


async def _migrate(redis: Redis) -> tuple[Report, float]:
    data_keys = DataKeys(redis, Keys(PARTITIONS), MASTERS)
    started = time.perf_counter()
    report = await migrate_encrypt(redis, Keys(PARTITIONS), data_keys, required_groups=GROUPS)
    return report, time.perf_counter() - started


async def _longest_script_ms(redis: Redis) -> float:
    """The longest script call since the slow log was reset (every call over 0.1 ms is kept)."""
    entries: Any = await redis.slowlog_get(100_000)
    scripts = [e["duration"] for e in entries if e["command"].upper().startswith(b"EVALSHA")]
    return max(scripts, default=0) / 1000


async def _run(
    redis: Redis, dumps: dict[bytes, bytes]
) -> tuple[Report, float, tuple[int, int], tuple[int, int], float, float]:
    """(report, seconds, memory before, memory after, rerun seconds, longest script ms)."""
    await _restore(redis, dumps)
    before = await _memory(redis)
    await redis.slowlog_reset()
    report, seconds = await _migrate(redis)
    longest = await _longest_script_ms(redis)
    after = await _memory(redis)
    _, again = await _migrate(redis)
    return report, seconds, before, after, again, longest


async def _bench(url: str, runs: int) -> None:
    redis = connect(url)
    await redis.config_set("slowlog-log-slower-than", 100)
    await redis.config_set("slowlog-max-len", 100_000)
    try:
        took = time.perf_counter()
        dumps = await _plaintext(redis)
        took = time.perf_counter() - took
        results = [await _run(redis, dumps) for _ in range(runs)]
    finally:
        await redis.aclose()
    report = results[0][0]
    streams = report.sealed["history"] + report.sealed["prescriptions"]
    sealed = sum(report.sealed.values())
    print(
        f"migrate: {PATIENTS} patients, {report.sealed['history']:,} events and "
        f"{report.sealed['prescriptions']:,} prescription changes, written and processed "
        f"plaintext in {took:.1f} s",
        flush=True,
    )
    rates = sorted(streams / seconds for _, seconds, *_ in results)
    ROWS.append(Row("migrate encrypt, stream entries sealed", "events/s", *_spread(rates), runs))
    print("  " + ROWS[-1].line(), flush=True)
    before = statistics.median(r[2][0] for r in results) / 2**20
    after = statistics.median(r[3][0] for r in results) / 2**20
    events = report.sealed["history"]
    per_before = statistics.median(r[2][1] for r in results) / events
    per_after = statistics.median(r[3][1] for r in results) / events
    seconds = statistics.median(r[1] for r in results)
    rerun = statistics.median(r[4] for r in results)
    longest = max(r[5] for r in results)
    deleted = sum(report.deleted.values())
    notes = [
        f"migrate encrypt: {sealed:,} copies sealed ({streams:,} stream entries, "
        f"{report.sealed['snapshots']:,} snapshots) and {deleted:,} acknowledged feed "
        f"entries deleted in {seconds:.2f} s (median of {runs})",
        f"migrate encrypt: Redis used_memory {before:.1f} MiB before, {after:.1f} MiB after "
        "(the acknowledged feed entries gone, the data keys made)",
        f"migrate encrypt: a history entry takes {per_before:.0f} bytes plaintext, "
        f"{per_after:.0f} sealed (MEMORY USAGE of every history stream)",
        f"migrate encrypt: a rerun with nothing left to seal takes {rerun:.2f} s; "
        f"the longest script held Redis {longest:.1f} ms",
    ]
    for note in notes:
        print("  " + note, flush=True)
        NOTES.append(note)


def _spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), values[0], values[-1]


def main(runs: int = 3) -> None:
    with RedisServer.start(extra_args=("--appendonly", "no")) as server:
        asyncio.run(_bench(server.url, runs))


if __name__ == "__main__":
    main()
