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

import httpx

from services.cli.stack import Stack
from shared import cohort
from shared.auth import issue
from shared.codec import dumps
from shared.cohort.profile import CLINICS
from shared.redis_server import RedisServer, free_port
from shared.settings import Settings
from tests.bench.report import NOTES
from tests.webhook_receiver import Receiver, serve

SECRET = "e2e-secret"


async def _post(stack: Stack, events: list[bytes], ids: list[str], rate: float) -> dict[str, float]:
    """Post each event alone, paced to ``rate``; the monotonic time of each 202 by event id."""
    answered: dict[str, float] = {}
    headers = {
        "Authorization": f"Bearer {issue('operator', None, SECRET)}",
        "Content-Type": "application/json",
    }
    async with httpx.AsyncClient(base_url=stack.ingest_url, headers=headers, timeout=30) as http:

        async def one(body: bytes, event_id: str) -> None:
            reply = await http.post("/v1/events", content=body)
            if reply.status_code == 202:
                answered[event_id] = time.monotonic()

        started, tasks = time.monotonic(), []
        for i, (body, event_id) in enumerate(zip(events, ids, strict=True)):
            due = started + i / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            tasks.append(asyncio.create_task(one(body, event_id)))
        await asyncio.gather(*tasks)
    return answered


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


def run(rate: float, seconds: float) -> dict[str, float]:
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
            first: dict[str, float] = {}
            for caused_by, webhook_id, at in receiver.recv():
                sent = answered.get(caused_by)
                if sent is not None:
                    first.setdefault(webhook_id, 1000 * (at - sent))
    latencies = sorted(first.values())
    return {
        "events": len(answered),
        "webhooks": len(latencies),
        "p50 ms": statistics.median(latencies),
        "p99 ms": latencies[int(0.99 * (len(latencies) - 1))],
        "max ms": latencies[-1],
    }


def main(rate: float = 500, seconds: float = 20) -> None:
    print(f"end to end: {rate:,.0f} single-event requests/s for {seconds:.0f} s, 202 to webhook")
    result = run(rate, seconds)
    for name, value in result.items():
        print(f"  {name:<18} {value:>12,.1f}")
    NOTES.append(
        f"end to end at {rate:,.0f} events/s (202 to webhook received): "
        + ", ".join(f"{k} {v:,.1f}" for k, v in result.items())
    )


if __name__ == "__main__":
    main()
