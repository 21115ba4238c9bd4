"""``backtrack migrate encrypt`` killed with SIGKILL mid-run, then run again: nothing lost."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

import pytest
import redis

from services.replay.stream_copies import TEMP_PATTERNS
from shared import cohort
from shared.codec import to_fields
from shared.data_keys import DataKeys
from shared.keys import Keys
from shared.redis_store import connect
from shared.settings import Settings

pytestmark = [pytest.mark.fault, pytest.mark.slow]

PARTITIONS = 8
COURSES, COPIES, WEEKS = 60, 16, 8

Streams = dict[bytes, list[tuple[bytes, dict[bytes, bytes]]]]


def _write_log(client: redis.Redis) -> int:
    """COURSES simulated courses, each under COPIES user ids, written plaintext straight into
    the users' histories (as an older version left them); returns the events written."""
    courses: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in cohort.events(COURSES, seed=8, weeks=WEEKS):
        courses[event.user_id].append(to_fields(event))
    keys, total = Keys(PARTITIONS), 0
    for original, entries in courses.items():
        pipe = client.pipeline(transaction=False)
        for copy in range(COPIES):
            user = f"{original}-c{copy:02d}"
            for fields in entries:
                data = fields["data"].replace(original.encode(), user.encode())
                pipe.xadd(keys.history(user), {**fields, "user_id": user, "data": data})
            total += len(entries)
        pipe.execute()
    return total


def _streams(client: redis.Redis) -> Streams:
    found: Streams = {}
    for key in client.scan_iter(match="bt:{p*}:user:*", count=1000):
        entries: Any = client.xrange(key)
        found[bytes(key)] = [(bytes(i), dict(f)) for i, f in entries]
    return found


def _opened(url: str, streams: Streams) -> Streams:
    """Every entry opened with the services' data keys (a plaintext one as it is)."""

    async def go() -> Streams:
        client = connect(url)
        data_keys = DataKeys(client, Keys(PARTITIONS), Settings().master_keys())
        try:
            return {
                key: list(
                    zip(
                        [i for i, _ in entries],
                        await data_keys.open_all([f for _, f in entries]),
                        strict=True,
                    )
                )
                for key, entries in streams.items()
            }
        finally:
            await client.aclose()

    return asyncio.run(go())


def _migrate(url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BACKTRACK_REDIS_URL": url, "BACKTRACK_PARTITIONS": str(PARTITIONS)}
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "migrate", "encrypt"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _sealing_began(client: redis.Redis, process: subprocess.Popen[bytes]) -> None:
    """Wait until the run has made its first data key (it is sealing)."""
    deadline = time.monotonic() + 60
    while not next(iter(client.scan_iter(match="bt:{p*}:dek:*", count=1000)), None):
        assert process.poll() is None, "the run ended before it sealed anything"
        assert time.monotonic() < deadline, "the run never began sealing"
        time.sleep(0.01)


@pytest.mark.parametrize("seed", [3, 17])
def test_a_run_killed_at_a_random_moment_loses_nothing_and_a_rerun_finishes(
    own_redis_server: Any, seed: int
) -> None:
    """SIGKILL at a seeded moment while sealing: every history reads what it held, under the
    same ids; the rerun exits 0 with every entry sealed and no temporary copy left."""
    server = own_redis_server()
    client = redis.Redis.from_url(server.url)
    assert _write_log(client) > 50_000
    before = _streams(client)
    process = _migrate(server.url)
    _sealing_began(client, process)
    time.sleep(random.Random(seed).uniform(0.0, 1.0))
    assert process.poll() is None, "the run finished before the kill: make the log bigger"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)

    halfway = _streams(client)
    assert halfway.keys() == before.keys()
    assert _opened(server.url, halfway) == before  # every entry, its id, what it holds
    sealed = sum(b"enc" in f for entries in halfway.values() for _, f in entries)
    assert sealed < sum(len(entries) for entries in before.values())
    assert sealed or _temporaries(client)  # killed mid-run: swapped some, or copying

    rerun = _migrate(server.url)
    assert rerun.wait(timeout=240) == 0
    after = _streams(client)
    assert all(b"enc" in f for entries in after.values() for _, f in entries)
    assert _opened(server.url, after) == before
    assert _temporaries(client) == []
    client.close()


def _temporaries(client: redis.Redis) -> list[bytes]:
    return [k for pattern in TEMP_PATTERNS for k in client.scan_iter(match=pattern)]
