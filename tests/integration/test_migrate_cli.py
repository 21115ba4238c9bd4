"""``backtrack migrate encrypt`` and ``backtrack keys rewrap`` as real processes on a real Redis."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from typing import Any

from redis.asyncio import Redis

from services.channels.queues import Queues
from shared import sealing
from shared.data_keys import DataKeys
from shared.keys import Keys
from shared.redis_store import connect
from shared.sealing import MasterKey, MasterKeys
from tests.conftest import data_keys_for
from tests.integration.plaintext_fixtures import GROUPS, PARTITIONS, Plain, deployment
from tests.integration.replay_fixtures import raw_stream

OLD, NEW = (hashlib.sha256(label).digest() for label in (b"old master", b"new master"))


def backtrack(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``backtrack ARGS`` in a process of its own against ``url``."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env={
            **os.environ,
            "BACKTRACK_REDIS_URL": url,
            "BACKTRACK_PARTITIONS": str(PARTITIONS),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _on(url: str, work: Any) -> Any:
    """``await work(client)`` with a client of ``url``, from a synchronous test."""

    async def go() -> Any:
        client = connect(url)
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


async def _health_data(redis: Redis) -> set[str]:
    """Every user id and event id of the deployment, and a score as it appears in JSON."""
    found = {'"score"', '"phase"'}
    async for key in redis.scan_iter(match="bt:{p*}:user:*"):
        found.add(key.decode().split(":user:")[1])
        for _, fields in await redis.xrange(key):
            found.add(fields[b"event_id"].decode())
    return found


async def _deliver_everything(redis: Redis, plain: Plain) -> None:
    """What the services would do next: every group reads and acknowledges its feeds, and
    the dispatcher delivers the queue's head."""
    keys = Keys(PARTITIONS)
    for kind, feeds in (("feed", keys.feeds()), ("rxfeed", keys.rxfeeds())):
        for feed in feeds:
            for group in GROUPS[kind]:
                await redis.xreadgroup(group, "c-1", {feed: ">"}, count=100_000)
                pending: Any = await redis.xpending_range(feed, group, "-", "+", 100_000)
                if pending:
                    await redis.xack(feed, group, *[p["message_id"] for p in pending])
    head: Any = await redis.lindex(plain.queue, 0)
    await Queues(redis).finish(plain.queue, head, int(time.time() * 1000))


def test_migrate_exits_3_until_everything_is_acknowledged_then_0_and_shows_no_health_data(
    redis_url: str,
) -> None:
    """The first run leaves what groups still hold (exit 3); once the services caught up, a
    rerun leaves nothing (exit 0); neither output names a patient, an event or a value."""
    url = redis_url
    plain = _on(url, lambda r: deployment(r, data_keys_for(r, PARTITIONS)))
    secrets = _on(url, _health_data)
    first = backtrack(url, "migrate", "encrypt")
    assert first.returncode == 3, first.stderr
    assert "left for a rerun" in first.stdout
    _on(url, lambda r: _deliver_everything(r, plain))
    second = backtrack(url, "migrate", "encrypt")
    assert second.returncode == 0, second.stderr
    assert "nothing plaintext is left" in second.stdout
    for done in (first, second):
        output = done.stdout + done.stderr
        assert not [s for s in secrets if s in output]

    async def plaintext_in_feeds(redis: Redis) -> int:
        keys = Keys(PARTITIONS)
        feeds = (*keys.feeds(), *keys.rxfeeds())
        entries = [entry for feed in feeds for entry in await raw_stream(redis, feed)]
        return sum(b"enc" not in fields for _, fields in entries)

    assert _on(url, plaintext_in_feeds) == 0


def test_migrate_refuses_with_encryption_off(redis_url: str) -> None:
    """With BACKTRACK_ENCRYPT_AT_REST=0 there is nothing to seal with: exit 2, nothing done."""
    url = redis_url
    done = backtrack(url, "migrate", "encrypt", BACKTRACK_ENCRYPT_AT_REST="0")
    assert done.returncode == 2
    assert "encryption at rest is off" in done.stdout


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


async def _keys_under_old(redis: Redis) -> list[str]:
    """Three patients' data keys, made under the old master key."""
    old = DataKeys(redis, Keys(PARTITIONS), MasterKeys(MasterKey(OLD)))
    users = ["k-1", "k-2", "k-3"]
    fields = [{"type": "T", "event_id": "e", "user_id": u, "data": b"{}"} for u in users]
    await old.seal_many(fields)
    return [Keys(PARTITIONS).data_key(u) for u in users]


def test_keys_rewrap_moves_every_data_key_to_the_new_master_key(redis_url: str) -> None:
    """After a rotation's deploy, rewrap puts every key under the new master key; a rerun
    finds them current; without the old key configured it says so and exits 1."""
    url = redis_url
    names = _on(url, _keys_under_old)
    rotated = {"BACKTRACK_MASTER_KEY": _b64(NEW)}
    refused = backtrack(url, "keys", "rewrap", **rotated)
    assert refused.returncode == 1
    assert "BACKTRACK_PREVIOUS_MASTER_KEYS" in refused.stdout
    rotated["BACKTRACK_PREVIOUS_MASTER_KEYS"] = json.dumps([_b64(OLD)])
    done = backtrack(url, "keys", "rewrap", **rotated)
    assert done.returncode == 0, done.stderr
    assert "3 data keys rewrapped, 0 current already" in done.stdout
    again = backtrack(url, "keys", "rewrap", **rotated)
    assert "0 data keys rewrapped, 3 current already" in again.stdout

    async def wrapped_by(redis: Redis) -> set[str]:
        return {sealing.wrapped_by(await redis.get(name)) for name in names}

    assert _on(url, wrapped_by) == {MasterKey(NEW).id}
