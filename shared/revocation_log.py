"""The stream ``bt:revocations``: written by ``backtrack token revoke``, watched by every API.

One key (not partitioned, so it works on Redis Cluster) of small records
(``shared.revocations.Revocation``). It is not history: a record matters only
while a token it can match may still be alive, so each write trims entries
older than the longest token lifetime (plus the clock skew allowance).

``RevocationWatcher`` keeps a process's ``Revocations`` current. It reads the
stream from the start, then waits on ``XREAD BLOCK`` for at most ``block_ms``
at a time. A read that returns less than a page has caught up: the view then
holds every record written before that read was sent, and is marked synced
as of that moment. When Redis cannot be reached the watcher retries every
``retry_after`` seconds; meanwhile the view goes stale and tokens are refused
(fail closed, see ``shared.revocations``) until it has caught up again.
``catch_up`` reads at once, for a request that found the view stale, so
service resumes as soon as Redis answers rather than at the next retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import tasks
from shared.auth import CLOCK_SKEW, Lifetimes
from shared.keys import REVOCATIONS
from shared.revocations import Kind, Revocation, Revocations, RevokedRole

PAGE = 500
log = structlog.get_logger(__name__)


async def revoke(
    redis: Redis,
    kind: Kind,
    value: str,
    lifetimes: Lifetimes,
    *,
    role: RevokedRole | None = None,
    now: float | None = None,
) -> Revocation:
    """Write a revocation of a jti, or of a subject's tokens issued until ``now``; return it.

    It is kept for ``lifetimes.longest`` (plus the clock skew allowance), by
    when every token it can match has expired. Raises ValueError for a bad
    value or role (nothing is written), RedisError if Redis does not take it.
    """
    at = time.time() if now is None else now
    horizon = lifetimes.longest + CLOCK_SKEW
    revocation = Revocation(kind, value, role, at, int(at) + horizon)
    await redis.xadd(REVOCATIONS, revocation.fields())  # type: ignore[arg-type]
    oldest_ms = int((at - horizon) * 1000)
    if oldest_ms > 0:
        await redis.xtrim(REVOCATIONS, minid=f"{oldest_ms}-0", approximate=False)
    return revocation


class RevocationWatcher:
    """Feeds ``view`` from ``bt:revocations`` on ``redis`` while ``running``."""

    def __init__(
        self,
        redis: Redis,
        view: Revocations,
        block_ms: int,
        retry_after: float = 0.5,
        prune_every: float = 60.0,
    ) -> None:
        self.redis = redis
        self.view = view
        self.block_ms = block_ms
        self.retry_after = retry_after
        self.prune_every = prune_every
        self.last_id = "0-0"
        self.caught_up = asyncio.Event()
        self._reading: asyncio.Task[None] | None = None

    async def poll(self, wait: bool = True) -> int:
        """Read once (blocking, if ``wait``, once caught up) and apply what came; the count read.

        Reads may overlap (``run`` and ``catch_up``): each applies a contiguous
        run of entries after the ``last_id`` it started from, and applying a
        record twice changes nothing, so none is ever skipped.
        """
        sent = time.monotonic()
        block = self.block_ms if wait and self.caught_up.is_set() else None
        reply: Any = await self.redis.xread({REVOCATIONS: self.last_id}, count=PAGE, block=block)
        entries = [entry for _, batch in reply or () for entry in batch]
        now = time.time()
        for entry_id, fields in entries:
            self.last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            try:
                self.view.apply(Revocation.from_fields(fields), now)
            except ValueError as exc:
                log.warning("revocation_unreadable", id=self.last_id, error=str(exc))
        if len(entries) < PAGE:
            self.view.synced(sent)
            self.caught_up.set()
        return len(entries)

    async def run(self) -> None:
        """Poll until cancelled; Redis errors are logged once per outage and retried."""
        failing, pruned = False, time.monotonic()
        while True:
            try:
                await self.poll()
            except (RedisError, OSError) as exc:
                if not failing:
                    log.warning("revocations_unreachable", error=type(exc).__name__)
                    failing = True
                await asyncio.sleep(self.retry_after)
                continue
            if failing:
                log.info("revocations_resumed", last_id=self.last_id)
                failing = False
            if time.monotonic() - pruned > self.prune_every:
                self.view.prune(time.time())
                pruned = time.monotonic()

    async def catch_up(self) -> None:
        """Read everything new now, without blocking; concurrent callers share one attempt.

        A Redis error leaves the view as it was (stale, for a caller that asks).
        """
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read_all())
        await asyncio.shield(self._reading)

    async def _read_all(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            while await self.poll(wait=False) == PAGE:
                pass

    @contextlib.asynccontextmanager
    async def running(self, wait: float) -> AsyncIterator[None]:
        """Watch in the background; first wait up to ``wait`` s for the view to catch up."""
        task = asyncio.create_task(self.run(), name="revocation-watcher")
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.caught_up.wait(), wait)
            yield
        finally:
            await tasks.stop(task, *([self._reading] if self._reading else []))


__all__ = ["PAGE", "RevocationWatcher", "revoke"]
