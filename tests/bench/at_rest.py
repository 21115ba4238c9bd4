"""What encryption at rest costs: ingest, prescriber and replay, sealed and plain, in one run.

Each figure is measured with ``BACKTRACK_ENCRYPT_AT_REST`` on and off, the two
runs alternating on the same server so that the machine's noise falls on both
alike; the cost is the drop of the median with it on. Sealing is AES-256-GCM
per entry under the patient's data key (``shared.data_keys``); opening is the
same on the way out.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import statistics
import time
from typing import Any

from services.replay import scan
from shared import cohort
from shared.data_keys import DataKeys
from shared.events import Input
from shared.keys import Keys
from shared.redis_server import RedisServer
from shared.redis_store import RedisStore, connect
from shared.sealing import MasterKey, MasterKeys
from tests.bench import pipeline
from tests.bench.report import NOTES, ROWS, Row

PARTITIONS = pipeline.PARTITIONS
MASTER_KEY = hashlib.sha256(b"backtrack bench master key").digest()
MASTERS = MasterKeys(MasterKey(MASTER_KEY))


def _env(on: bool) -> dict[str, str]:
    """The services' settings: sealing on or off, and the master key the prefill used."""
    return {
        "BACKTRACK_ENCRYPT_AT_REST": "1" if on else "0",
        "BACKTRACK_MASTER_KEY": base64.b64encode(MASTER_KEY).decode(),
    }


async def _store(url: str, on: bool) -> tuple[Any, RedisStore]:
    client = connect(url)
    keys = DataKeys(client, Keys(PARTITIONS), MASTERS, seals=on)
    return client, RedisStore(client, PARTITIONS, data_keys=keys)


async def _prefill(url: str, events: list[Input], on: bool) -> None:
    client, store = await _store(url, on)
    await client.flushall()
    for start in range(0, len(events), 500):
        await store.append_many(events[start : start + 500])
    await client.aclose()


def ingest(url: str, events: list[Input], on: bool) -> float:
    """Events/s through the batch endpoint (500 per request) of one ingest process."""
    with pipeline.service("services.logging_svc", url, "BACKTRACK_INGEST_PORT", _env(on)) as (
        base,
        _,
    ):
        return float(asyncio.run(pipeline.fresh(url, pipeline.ingest_batch(base, events))))


def prescriber(url: str, events: list[Input], on: bool) -> float:
    """Events/s one prescriber process consumes from a prefilled log (sealed if ``on``)."""
    asyncio.run(_prefill(url, events, on))
    return asyncio.run(pipeline.prescriber_drain(url, len(events), _env(on)))


async def _replay(url: str) -> float:
    client = connect(url)
    data_keys = DataKeys(client, Keys(PARTITIONS), MASTERS)
    keys = Keys(PARTITIONS)
    started = time.perf_counter()
    users = await scan.user_ids(client, keys)
    total = 0
    async for logs in scan.stream_histories(client, keys, users, data_keys=data_keys):
        total += sum(len(log.entries) for log in logs)
    seconds = time.perf_counter() - started
    await client.aclose()
    return total / seconds


def replay(url: str, events: list[Input], on: bool) -> float:
    """Events/s read back and decoded by the replay tools' scan (opened if sealed)."""
    asyncio.run(_prefill(url, events, on))
    return asyncio.run(_replay(url))


def main(patients: int = 120, runs: int = 3) -> None:
    events = [a.event for a in cohort.simulate(patients, seed=5)]
    print(f"at rest: {len(events):,} events, encryption on and off alternately, {runs} runs each")
    with RedisServer.start(extra_args=("--appendonly", "no")) as server:
        for name, run in (("ingest batch", ingest), ("prescriber", prescriber), ("replay", replay)):
            rates: dict[bool, list[float]] = {True: [], False: []}
            run(server.url, events, True)  # a warm-up: caches, imports, Redis's allocator
            for _ in range(runs):
                for on in (False, True):
                    rates[on].append(run(server.url, events, on))
            medians = {on: statistics.median(r) for on, r in rates.items()}
            for on in (False, True):
                label = f"{name}, encryption {'on' if on else 'off'}"
                r = sorted(rates[on])
                ROWS.append(Row(label, "events/s", medians[on], r[0], r[-1], runs))
                print("  " + ROWS[-1].line(), flush=True)
            cost = 1 - medians[True] / medians[False]
            note = f"encryption at rest costs {cost:.0%} of {name} throughput (target: at most 15%)"
            print("  " + note, flush=True)
            NOTES.append(note)


if __name__ == "__main__":
    main()
