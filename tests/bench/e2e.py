"""End to end: from an event's 202 to the webhook that its change caused.

The whole stack runs as real processes (ingest, prescriber, channels) on
its own Redis; a receiver in a process of its own stands in for the clinics
(one subscription per clinic), so the load generator's work never delays
its clock. Events of a simulated cohort are posted one per request, paced to
the rate; each webhook's ``caused_by`` names the event it came from, so its
latency is the time from that event's 202 to the webhook's arrival, on the
machine's monotonic clock, which both processes read.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

import httpx
import orjson
import redis

from services.cli.stack import Stack
from shared import cohort
from shared.auth import issue
from shared.codec import dumps
from shared.cohort.profile import CLINICS
from shared.keys import Keys
from shared.redis_server import RedisServer, free_port
from shared.settings import Settings
from tests.bench import rawhttp
from tests.bench.report import NOTES
from tests.webhook_receiver import Receiver, serve

SECRET = "e2e-secret"


async def _post(stack: Stack, events: list[bytes], ids: list[str], rate: float) -> dict[str, float]:
    """Post each event alone, paced to ``rate``; the monotonic time of each 202 by event id."""
    host, port = stack.ingest_url.removeprefix("http://").split(":")
    token = issue("operator", None, SECRET)
    requests = [rawhttp.request(host, int(port), "/v1/events", body, token) for body in events]
    answered: dict[int, tuple[int, float]] = {}
    await rawhttp.run(host, int(port), requests, 64, rate=rate, answered=answered)
    return {ids[i]: at for i, (status, at) in answered.items() if status == 202}


def _receive(port: int, conn: Connection) -> None:
    """The receiver process: serve until asked, then send (caused_by, webhook_id, at) back."""
    serving = serve(Receiver(port=port))
    receiver = next(serving)
    conn.send("ready")
    conn.recv()
    conn.send([(r.body["caused_by"], r.webhook_id, r.at) for r in receiver.delivered()])
    serving.close()


@contextmanager
def _receiver_process() -> Iterator[tuple[str, Connection]]:
    """A receiver in its own process: its URL and the pipe that fetches what it received."""
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    port = free_port()
    process = ctx.Process(target=_receive, args=(port, theirs), daemon=True)
    process.start()
    try:
        if not mine.poll(30) or mine.recv() != "ready":
            raise RuntimeError("webhook receiver did not start")
        yield f"http://127.0.0.1:{port}/hook", mine
    finally:
        process.terminate()
        process.join(timeout=10)


def _subscribe(stack: Stack, url: str) -> None:
    token = issue("operator", None, SECRET)
    with httpx.Client(
        base_url=stack.channels_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as http:
        for clinic in CLINICS:
            http.post(
                "/v1/subscriptions", json={"url": url, "clinic_id": clinic}
            ).raise_for_status()


def run(rate: float, seconds: float) -> dict[str, Any]:
    arrivals = list(cohort.simulate(int(rate * seconds / 150) + 20, seed=21))
    chosen = [a.event for a in arrivals][: int(rate * seconds)]
    bodies = [dumps(e) for e in chosen]
    ids = [str(e.event_id) for e in chosen]
    with RedisServer.start() as server, _receiver_process() as (url, receiver):
        settings = Settings(
            redis_url=server.url,
            secret=SECRET,
            ingest_port=free_port(),
            clinic_port=free_port(),
            channels_port=free_port(),
            webhook_allow_private=True,
        )
        with Stack(settings, quiet=True) as stack:
            _subscribe(stack, url)
            answered = asyncio.run(_post(stack, bodies, ids, rate))
            time.sleep(3)  # the last changes' webhooks
            receiver.send("report")
            stored = _stored(server.url, settings.partitions)
            first: dict[str, tuple[float, float, float]] = {}
            for caused_by, webhook_id, at in receiver.recv():
                sent = answered.get(caused_by)
                if sent is not None and caused_by in stored:
                    parts = (at - sent, stored[caused_by] - sent, at - stored[caused_by])
                    first.setdefault(webhook_id, tuple(1000 * x for x in parts))  # type: ignore[arg-type]
    total, prescriber, channels = (sorted(x[i] for x in first.values()) for i in range(3))
    return {
        "events": len(answered),
        "webhooks": len(total),
        "p50 ms": statistics.median(total),
        "p99 ms": _p99(total),
        "max ms": total[-1],
        "p50/p99 ms to change stored": (statistics.median(prescriber), _p99(prescriber)),
        "p50/p99 ms change to webhook": (statistics.median(channels), _p99(channels)),
    }


def _p99(values: list[float]) -> float:
    return values[int(0.99 * (len(values) - 1))]


def _stored(url: str, partitions: int) -> dict[str, float]:
    """When each change was stored, by its cause: its rx feed entry id's milliseconds.

    Redis stamps entry ids with its wall clock; shifted onto the monotonic
    clock here, they split each latency into the prescriber's part and the
    channels' part (to about a millisecond).
    """
    offset = time.time() - time.monotonic()
    keys, stored = Keys(partitions), {}
    with redis.Redis.from_url(url) as client:
        for partition in range(partitions):
            for entry_id, fields in client.xrange(keys.rxfeed(partition)):
                caused_by = orjson.loads(fields[b"data"])["caused_by"]
                stored[caused_by] = int(entry_id.split(b"-")[0]) / 1000 - offset
    return stored


def main(rate: float = 500, seconds: float = 20) -> None:
    print(f"end to end: {rate:,.0f} single-event requests/s for {seconds:.0f} s, 202 to webhook")
    result = run(rate, seconds)
    for name, value in result.items():
        print(f"  {name:<30} {_text(value):>14}")
    NOTES.append(
        f"end to end at {rate:,.0f} events/s (202 to webhook received): "
        + ", ".join(f"{k} {_text(v)}" for k, v in result.items())
    )


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return " / ".join(f"{x:,.1f}" for x in value)
    return f"{value:,.1f}"


if __name__ == "__main__":
    main()
