"""One device floods the ingest; how long do other devices wait for their 202 and their change?

A child process posts single events for one user with one device token as
fast as a few keep-alive connections go (by default 30,000 of them); that
token's bucket empties within the first thousand and the rest are 429. Meanwhile,
and before the flood for comparison, other devices (each its own user and
token) post a ``RehabStarted``, and the time to its 202 and to its
``PrescriptionChanged`` being stored (the user's rx stream growing) is
measured. The e2e test ``tests/e2e/test_limits.py`` uses the same pieces.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import httpx
import orjson
import redis

from services.cli.stack import Stack
from shared.auth import issue
from shared.keys import Keys
from shared.redis_server import RedisServer, free_port
from shared.settings import Settings
from tests.bench import rawhttp
from tests.bench.report import NOTES

SECRET = "flood-secret"


def pain(user: str, minutes_ago: float = 30) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {
        "event_id": str(uuid.uuid4()),
        "type": "PainLogged",
        "user_id": user,
        "occurred_at": at.isoformat(),
        "score": 3,
        "context": "morning",
    }


def started(user: str) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(hours=1)
    return {
        "event_id": str(uuid.uuid4()),
        "type": "RehabStarted",
        "user_id": user,
        "occurred_at": at.isoformat(),
        "onset_date": (at.date() - timedelta(days=10)).isoformat(),
        "cause": "gradual",
    }


@dataclass
class Flooded:
    """What the flooding client saw: statuses of its requests and when it ran."""

    statuses: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


def _flood(
    url: str, token: str, user: str, requests: int, connections: int, out: Connection
) -> None:
    host, port = url.removeprefix("http://").split(":")
    bodies = [
        rawhttp.request(host, int(port), "/v1/events", orjson.dumps(pain(user)), token)
        for _ in range(requests)
    ]
    out.send("ready")
    out.recv()
    began = time.perf_counter()
    _, statuses = asyncio.run(rawhttp.run(host, int(port), bodies, connections))
    out.send((Counter(statuses), time.perf_counter() - began))


@contextmanager
def flooding(
    url: str, token: str, user: str, requests: int = 30_000, connections: int = 8
) -> Iterator[Flooded]:
    """Flood ``url`` from a child process while the body runs; the result is filled on exit."""
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    child = multiprocessing.get_context("spawn").Process(
        target=_flood, args=(url, token, user, requests, connections, theirs), daemon=True
    )
    child.start()
    assert ours.recv() == "ready"
    ours.send("go")
    result = Flooded()
    try:
        yield result
    finally:
        statuses, seconds = ours.recv()
        child.join(30)
        result.statuses.update(statuses)
        result.seconds = seconds


def served(stack: Stack, user: str) -> tuple[float, float]:
    """A new device's RehabStarted: ms from posting it to its 202, and to its change stored."""
    token = {"Authorization": f"Bearer {issue('device', user, stack.settings.secret)}"}
    rx = Keys(stack.settings.partitions).rx(user)
    with redis.Redis.from_url(stack.redis_url) as client:
        began = time.perf_counter()
        reply = httpx.post(f"{stack.ingest_url}/v1/events", json=started(user), headers=token)
        answered = time.perf_counter()
        assert reply.status_code == 202, reply.text
        deadline = answered + 60
        while not client.xlen(rx):
            assert time.perf_counter() < deadline, f"no change stored for {user}"
            time.sleep(0.002)
        stored = time.perf_counter()
    return 1000 * (answered - began), 1000 * (stored - began)


def figures(samples: list[tuple[float, float]]) -> str:
    posted, stored = zip(*samples, strict=True)
    return (
        f"to 202 median {statistics.median(posted):.1f} ms (max {max(posted):.1f}), "
        f"to change stored median {statistics.median(stored):.1f} ms (max {max(stored):.1f})"
    )


def run(stack: Stack, samples: int = 5, requests: int = 30_000) -> dict[str, str]:
    """Quiet samples, then the same during a flood; the figures as text."""
    quiet = [served(stack, f"calm-{i}") for i in range(samples)]
    token = issue("device", "flooder", stack.settings.secret)
    with flooding(stack.ingest_url, token, "flooder", requests) as flood:
        busy = [served(stack, f"busy-{i}") for i in range(samples)]
    return {
        "quiet": figures(quiet),
        "flood": figures(busy),
        "flooder": (
            f"{flood.requests:,} requests in {flood.seconds:.1f} s: "
            + ", ".join(f"{n:,} x {status}" for status, n in sorted(flood.statuses.items()))
        ),
    }


def main() -> None:
    print("flood: one device posts 30,000 single events; other devices' latency")
    with RedisServer.start() as server:
        settings = Settings(
            redis_url=server.url,
            secret=SECRET,
            partitions=16,
            ingest_port=free_port(),
            clinic_port=free_port(),
            channels_port=free_port(),
        )
        with Stack(settings, quiet=True) as stack:
            result = run(stack)
    for name, text in result.items():
        print(f"  {name:<8} {text}")
    NOTES.append("flood of one device token: " + "; ".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
