"""Server-side scripts called many at a time: EVALSHA pipelined, loaded again if Redis lost them.

redis-py's ``Script`` cannot be queued on a Redis Cluster pipeline, so calls go as EVALSHA
commands (as ``RedisStore`` sends the append script); after a script cache was flushed (a
restart, SCRIPT FLUSH) the script is loaded and the missing calls are sent once more.
Each call's keys share one hash tag, so every call runs on Redis Cluster too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import sha1
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class Lua:
    """A script's source and its SHA1 (what EVALSHA names)."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = sha1(self.source.encode(), usedforsecurity=False)
        object.__setattr__(self, "sha", digest.hexdigest())


#: one call of a script: its keys and its arguments
Call = tuple[Sequence[str], Sequence[Any]]


async def run_many(redis: Redis, script: Lua, calls: Sequence[Call]) -> list[Any]:
    """The replies of ``calls``, in order, in one round trip (two if the script was not
    loaded). Raises the first error a call answered."""
    replies: dict[int, Any] = {}
    for _ in range(2):
        todo = [i for i in range(len(calls)) if i not in replies]
        if not todo:
            break
        pipe = redis.pipeline(transaction=False)
        for i in todo:
            keys, args = calls[i]
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        answers = await pipe.execute(raise_on_error=False)
        for i, answer in zip(todo, answers, strict=True):
            if isinstance(answer, rx.NoScriptError):
                continue
            if isinstance(answer, Exception):
                raise answer
            replies[i] = answer
        if len(replies) < len(calls):
            await redis.script_load(script.source)
    if len(replies) < len(calls):
        raise rx.NoScriptError("the script could not be loaded")
    return [replies[i] for i in range(len(calls))]


async def run(redis: Redis, script: Lua, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """One call's reply (``run_many`` of one)."""
    [reply] = await run_many(redis, script, [(keys, args)])
    return reply


__all__ = ["Call", "Lua", "run", "run_many"]
