"""Prescriber cost per event against the length of a user's history (snapshots keep it flat).

For each history length, one simulated patient's log is stored and processed;
then 40 more events are appended and processed one at a time, either by a
processor with the user cached (warm) or by a new processor each time, which
loads the snapshot and the newer history from Redis (cold).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from services.prescriber.processing.processor import Processor
from shared import cohort
from shared.events import Input
from shared.redis_server import RedisServer
from shared.redis_store import RedisStore, connect
from tests.bench.report import NOTES

LENGTHS = (10, 100, 1000, 5000)
TAIL = 40


def _course(length: int) -> list[Input]:
    person = next(p for p in cohort.patients(20, seed=6) if p.archetype == "improver")
    weeks = 1 + (length + TAIL) // 12
    events = [a.event for a in cohort.history(person, seed=6, weeks=weeks)]
    return sorted(events, key=lambda e: e.occurred_at)[: length + TAIL]


async def _cost(url: str, events: list[Input], length: int) -> tuple[float, float]:
    client = connect(url)
    await client.flushall()
    store = RedisStore(client)
    user = events[0].user_id
    warm = Processor(store, snapshot_every=50)
    await store.append_many(events[:length])
    await warm.process_user(user)
    await warm.flush()
    times: dict[str, list[float]] = {"warm": [], "cold": []}
    for i, event in enumerate(events[length:]):
        await store.append(event)
        kind = "warm" if i % 2 else "cold"
        processor = warm if kind == "warm" else Processor(store, snapshot_every=50)
        started = time.perf_counter()
        await processor.process_user(user)
        times[kind].append(time.perf_counter() - started)
        if kind == "cold":
            await processor.flush()
            warm = Processor(store, snapshot_every=50)
            await warm.process_user(user)
    await client.aclose()
    return (
        1e6 * sorted(times["warm"])[len(times["warm"]) // 2],
        1e6 * sorted(times["cold"])[len(times["cold"]) // 2],
    )


def main(path: Path = Path("docs/bench-history-cost.png")) -> None:
    rows = []
    with RedisServer.start() as server:
        for length in LENGTHS:
            events = _course(length)
            warm, cold = asyncio.run(_cost(server.url, events, length))
            rows.append((length, warm, cold))
            print(
                f"history {length:>5} events: per new event {warm:8.0f} us warm, "
                f"{cold:8.0f} us cold (snapshot + newer history)",
                flush=True,
            )
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    ax.plot([r[0] for r in rows], [r[1] for r in rows], "o-", label="user cached (warm)")
    ax.plot([r[0] for r in rows], [r[2] for r in rows], "s-", label="snapshot load (cold)")
    ax.set(
        xscale="log",
        xlabel="events in the user's history",
        ylim=(0, None),
        ylabel="µs per new event (median)",
        title="prescriber cost per event vs history length",
    )
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    NOTES.append(
        "cost per event vs history length: "
        + ", ".join(f"{n}: {w:.0f}/{c:.0f} us (warm/cold)" for n, w, c in rows)
        + f"; plot {path}"
    )


if __name__ == "__main__":
    main()
