"""``backtrack erase`` killed (-9) at seeded random moments, then run again, ends where an
uninterrupted erasure of a twin ends.

Two twins with the same set-up (thousands of events, so thousands of feed entries
and dedupe keys, plus every other kind of key) live in one partition beside a
third user. Twin B is erased by one uninterrupted ``backtrack erase`` process,
which times the erasure; twin A's erasure is started and SIGKILLed several times,
each after a seeded random delay within that time, then finished with
``backtrack erase --resume`` and run once more with ``--user``. The keys left
naming each twin (the user id taken out) are the same, the record is the same
but for the user and the time, the notice is queued once, nothing of either twin
is left in a shared stream, and the third user keeps every key and entry.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from services.channels import notices
from services.channels.dispatcher import log_key
from services.channels.queues import queue_key, seen_key
from services.prescriber.erasure import Eraser
from shared.data_keys import DataKeys
from shared.erasure import DLQ_RESOLVED, record_of
from shared.keys import DLQ, REVOCATIONS, Keys
from shared.redis_store import connect
from shared.settings import Settings
from shared.streams import text
from tests.erasure_setup import entries_of, keys_naming, populate, subscribe
from tests.fault.prescribers import start_prescriber
from tests.integration.events_factory import neighbours

pytestmark = pytest.mark.fault

KEYS = Keys(16)
TWIN_A = "zq7-twin-a"
TWIN_B, OTHER = neighbours(TWIN_A, 2)
EVENTS = 3000
SEED = 2026
KILLS = 6
T = TypeVar("T")


def _run(url: str, work: Callable[[Redis], Awaitable[T]]) -> T:
    async def go() -> T:
        redis = connect(url)
        try:
            return await work(redis)
        finally:
            await redis.aclose()

    return asyncio.run(go())


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "BACKTRACK_REDIS_URL": url, "BACKTRACK_PARTITIONS": "16"}


def _start(url: str, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "services.cli.main", "erase", *args]
    return subprocess.Popen(
        command, env=_env(url), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


def _erasing(process: subprocess.Popen[str]) -> float:
    """Wait for the line the CLI prints just before step a; the monotonic time it came."""
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("erasing"), line
    return time.monotonic()


def _finish(process: subprocess.Popen[str]) -> str:
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    return out


def _modulo(keys: set[str], user: str) -> set[str]:
    return {":".join("<user>" if p == user else p for p in k.split(":")) for k in keys}


async def _state(redis: Redis, user: str) -> dict[str, Any]:
    """What is left of ``user``: key names (user taken out), record fields, queue, entries."""
    subs: Any = await redis.xrange("bt:subs")
    [sub_id] = [text(f[b"sub_id"]) for _, f in subs]
    record = {text(k): text(v) for k, v in (await redis.hgetall(KEYS.erased(user))).items()}
    queued = await redis.lrange(queue_key(sub_id, user), 0, -1)
    notice_seen = await redis.exists(seen_key(sub_id, notices.notice_id(user, _at(record))))
    streams = [
        (KEYS.feed_of(user), "user_id"),
        (KEYS.rxfeed_of(user), "user_id"),
        (KEYS.enrolments(user), "user_id"),
        (DLQ, "f:user_id"),
        (DLQ_RESOLVED, "f:user_id"),
        (log_key(sub_id), "user_id"),
    ]
    return {
        "keys": _modulo(await keys_naming(redis, user), user),
        "record": {k: v for k, v in record.items() if k != "at"},
        "queue": [q == notices.body(user, _at(record)) for q in queued],
        "notice_seen": notice_seen,
        "entries": [await entries_of(redis, s, user, f) for s, f in streams],
        "revoked": await entries_of(redis, REVOCATIONS, user, "value") > 0,
    }


def _at(record: dict[str, str]) -> str:
    raw = {k.encode(): v.encode() for k, v in record.items()}
    return record_of("-", raw).occurred_at


async def _other(redis: Redis) -> tuple[int, int, int]:
    seen = [k async for k in redis.scan_iter(match=f"*:seen:{OTHER}:*", count=1000)]
    history = await redis.xlen(KEYS.history(OTHER))
    return len(seen), history, await entries_of(redis, KEYS.feed_of(OTHER), OTHER)


def test_an_erasure_killed_anywhere_and_run_again_ends_as_an_uninterrupted_one(
    redis_url: str,
) -> None:
    """SIGKILL at seeded random moments, then --resume and a re-run: the twin's end state."""

    async def setup(redis: Redis) -> None:
        sub_id = await subscribe(redis)
        for user in (TWIN_A, TWIN_B, OTHER):
            await populate(redis, KEYS, user, [sub_id], events=EVENTS)

    _run(redis_url, setup)
    assert _run(redis_url, _other) == (EVENTS, EVENTS, EVENTS)

    twin = _start(redis_url, "--user", TWIN_B, "--yes")
    began = _erasing(twin)
    steps = _finish(twin)
    erase_seconds = time.monotonic() - began
    assert "f. erasure done" in steps

    rng, interrupted, states, first_at = random.Random(SEED), [], [], None
    for _ in range(KILLS):
        process = _start(redis_url, "--user", TWIN_A, "--yes")
        _erasing(process)
        time.sleep(rng.uniform(0, erase_seconds))
        process.send_signal(signal.SIGKILL)
        out, _ = process.communicate(timeout=30)
        last = [line for line in out.splitlines() if line[:2] in ("a.", "b.", "c.", "d.", "e.")]
        interrupted.append(last[-1][:2] if last else "before a.")
        at = _run(redis_url, lambda r: r.hget(KEYS.erased(TWIN_A), "at"))
        states.append(_run(redis_url, lambda r: r.hget(KEYS.erased(TWIN_A), "state")))
        first_at = first_at or at
        assert at == first_at  # a re-run never moves the erasure's time
    print(f"twin erased in {erase_seconds:.3f} s; kills after: {interrupted}")
    assert b"started" in states  # at least one kill left the erasure half done

    resumed = _finish(_start(redis_url, "--resume"))
    assert "unfinished erasure(s) finished" in resumed
    again = _finish(_start(redis_url, "--user", TWIN_A, "--yes"))
    assert "(record was done)" in again

    a = _run(redis_url, lambda r: _state(r, TWIN_A))
    assert a == _run(redis_url, lambda r: _state(r, TWIN_B))
    tombstone = KEYS.erased(TWIN_A).replace(TWIN_A, "<user>")
    [queue] = a["keys"] - {tombstone}
    assert queue.startswith("bt:{wh}:q:sub_")
    assert a["record"]["state"] == "done"
    assert a["queue"] == [True]
    assert a["notice_seen"] == 1
    assert a["entries"] == [0, 0, 0, 0, 0, 0]
    assert a["revoked"]
    assert _run(redis_url, _other) == (EVENTS, EVENTS, EVENTS)


