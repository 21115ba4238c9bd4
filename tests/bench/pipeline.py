"""Ingest over HTTP and the prescriber, against the raw Redis limits measured in the same run.

Each figure is a ratio to what redis-py itself achieves on the same server a
moment earlier, because these 2-core machines are noisy. The HTTP client runs
on the same machine as the server, so ingest figures include its cost too.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import redis.asyncio as aioredis

from shared import cohort
from shared.auth import issue
from shared.codec import dumps, to_fields
from shared.events import Input
from shared.keys import Keys
from shared.redis_server import RedisServer, free_port
from shared.redis_store import RedisStore, connect
from tests.bench import rawhttp
from tests.bench.report import NOTES, measure

SECRET = "bench-secret"
PARTITIONS = 16


def _events(patients: int, seed: int) -> list[Input]:
    return [a.event for a in cohort.simulate(patients, seed)]


@contextmanager
def service(
    module: str, url: str, port_var: str, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``python -m module`` on ``url`` until ready; yield its base URL and process."""
    port = free_port()
    env = {
        **os.environ,
        "BACKTRACK_REDIS_URL": url,
        "BACKTRACK_SECRET": SECRET,
        "BACKTRACK_PARTITIONS": str(PARTITIONS),
        port_var: str(port),
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base, process
    finally:
        process.terminate()
        process.wait(timeout=30)


async def raw_xadd(url: str, events: list[Input]) -> float:
    """redis-py pipelined XADD, batches of 1,000, plain fields (the physical limit)."""
    client = connect(url)
    fields = [to_fields(e) for e in events]
    started = time.perf_counter()
    for start in range(0, len(fields), 1000):
        pipe = client.pipeline(transaction=False)
        for item in fields[start : start + 1000]:
            pipe.xadd("bench:raw", item)
        await pipe.execute()
    elapsed = time.perf_counter() - started
    await client.delete("bench:raw")
    await client.aclose()
    return len(fields) / elapsed


async def raw_consume(url: str, events: list[Input]) -> float:
    """XREADGROUP COUNT 100 + decode + one XACK per batch over a prefilled stream."""
    client = connect(url)
    pipe = client.pipeline(transaction=False)
    for event in events:
        pipe.xadd("bench:consume", to_fields(event))
    await pipe.execute()
    await client.xgroup_create("bench:consume", "g", id="0")
    from shared.codec import from_fields  # noqa: PLC0415

    started, seen = time.perf_counter(), 0
    while seen < len(events):
        reply = await client.xreadgroup("g", "c", {"bench:consume": ">"}, count=100)
        batch = reply[0][1]
        for _, entry in batch:
            from_fields(entry)
        await client.xack("bench:consume", "g", *(i for i, _ in batch))
        seen += len(batch)
    elapsed = time.perf_counter() - started
    await client.delete("bench:consume")
    await client.aclose()
    return seen / elapsed


async def ingest_single(base: str, events: list[Input], connections: int = 16) -> float:
    """Single-event POSTs over keep-alive connections as fast as they go; requests/s."""
    host, port = base.removeprefix("http://").split(":")
    token = issue("operator", None, SECRET)
    requests = [rawhttp.request(host, int(port), "/v1/events", dumps(e), token) for e in events]
    started = time.perf_counter()
    _, statuses = await rawhttp.run(host, int(port), requests, connections)
    assert set(statuses) == {202}, set(statuses)
    return len(requests) / (time.perf_counter() - started)


async def ingest_latency(base: str, events: list[Input], rate: float = 1000) -> tuple[float, float]:
    """p50 and p99 (ms) of single-event POSTs started at ``rate`` per second."""
    host, port = base.removeprefix("http://").split(":")
    token = issue("operator", None, SECRET)
    requests = [rawhttp.request(host, int(port), "/v1/events", dumps(e), token) for e in events]
    latencies, _ = await rawhttp.run(host, int(port), requests, 64, rate=rate)
    latencies.sort()
    return 1000 * latencies[len(latencies) // 2], 1000 * latencies[int(0.99 * len(latencies))]


async def ingest_batch(base: str, events: list[Input], concurrency: int = 4) -> float:
    """500-event batch POSTs from a few concurrent clients; events per second."""
    token = issue("operator", None, SECRET)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    chunks = iter(
        [
            b'{"events":[' + b",".join(dumps(e) for e in events[i : i + 500]) + b"]}"
            for i in range(0, len(events), 500)
        ]
    )
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:

        async def worker() -> None:
            for body in chunks:
                (await http.post("/v1/events/batch", content=body)).raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(events) / (time.perf_counter() - started)


async def _grouped(client: aioredis.Redis, keys: Keys) -> bool:
    """Whether every feed has its consumer group (then its lag counts what is left)."""
    return all([await client.xinfo_groups(feed) for feed in keys.feeds()])


async def _lag(client: aioredis.Redis, keys: Keys) -> int:
    total = 0
    for feed in keys.feeds():
        for group in await client.xinfo_groups(feed):
            total += (group["lag"] or 0) + group["pending"]
    return total


async def prescriber_rate(url: str, events: list[Input]) -> float:
    """Prefill the log, start a prescriber, time until it has consumed every entry."""
    client = connect(url)
    await client.flushall()
    await RedisStore(client, partitions=PARTITIONS).append_many(events)
    await client.aclose()
    return await prescriber_drain(url, len(events))


async def prescriber_drain(url: str, count: int, extra_env: dict[str, str] | None = None) -> float:
    """Start a prescriber on a prefilled log; ``count`` over the time until it has consumed it."""
    client = connect(url)
    keys = Keys(PARTITIONS)
    with service("services.prescriber", url, "BACKTRACK_CLINIC_PORT", extra_env):
        started = time.perf_counter()
        while not await _grouped(client, keys):  # the group appears once the prescriber starts
            await asyncio.sleep(0.01)
        while await _lag(client, keys):
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    await client.aclose()
    return count / elapsed


def main(patients: int = 120) -> None:
    events = _events(patients, seed=5)
    print(f"pipeline: {len(events):,} events of {patients} simulated patients")
    with RedisServer.start() as server:
        url = server.url
        xadd = measure(
            "raw redis-py pipelined XADD (1,000/batch)",
            "events/s",
            lambda: asyncio.run(raw_xadd(url, events)),
        )
        consume = measure(
            "raw XREADGROUP+decode+XACK (100/batch)",
            "events/s",
            lambda: asyncio.run(raw_consume(url, events)),
        )
        with service("services.logging_svc", url, "BACKTRACK_INGEST_PORT") as (base, _):
            single = measure(
                "ingest, single-event requests (16 connections)",
                "requests/s",
                lambda: asyncio.run(fresh(url, ingest_single(base, events[:8000]))),
            )
            p50, p99 = asyncio.run(fresh(url, ingest_latency(base, events[:10000])))
            print(f"  single-event latency at 1,000 requests/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            batch = measure(
                "ingest, batch endpoint (500/request)",
                "events/s",
                lambda: asyncio.run(fresh(url, ingest_batch(base, events))),
            )
        # what the last batch run left in Redis: the log's memory per event
        stored = asyncio.run(bytes_per_event(url, len(events)))
        print("  Redis memory per stored event: " + _sizes(stored))
        rx = measure(
            "prescriber (one process, 16 partitions)",
            "events/s",
            lambda: asyncio.run(prescriber_rate(url, events)),
        )
    ratios = (
        f"ratios: batch ingest / raw XADD = {batch.median / xadd.median:.2f}; "
        f"prescriber / raw consume = {rx.median / consume.median:.2f}; "
        f"single-event requests / raw XADD = {single.median / xadd.median:.3f}"
    )
    print("  " + ratios)
    NOTES.append(ratios)
    NOTES.append(
        f"single-event ingest latency at 1,000 requests/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )
    NOTES.append("Redis memory per stored event (MEMORY USAGE): " + _sizes(stored))


async def bytes_per_event(url: str, events: int) -> dict[str, float]:
    """MEMORY USAGE of every key, summed by kind (history, feed, dedupe), per event."""
    client = connect(url)
    kinds = {"user": "history", "feed": "feed", "seen": "dedupe key"}
    total = dict.fromkeys(kinds.values(), 0.0)
    async for key in client.scan_iter(count=1000):
        kind = kinds.get(key.decode().split(":")[2])
        if kind is not None:
            total[kind] += await client.memory_usage(key, samples=0) or 0
    await client.aclose()
    return {kind: size / events for kind, size in total.items()}


def _sizes(stored: dict[str, float]) -> str:
    parts = ", ".join(f"{kind} {size:,.0f} B" for kind, size in stored.items())
    return f"{sum(stored.values()):,.0f} B ({parts})"


async def fresh(url: str, work: Any) -> Any:
    """Flush the log first, so every run stores new events rather than duplicates."""
    client = connect(url)
    await client.flushall()
    await client.aclose()
    return await work


if __name__ == "__main__":
    main()
