"""A change is emitted once, forever: not only within the input dedupe window.

A patient's changes 2 and 3 come after the last snapshot; the prescriber is
killed (-9); the dedupe window passes; a restarted prescriber refolds from the
old snapshot and decides changes 2 and 3 again. The append script takes each
version once, so the history stays 1, 2, 3 and nothing new reaches the rx
feed that webhooks are sent from.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from services.prescriber.feeds.consumer import GROUP
from shared.events import Input, PrescriptionChanged
from shared.keys import Keys
from shared.redis_store import RedisStore, connect
from tests.fault.prescribers import start_prescriber
from tests.sealed import decoded
from tests.unit.engine.factories import answered, at, daily_baselines, make_pain, make_start

pytestmark = pytest.mark.fault

PARTITIONS = 4
TTL = 2


def _start(url: str) -> subprocess.Popen[bytes]:
    return start_prescriber(url, PARTITIONS, dedupe_ttl_seconds=str(TTL), snapshot_every="10")


def _changes(client: redis.Redis, keys: Keys, user: str) -> list[PrescriptionChanged]:
    found = [decoded(client, f, keys.partitions) for _, f in client.xrange(keys.rx(user))]
    return [c for c in found if isinstance(c, PrescriptionChanged)]


def _announced(client: redis.Redis, keys: Keys, user: str) -> list[bytes]:
    """The change ids on the user's rx feed: one webhook each per subscription."""
    entries = client.xrange(keys.rxfeed_of(user))
    return [f[b"event_id"] for _, f in entries if f[b"user_id"] == user.encode()]


def _drained(client: redis.Redis, feed: str) -> bool:
    """The prescriber group has read and acknowledged every entry of the feed."""
    [group] = [g for g in client.xinfo_groups(feed) if g["name"] == GROUP.encode()]
    return bool(group["lag"] == 0 and group["pending"] == 0)


def _until(check: Callable[[], bool], patience: float = 60) -> None:
    deadline = time.monotonic() + patience
    while not check():
        assert time.monotonic() < deadline, "the prescriber did not get there"
        time.sleep(0.05)


def _append(url: str, events: list[Input]) -> None:
    """Store the events as a phone would send them: in the order they happened."""

    async def run() -> None:
        client = connect(url)
        try:
            store = RedisStore(client, partitions=PARTITIONS, dedupe_ttl=TTL)
            await store.append_many(sorted(events, key=lambda e: e.occurred_at))
        finally:
            await client.aclose()

    asyncio.run(run())


def test_changes_decided_again_after_the_dedupe_window_are_not_stored_twice(
    own_redis_server: Any,
) -> None:
    """Kill -9, wait past the window, one more event: versions stay 1, 2, 3, none re-announced."""
    server = own_redis_server()
    keys = Keys(PARTITIONS)
    before = [make_start(), *daily_baselines(0, 8), *answered(1), *answered(3), *answered(5)]
    before += answered(8, morning=None)  # 21 events: a snapshot, version 1 only
    after = [make_pain(occurred_at=at(9, 6), score=1, context="morning"), *answered(10, during=6)]
    user = before[0].user_id
    process = _start(server.url)
    try:
        with redis.Redis.from_url(server.url) as client:
            _append(server.url, before)
            _until(lambda: client.xlen(keys.rx(user)) == 1)
            process.terminate()  # a clean stop saves the snapshot at the end of `before`
            assert process.wait(timeout=30) in (0, -signal.SIGTERM)
            snapshot = client.hget(keys.snapshot(user), "position")
            assert snapshot == client.xrevrange(keys.history(user), count=1)[0][0]
            process = _start(server.url)
            _append(server.url, after)  # 4 events: versions 2 and 3, no new snapshot
            _until(lambda: len(_changes(client, keys, user)) == 3)
            assert client.hget(keys.snapshot(user), "position") == snapshot
            process.kill()
            process.wait()
            time.sleep(TTL + 1)
            assert not client.keys("bt:*:seen:*"), "the dedupe window has not passed"
            process = _start(server.url)
            last = make_pain(occurred_at=at(12, 7), score=2, context="morning")
            _append(server.url, [last])
            _until(lambda: client.xlen(keys.history(user)) == len(before) + len(after) + 1)
            _until(lambda: _drained(client, keys.feed_of(user)))
            changes = _changes(client, keys, user)
            assert [c.version for c in changes] == [1, 2, 3]
            assert [c.change for c in changes] == ["started", "progressed", "regressed"]
            announced = _announced(client, keys, user)
            assert len(announced) == len(set(announced)) == 3
    finally:
        process.kill()
        process.wait()
