"""Stopping background tasks for sure.

redis-py's asyncio client can swallow a cancellation that lands while a
command is in flight (the task carries on as if nothing happened), so a
single ``task.cancel()`` followed by ``await task`` may wait forever. Every
background loop here is stopped with :func:`stop`, which repeats the
cancellation until the task has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def stop(*tasks: asyncio.Task[Any], every: float = 0.2) -> None:
    """Cancel ``tasks`` and return once all have ended, re-cancelling every ``every`` s."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.warning("task_failed", task=task.get_name(), error=type(task.exception()).__name__)


__all__ = ["stop"]
