"""Run a read-only replay over many users in several processes.

Reading, decoding and folding histories is CPU work, and one Python process
uses one core. ``in_workers`` splits the users between ``workers`` processes
(every ``workers``-th user of the tool's order, so each gets a like share),
each with its own Redis connection and the collector tuned as the services
tune it, runs the same tool on each share, and hands back one answer per
share in share order. The workers report progress through a queue, so the
caller's bar and metrics move as they go. A worker that fails or dies makes
the whole run fail; nothing is written by these tools, so a rerun is safe.

A tool is a module-level coroutine function taking ``(redis, keys, argument,
users, on_progress, data_keys=...)``, as ``whatif.what_if`` and
``asof.phases_as_of`` do.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shared.data_keys import DataKeys
from shared.keys import Keys
from shared.redis_store import connect
from shared.runtime import tune_gc
from shared.sealing import MasterKeys

Tool = Callable[..., Awaitable[Any]]


def shares(users: Sequence[str], workers: int) -> list[list[str]]:
    """``users`` dealt round robin into ``workers`` shares (none empty unless users are few)."""
    return [list(users[k::workers]) for k in range(min(workers, len(users)) or 1)]


@dataclass(frozen=True, slots=True)
class Job:
    """What every worker runs: ``tool(redis, keys, argument, share, on_progress)`` on ``url``."""

    tool: Tool
    url: str
    partitions: int
    argument: Any
    #: open sealed entries (each worker builds its own data keys from them)
    masters: MasterKeys | None = None


async def _share(job: Job, share: list[str], report: Callable[[int, int], None]) -> Any:
    redis = connect(job.url)
    keys = Keys(job.partitions)
    data_keys = None if job.masters is None else DataKeys(redis, keys, job.masters)
    try:
        return await job.tool(redis, keys, job.argument, share, report, data_keys=data_keys)
    finally:
        await redis.aclose()


def _child(job: Job, share: list[str], index: int, out: Any) -> None:
    """One worker process: its share of the users, progress and answer to the parent."""
    tune_gc()

    def report(users: int, events: int) -> None:
        out.put(("progress", index, (users, events)))

    try:
        answer = asyncio.run(_share(job, share, report))
    except BaseException as exc:  # the parent reports it; the process ends either way
        out.put(("failed", index, f"{type(exc).__name__}: {exc}"))
        raise
    out.put(("done", index, answer))


def in_workers(
    job: Job,
    users: Sequence[str],
    workers: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Any]:
    """The job's answer for each share of ``users``, run in ``workers`` processes."""
    parts = shares(users, workers)
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    children = [
        context.Process(target=_child, args=(job, part, k, out)) for k, part in enumerate(parts)
    ]
    for child in children:
        child.start()
    answers: dict[int, Any] = {}
    try:
        while len(answers) < len(children):
            try:
                kind, index, payload = out.get(timeout=0.5)
            except queue.Empty:
                dead = [k for k, c in enumerate(children) if k not in answers and not c.is_alive()]
                if dead and out.empty():
                    raise RuntimeError(f"replay worker {dead[0]} died without an answer") from None
                continue
            if kind == "progress":
                if on_progress is not None:
                    on_progress(*payload)
            elif kind == "failed":
                raise RuntimeError(f"replay worker {index} failed: {payload}")
            else:
                answers[index] = payload
    finally:
        for child in children:
            if child.is_alive() and len(answers) < len(children):
                child.terminate()
            child.join()
    return [answers[k] for k in range(len(children))]


__all__ = ["Job", "in_workers", "shares"]
