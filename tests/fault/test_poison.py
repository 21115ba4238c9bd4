"""Poison written straight into a partition feed is dead-lettered; the partition keeps flowing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import pytest
import redis

from shared import cohort
from shared.keys import Keys
from shared.redis_server import free_port
from shared.redis_store import RedisStore, connect

pytestmark = pytest.mark.fault

POISON: dict[str, dict[bytes, bytes]] = {
    "garbage fields": {b"junk": b"\x00\x01", b"more": b"junk"},
    "unknown type": {
        b"type": b"PainForgotten",
        b"user_id": b"p-x",
        b"event_id": b"1",
        b"data": b'{"type":"PainForgotten","user_id":"p-x"}',
    },
    "10 MB value": {b"type": b"PainLogged", b"user_id": b"p-x", b"data": b"{" + b"x" * 10_000_000},
    "invalid UTF-8": {b"type": b"PainLogged", b"user_id": b"p-x", b"data": b"\xff\xfe\xfd"},
}


def test_poison_entries_are_dead_lettered_with_reasons(own_redis_server: Any) -> None:
    """Each kind of poison lands in bt:dlq with its reason; good events after it still flow."""
    server = own_redis_server()
    keys = Keys(1)
    events = [a.event for a in cohort.simulate(2, seed=4)][:30]
    with redis.Redis.from_url(server.url) as client:
        for fields in POISON.values():
            client.xadd(keys.feed(0), fields)

    async def fill() -> None:
        client = connect(server.url)
        await RedisStore(client, partitions=1).append_many(events)
        await client.aclose()

    asyncio.run(fill())
    env = {
        **os.environ,
        "BACKTRACK_REDIS_URL": server.url,
        "BACKTRACK_PARTITIONS": "1",
        "BACKTRACK_CLINIC_PORT": str(free_port()),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.prescriber"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with redis.Redis.from_url(server.url) as client:
            deadline = time.monotonic() + 60
            users = {e.user_id for e in events}
            while client.xlen(keys.dlq) < len(POISON) or not all(
                client.xlen(keys.rx(u)) for u in users
            ):
                assert time.monotonic() < deadline, "poison stalled the partition"
                time.sleep(0.1)
            letters = [f for _, f in client.xrange(keys.dlq)]
            [group] = client.xinfo_groups(keys.feed(0))
            assert (group["lag"], group["pending"]) == (0, 0)
    finally:
        process.terminate()
        process.wait(timeout=30)
    reasons = [f[b"error"].decode() for f in letters]
    assert reasons[0] == "feed entry has no user_id"
    assert all(r.startswith("unreadable feed entry") for r in reasons[1:])
    assert "PainForgotten" in reasons[1]
    assert all(f[b"stream"] == keys.feed(0).encode() for f in letters)
