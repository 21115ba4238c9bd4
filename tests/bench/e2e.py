"""End to end: from an event's 202 to the webhook that its change caused.

The whole stack runs as real processes (ingest, prescriber, channels) on
its own Redis; a signature-checking receiver stands in for the clinics (one
subscription per clinic). Events of a simulated cohort are posted one per
request, paced to the rate; each webhook's ``caused_by`` names the event it
came from, so its latency is the time from that event's 202 to the
webhook's arrival, on one clock.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx

from services.cli.stack import Stack
from shared import cohort
from shared.auth import issue
from shared.codec import dumps
from shared.cohort.profile import CLINICS
from shared.redis_server import RedisServer, free_port
from shared.settings import Settings
from tests.bench.report import NOTES
from tests.webhook_receiver import Receiver, receiver_factory

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


def _subscribe(stack: Stack, receiver: Receiver) -> None:
    token = issue("operator", None, SECRET)
    with httpx.Client(
        base_url=stack.channels_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as http:
        for clinic in CLINICS:
            http.post(
                "/v1/subscriptions", json={"url": receiver.url, "clinic_id": clinic}
            ).raise_for_status()


def run(rate: float, seconds: float) -> dict[str, float]:
    arrivals = list(cohort.simulate(int(rate * seconds / 150) + 20, seed=21))
    chosen = [a.event for a in arrivals][: int(rate * seconds)]
    bodies = [dumps(e) for e in chosen]
    ids = [str(e.event_id) for e in chosen]
    with RedisServer.start() as server, receiver_factory() as start_receiver:
        settings = Settings(
            redis_url=server.url,
            secret=SECRET,
            ingest_port=free_port(),
            clinic_port=free_port(),
            channels_port=free_port(),
            webhook_allow_private=True,
        )
        receiver = start_receiver()
        with Stack(settings, quiet=True) as stack:
            _subscribe(stack, receiver)
            answered = asyncio.run(_post(stack, bodies, ids, rate))
            time.sleep(3)  # the last changes' webhooks
            first: dict[str, float] = {}
            for got in receiver.delivered():
                sent = answered.get(got.body["caused_by"])
                if sent is not None:
                    first.setdefault(got.webhook_id, 1000 * (got.at - sent))
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
