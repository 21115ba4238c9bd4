"""Sustained mixed traffic over HTTP with the whole pipeline running.

Simulated phones post what their patients log, paced to a target rate: most
requests are small batches (a day's logs synced at once), some are single
events. Reports request latency (p50/p99), errors, and the prescriber's
consumer lag sampled every second, and draws the lag over time.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import redis.asyncio as aioredis

from services.cli.stack import Stack
from shared import cohort
from shared.auth import issue
from shared.codec import dumps
from shared.events import Input
from shared.keys import Keys
from shared.redis_server import RedisServer, free_port
from shared.settings import Settings
from tests.bench.report import NOTES

SECRET = "load-secret"
PARTITIONS = 16


def _requests(events: list[Input]) -> list[tuple[str, bytes, int]]:
    """Mixed traffic: every fifth request a single event, the rest batches of 1-40."""
    out: list[tuple[str, bytes, int]] = []
    i = n = 0
    while i < len(events):
        if n % 5 == 0:
            out.append(("/v1/events", dumps(events[i]), 1))
            i += 1
        else:
            size = 1 + (n * 7) % 40
            chunk = events[i : i + size]
            out.append(
                (
                    "/v1/events/batch",
                    b'{"events":[' + b",".join(dumps(e) for e in chunk) + b"]}",
                    len(chunk),
                )
            )
            i += size
        n += 1
    return out


async def _lag(client: aioredis.Redis, keys: Keys) -> int:
    total = 0
    for feed in keys.feeds():
        for group in await client.xinfo_groups(feed):
            if group["name"] == b"prescriber":
                total += (group["lag"] or 0) + group["pending"]
    return total


async def run_load(
    stack: Stack, rate: float, seconds: float, events: list[Input]
) -> dict[str, float]:
    requests = _requests(events)
    headers = {
        "Authorization": f"Bearer {issue('operator', None, SECRET)}",
        "Content-Type": "application/json",
    }
    latencies: list[float] = []
    errors = sent_events = 0
    lag_samples: list[tuple[float, int]] = []
    redis = aioredis.from_url(stack.redis_url)
    keys = Keys(PARTITIONS)
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(
        base_url=stack.ingest_url, headers=headers, limits=limits, timeout=30
    ) as http:
        started = time.perf_counter()

        async def one(path: str, body: bytes, count: int) -> None:
            nonlocal errors, sent_events
            t0 = time.perf_counter()
            try:
                reply = await http.post(path, content=body)
                ok = reply.status_code == 202
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            errors += not ok
            sent_events += count if ok else 0

        async def sample() -> None:
            while True:
                lag_samples.append((time.perf_counter() - started, await _lag(redis, keys)))
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample())
        tasks, budget = [], 0.0
        for path, body, count in requests:
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                break
            budget += count / rate
            if budget > elapsed:
                await asyncio.sleep(budget - elapsed)
            tasks.append(asyncio.create_task(one(path, body, count)))
        await asyncio.gather(*tasks)
        duration = time.perf_counter() - started
        while await _lag(redis, keys):
            await asyncio.sleep(0.5)
        drained = time.perf_counter() - started
        sampler.cancel()
    await redis.aclose()
    latencies.sort()
    _plot(lag_samples)
    return {
        "events/s": sent_events / duration,
        "requests": len(latencies),
        "errors": errors,
        "p50 ms": 1000 * statistics.median(latencies),
        "p99 ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "max lag": max(lag for _, lag in lag_samples),
        "drained after s": drained,
    }


def _plot(samples: list[tuple[float, int]], path: Path = Path("docs/load-lag.png")) -> None:
    path.parent.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    ax.plot([t for t, _ in samples], [lag for _, lag in samples], color="#1f4e79")
    ax.set(
        xlabel="seconds",
        ylabel="entries not yet prescribed",
        title="prescriber consumer lag under load",
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(rate: float = 2000, seconds: float = 60) -> None:
    events = [a.event for a in cohort.simulate(int(rate * seconds / 150) + 50, seed=9)]
    print(
        f"load: {rate:,.0f} events/s for {seconds:.0f} s over HTTP ({len(events):,} events ready)"
    )
    with RedisServer.start() as server:
        settings = Settings(
            redis_url=server.url,
            secret=SECRET,
            partitions=PARTITIONS,
            ingest_port=free_port(),
            clinic_port=free_port(),
            channels_port=free_port(),
        )
        with Stack(settings, quiet=True) as stack:
            result = asyncio.run(run_load(stack, rate, seconds, events))
    for name, value in result.items():
        print(f"  {name:<18} {value:>12,.1f}")
    print("  lag over time drawn to docs/load-lag.png")
    NOTES.append(
        f"load, {rate:,.0f} events/s for {seconds:.0f} s of mixed HTTP traffic: "
        + ", ".join(f"{k} {v:,.1f}" for k, v in result.items())
        + " (docs/load-lag.png)"
    )


if __name__ == "__main__":
    main()