def test_a_prescriber_start_finishes_an_erasure_a_dead_one_left_started(redis_url: str) -> None:
    """The state a prescriber killed right after its 202 leaves (record begun, key destroyed,
    nothing deleted yet) is finished by the next prescriber process to start."""
    user = "zq7-after-202"

    async def begun(redis: Redis) -> None:
        sub_id = await subscribe(redis)
        await populate(redis, KEYS, user, [sub_id], events=200)
        settings = Settings()
        data_keys = DataKeys(redis, KEYS, settings.master_keys())
        await Eraser(redis, KEYS, data_keys, settings.token_lifetimes()).begin(user, "operator:j")

    _run(redis_url, begun)
    assert _run(redis_url, lambda r: r.xlen(KEYS.history(user))) == 200
    prescriber = start_prescriber(redis_url, 16)
    try:
        deadline = time.monotonic() + 30
        while _run(redis_url, lambda r: r.hget(KEYS.erased(user), "state")) != b"done":
            assert time.monotonic() < deadline, "the erasure was not resumed"
            time.sleep(0.1)
    finally:
        prescriber.send_signal(signal.SIGTERM)
        prescriber.wait(timeout=30)
    state = _run(redis_url, lambda r: _state(r, user))
    assert state["keys"] == {
        KEYS.erased(user).replace(user, "<user>"),
        next(k for k in state["keys"] if k.startswith("bt:{wh}:q:")),
    }
    assert state["queue"] == [True]
    assert state["entries"] == [0, 0, 0, 0, 0, 0]
    assert state["record"] == {"by": "operator:j", "state": "done"}
