"""Rebuild users' snapshots and prescription read models from the log, blue/green.

What "exactly the prescriptions live processing gave" means: for each user,
the changes live processing appended are a function of the user's history in
arrival order alone (``services.prescriber.arrivals``: one rule per event,
whatever the batching). The rebuild folds the same history in the same order
with the same function from an empty state, so it writes the same changes,
versions and ids. (The one live path outside that function is the silent
catch-up after a lost snapshot, which announces only the latest prescription;
a user who went through it is rebuilt as if it had not happened, and counted
as ``changed``.)

Live processing continues meanwhile: each user is staged and switched on its
own (``bluegreen``), only when the prescriber has finished that user's feed
entries (``inflight``); users it has not finished are deferred and retried.
Progress is kept in ``bt:rebuild:<id>`` (the last user done, in the stable
(partition, user) order, plus counts) and deferred users in
``bt:rebuild:<id>:deferred``, so a rerun with the same id continues where an
interrupted one stopped. Nobody is notified: the rxfeed is never written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from services.prescriber import engine
from services.prescriber.arrivals import fold_history
from services.replay import bluegreen, scan
from services.replay.inflight import Lagging, in_flight
from shared.data_keys import DataKeys
from shared.keys import PREFIX, Keys
from shared.streams import text

RETIRE_TTL = 7 * 24 * 3600
LAST = f"{PREFIX}:rebuild:last"
OnProgress = Callable[[int, int], None]  # (users, events) just finished


def progress_key(rebuild_id: str) -> str:
    return f"{PREFIX}:rebuild:{rebuild_id}"


@dataclass
class RebuildReport:
    """What a rebuild run did (counts cover every run under the same id)."""

    rebuild_id: str
    users: int = 0
    events: int = 0
    switched: int = 0
    changed: int = 0
    deferred: list[str] = field(default_factory=list)
    resumed: bool = False
    seconds: float = 0.0


class Rebuild:
    """One rebuild, identified by ``rebuild_id``; ``run`` is resumable."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        rebuild_id: str,
        *,
        rules: engine.RuleSet = engine.DEFAULT_RULES,
        group: int = 64,
        retire_ttl: int = RETIRE_TTL,
        data_keys: DataKeys | None = None,
    ) -> None:
        self.redis, self.keys, self.rebuild_id = redis, keys, rebuild_id
        #: open the histories read, seal the read models written
        self.data_keys = data_keys
        self.rules, self.group, self.retire_ttl = rules, group, retire_ttl
        self.key = progress_key(rebuild_id)
        self.deferred_key = f"{self.key}:deferred"

    async def plan(self, only: Sequence[str] | None = None) -> tuple[list[str], bool]:
        """The users still to do (after the recorded cursor), and whether this resumes."""
        users = list(only) if only is not None else await scan.user_ids(self.redis, self.keys)
        users.sort(key=lambda u: scan.order_key(self.keys, u))
        cursor: Any = await self.redis.hget(self.key, "cursor")
        if cursor is None:
            return users, False
        part, _, user = text(cursor).partition(":")
        after = (int(part), user)
        return [u for u in users if scan.order_key(self.keys, u) > after], True

    async def run(
        self, users: Sequence[str], resumed: bool = False, on_progress: OnProgress | None = None
    ) -> RebuildReport:
        """Rebuild ``users`` (from ``plan``) and retry the deferred ones; record progress."""
        started = time.perf_counter()
        await self.redis.script_load(bluegreen.SWITCH_LUA)
        await self.redis.hsetnx(self.key, "rules_version", self.rules.rules_version)
        await self.redis.hset(self.key, "status", "running")
        await self.redis.set(LAST, self.rebuild_id)
        async for logs in scan.stream_histories(
            self.redis, self.keys, users, self.group, data_keys=self.data_keys
        ):
            await self._group(logs)
            last = logs[-1].user_id
            await self.redis.hset(self.key, "cursor", f"{self.keys.partition(last)}:{last}")
            if on_progress is not None:
                on_progress(len(logs), sum(len(log.entries) for log in logs))
        left = await self._retry_deferred()
        await self.redis.hset(self.key, "status", "deferred" if left else "done")
        report = await self.report(resumed)
        report.seconds = time.perf_counter() - started
        return report

    async def report(self, resumed: bool = False) -> RebuildReport:
        raw: Any = await self.redis.hgetall(self.key)
        got = {text(k): text(v) for k, v in raw.items()}
        deferred: Any = await self.redis.smembers(self.deferred_key)
        counts = {k: int(got.get(k, 0)) for k in ("users", "events", "switched", "changed")}
        return RebuildReport(
            self.rebuild_id, **counts, deferred=sorted(map(text, deferred)), resumed=resumed
        )

    async def _retry_deferred(self, rounds: int = 5, pause: float = 0.2) -> list[str]:
        for _ in range(rounds):
            raw: Any = await self.redis.smembers(self.deferred_key)
            left = sorted(map(text, raw))
            if not left:
                return []
            await asyncio.sleep(pause)
            logs = await scan.histories(self.redis, self.keys, left, data_keys=self.data_keys)
            await self._group(logs, count=False)
        raw = await self.redis.smembers(self.deferred_key)
        return sorted(map(text, raw))

    async def _in_flight(self, logs: Sequence[scan.UserLog]) -> set[str] | None:
        users: set[str] = set()
        for part in {self.keys.partition(log.user_id) for log in logs}:
            try:
                users |= await in_flight(self.redis, self.keys, part)
            except Lagging:
                return None
        return users

    async def _group(self, logs: Sequence[scan.UserLog], count: bool = True) -> None:
        """Stage and switch one group of users; stale ones are read again, then deferred."""
        logs = [log for log in logs if log.entries]
        if count:
            await self.redis.hincrby(self.key, "users", len(logs))
            await self.redis.hincrby(self.key, "events", sum(len(log.entries) for log in logs))
        waiting: list[str] = []
        for _attempt in range(3):
            busy = await self._in_flight(logs)
            if busy is None:  # the prescriber is far behind: come back later
                waiting += [log.user_id for log in logs]
                break
            waiting += [log.user_id for log in logs if log.user_id in busy]
            stale = await self._switch([log for log in logs if log.user_id not in busy])
            if not stale:
                break
            logs = await scan.histories(self.redis, self.keys, stale, data_keys=self.data_keys)
        else:
            waiting += [log.user_id for log in logs]
        if waiting:
            await self.redis.sadd(self.deferred_key, *waiting)

    async def _switch(self, logs: Sequence[scan.UserLog]) -> list[str]:
        """Stage and switch ``logs`` in one pipeline; returns the users found stale (an erased
        user is neither switched nor stale: nothing of theirs is written)."""
        if not logs:
            return []
        users = [log.user_id for log in logs]
        olds = await scan.prescriptions(self.redis, self.keys, users, self.data_keys)
        folds = [fold_history(log.user_id, log.events, self.rules) for log in logs]
        staged = [
            await bluegreen.records(self.data_keys, log, folded, self.rules)
            for log, folded in zip(logs, folds, strict=True)
        ]
        pipe = self.redis.pipeline(transaction=False)
        at: list[int] = []
        differs: list[bool] = []
        kept = [(log, old, f, s) for log, old, f, s in zip(logs, olds, folds, staged, strict=True)]
        logs = [log for log, _, _, s in kept if s is not None]  # erased meanwhile: skipped
        for log, old, folded, records in kept:
            if records is None:
                continue
            differs.append([c.event_id for c in folded.changes] != [c.event_id for _, c in old])
            bluegreen.stage(
                pipe,
                self.keys,
                rebuild_id=self.rebuild_id,
                log=log,
                old=old,
                folded=folded,
                staged=records,
            )
            old_tip = old[-1][0] if old else ""
            call = bluegreen.switch_call(self.keys, self.rebuild_id, log, old_tip, self.retire_ttl)
            at.append(len(pipe))
            pipe.evalsha(bluegreen.SWITCH_SHA, *call)
        answers = await pipe.execute()
        outcomes = [text(answers[i]) for i in at]
        done = [outcome == "switched" for outcome in outcomes]
        gone = {log.user_id for log, o in zip(logs, outcomes, strict=True) if o == "erased"}
        switched = [log.user_id for log, ok in zip(logs, done, strict=True) if ok]
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.key, "switched", len(switched))
        pipe.hincrby(self.key, "changed", sum(d for d, ok in zip(differs, done, strict=True) if ok))
        if switched:
            pipe.srem(self.deferred_key, *switched)
        await pipe.execute()
        return [
            log.user_id
            for log, ok in zip(logs, done, strict=True)
            if not ok and log.user_id not in gone
        ]


__all__ = ["LAST", "Rebuild", "RebuildReport", "progress_key"]
