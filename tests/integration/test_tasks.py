"""Background loops stop for sure, even when redis-py swallows a cancellation."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import tasks

pytestmark = pytest.mark.anyio


async def test_stop_ends_a_task_that_swallows_the_first_cancellation() -> None:
    """One cancel is not enough for this task; stop repeats it until the task ends."""
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 3:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(tasks.stop(task, every=0.01), timeout=5)
    assert task.cancelled()
    assert swallowed == 3


async def test_stop_returns_for_tasks_already_done_or_failed() -> None:
    """Finished and failed tasks need no cancel; stop still returns at once."""

    async def fail() -> None:
        raise RuntimeError("boom")

    done = asyncio.create_task(asyncio.sleep(0))
    failed = asyncio.create_task(fail())
    await asyncio.sleep(0.01)
    await asyncio.wait_for(tasks.stop(done, failed), timeout=1)
    assert done.done()
    assert failed.done()


async def test_loops_on_redis_commands_always_stop(redis: Redis) -> None:
    """A polling loop cancelled mid-command, over and over, always ends within the bound."""
    await redis.xadd("s", {"a": 1})
    await redis.xgroup_create("s", "g", "0")

    async def poll() -> None:
        while True:
            with contextlib.suppress(RedisError):
                await redis.xinfo_groups("s")
            await asyncio.sleep(0)

    for i in range(60):
        task = asyncio.create_task(poll())
        await asyncio.sleep(0.0005 * (i % 6))
        await asyncio.wait_for(tasks.stop(task, every=0.05), timeout=10)
        assert task.done()
