"""The prescriber process: nothing stranded on SIGTERM, nothing skipped on first start."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import redis

from services.cli.stack import Stack
from services.prescriber.feeds.consumer import GROUP
from shared import cohort
from shared.auth import issue
from shared.codec import dumps
from shared.keys import Keys
from shared.redis_server import free_port
from shared.redis_store import RedisStore, connect
from tests.e2e.conftest import SECRET


def _post_cohort(stack: Stack, patients: int) -> list[str]:
    token = issue("operator", None, SECRET)
    arrivals = list(cohort.simulate(patients, seed=11))
    with httpx.Client(
        base_url=stack.ingest_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        for start in range(0, len(arrivals), 500):
            chunk = arrivals[start : start + 500]
            body = b'{"events":[' + b",".join(dumps(a.event) for a in chunk) + b"]}"
            http.post("/v1/events/batch", content=body).raise_for_status()
    return sorted({a.event.user_id for a in arrivals})


def _backlog(client: redis.Redis, keys: Keys) -> tuple[int, int]:
    lag = pending = 0
    for feed in keys.feeds():
        for group in client.xinfo_groups(feed):
            if group["name"] == GROUP.encode():
                lag += group["lag"] or 0
                pending += group["pending"]
    return lag, pending


def test_sigterm_drains_in_flight_batch_and_restart_catches_up(stack: Stack) -> None:
    """After SIGTERM no entry is left pending; a restarted prescriber works off the rest."""
    prescriber = stack.processes["prescriber"]
    # Frozen while the cohort is posted, so a backlog is certain however fast it drains.
    prescriber.send_signal(signal.SIGSTOP)
    try:
        users = _post_cohort(stack, patients=60)
    finally:
        prescriber.send_signal(signal.SIGCONT)
    prescriber.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once its graceful shutdown is done
    assert prescriber.wait(timeout=60) in (0, -signal.SIGTERM)
    keys = Keys(stack.settings.partitions)
    with redis.Redis.from_url(stack.redis_url) as client:
        lag, pending = _backlog(client, keys)
        assert lag > 0, "the stop must come mid-backlog for this test to mean anything"
        assert pending == 0
        env = {
            **os.environ,
            "BACKTRACK_REDIS_URL": stack.redis_url,
            "BACKTRACK_PARTITIONS": str(stack.settings.partitions),
            "BACKTRACK_CLINIC_PORT": str(stack.settings.clinic_port),
            "BACKTRACK_SECRET": SECRET,
        }
        stack.processes["prescriber"] = subprocess.Popen(
            [sys.executable, "-m", "services.prescriber"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while _backlog(client, keys) != (0, 0):
            assert time.monotonic() < deadline, "backlog did not drain"
            time.sleep(0.2)
        rx = [keys.rx(u) for u in users]
        assert all(client.xlen(key) > 0 for key in rx)


def test_events_logged_before_the_first_prescriber_start_are_prescribed(
    own_redis_server: Any,
) -> None:
    """A log filled while no prescriber ever ran is worked off when one first starts."""
    server = own_redis_server()
    events = [a.event for a in cohort.simulate(3, seed=2)][:60]

    async def fill() -> None:
        client = connect(server.url)
        await RedisStore(client, partitions=4).append_many(events)
        await client.aclose()

    asyncio.run(fill())
    port = free_port()
    env = {
        **os.environ,
        "BACKTRACK_REDIS_URL": server.url,
        "BACKTRACK_PARTITIONS": "4",
        "BACKTRACK_CLINIC_PORT": str(port),
        "BACKTRACK_SECRET": SECRET,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.prescriber"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        keys = Keys(4)
        with redis.Redis.from_url(server.url) as client:
            deadline = time.monotonic() + 60
            users = {e.user_id for e in events}
            while not all(client.xlen(keys.rx(u)) for u in users):
                assert time.monotonic() < deadline, "events logged before start were skipped"
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=30)
