"""Erasing a patient (GDPR Art. 17, DESIGN.md invariant 10): ``Eraser.erase``, step by step.

In this order, each step idempotent, so a run killed anywhere is finished by
running it again (``resume`` does it for every erasure left ``started``):

a. record the erasure and destroy the data key, in one script
   (``DataKeys.destroy``): from here nothing of the user can be decrypted;
b. collect the subscriptions that match the user now (their clinic) and keep
   their ids in the record, so a re-run after the clinic is gone still knows;
c. delete the user's data (``shared.erasure``): history, prescriptions,
   snapshot, read models, dedupe keys, clinic, feed, enrolment and dead-letter
   entries; then their webhook queues of every subscription and their entries
   in the delivery logs (an erasure notice queued by an earlier run stays);
d. revoke every device token of the user (``shared.revocation_log``);
e. queue one ``PatientErased`` notice per collected subscription, deduped by
   its id (uuid5 of the user and the erasure time), so no re-run sends it twice;
f. mark the record ``done``.

Audit entries naming the user stay: they hold no health data and are the
record of who read the user's data (and of this erasure).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog
from redis.asyncio import Redis

from services.channels import notices
from services.channels.dispatcher import log_key
from services.channels.queues import Queues
from services.channels.subscriptions import SubscriptionLog
from shared.auth import Lifetimes
from shared.data_keys import DataKeys
from shared.erasure import ErasureRecord, ErasureRecords
from shared.keys import Keys
from shared.revocation_log import revoke
from shared.streams import text

log = structlog.get_logger("backtrack.erasure")
#: the delivery-log entries an erasure keeps: its own notice's attempts
_NOTICE = ("type", notices.TYPE)


@dataclass
class ErasureReport:
    """What one run of an erasure did (counts only; nothing of the user's data)."""

    user_id: str
    state_before: str | None
    record: ErasureRecord
    key_destroyed: bool = False
    keys: int = 0
    entries: dict[str, int] = field(default_factory=dict)
    queues: int = 0
    notices: int = 0

    def lines(self) -> list[str]:
        """The report as lines for an operator."""
        entries = ", ".join(f"{kind} {n}" for kind, n in self.entries.items())
        before = self.state_before or "none"
        return [
            f"erasure of {self.user_id}: begun {self.record.occurred_at} by "
            f"{self.record.by or '-'} (record was {before})",
            f"  data key destroyed: {'yes' if self.key_destroyed else 'no (none left)'}",
            f"  keys deleted: {self.keys}",
            f"  stream entries deleted: {entries}",
            f"  webhook queues deleted: {self.queues}",
            f"  PatientErased notices queued: {self.notices}",
            f"  state: {self.record.state}",
        ]


Step = Callable[[str], None]


def _quiet(_: str) -> None:
    """The default ``step``: say nothing."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Eraser:
    """Erases users on one Redis (or Cluster); ``lifetimes`` bound the device revocations."""

    def __init__(self, redis: Redis, keys: Keys, data_keys: DataKeys, lifetimes: Lifetimes) -> None:
        self.redis = redis
        self.keys = keys
        self.data_keys = data_keys
        self.lifetimes = lifetimes
        self.records = ErasureRecords(redis, keys)
        self.queues = Queues(redis)

    async def begin(self, user_id: str, by: str) -> ErasureRecord:
        """Step a alone: the record written (unless it was) and the key destroyed."""
        await self.data_keys.destroy(user_id, by)
        return await self._record(user_id)

    async def _record(self, user_id: str) -> ErasureRecord:
        record = await self.records.get(user_id)
        if record is None:  # readmitted meanwhile: the id is a new person's now
            raise LookupError(f"{user_id!r} was readmitted while being erased")
        return record

    async def erase(self, user_id: str, by: str, step: Step = _quiet) -> ErasureReport:
        """Erase ``user_id`` (steps a to f of the module doc); idempotent, resumable.

        ``step`` hears a line (counts only) as each step ends.
        """
        before = await self.records.get(user_id)
        destroyed = await self.data_keys.destroy(user_id, by)
        record = await self._record(user_id)
        state_before = None if before is None else before.state
        report = ErasureReport(user_id, state_before, record, destroyed)
        step(f"a. erasure recorded, data key {'destroyed' if destroyed else 'gone already'}")
        notify = await self._subscriptions(record)
        step(f"b. subscriptions to tell: {len(notify)}")
        item = notices.body(user_id, record.occurred_at)
        await self._delete(report, item)
        step(f"c. data deleted: {report.keys} keys, {sum(report.entries.values())} entries")
        if state_before != "done":  # the run that finished revoked them
            await revoke(self.redis, "subject", user_id, self.lifetimes, role="device")
        step("d. device tokens revoked")
        notice = notices.notice_id(user_id, record.occurred_at)
        for sub_id in notify:
            report.notices += await self.queues.enqueue(sub_id, user_id, notice, item, _now_ms())
        step(f"e. PatientErased notices queued: {report.notices}")
        await self.records.finish(user_id)
        report.record = await self._record(user_id)
        step("f. erasure done")
        log.info("user_erased", user_id=user_id, keys=report.keys, notices=report.notices)
        return report

    async def _delete(self, report: ErasureReport, notice: bytes) -> None:
        """Step c: the user's data, then their queues (but ``notice``) and delivery-log entries
        of every subscription; the counts go into ``report``."""
        user_id = report.user_id
        deleted = await self.records.delete_user_data(user_id)
        report.keys, report.entries = deleted.keys, deleted.entries
        subs = list(await SubscriptionLog(self.redis).refresh())
        report.queues = await self.queues.purge_user(subs, user_id, notice, _now_ms())
        logs = [self.records.purge_stream(log_key(s), "user_id", user_id, _NOTICE) for s in subs]
        report.entries["delivery_log"] = sum(await asyncio.gather(*logs))

    async def _subscriptions(self, record: ErasureRecord) -> tuple[str, ...]:
        """The subscriptions to tell: kept in the record by the first run that got here."""
        if record.notify is not None:
            return record.notify
        if record.state == "done":
            return ()
        user = record.user_id
        stored = await self.redis.get(self.keys.clinic(user))
        clinic, now = None if stored is None else text(stored), _now_ms()
        subs = (await SubscriptionLog(self.redis).refresh()).values()
        matching = [s.sub_id for s in subs if s.matches(user, clinic, now)]
        return await self.records.note_notify(user, matching)

    async def resume(self, on_done: Callable[[ErasureReport], None] | None = None) -> int:
        """Finish every erasure left ``started``; how many."""
        users = await self.records.started()
        for user_id in users:
            report = await self.erase(user_id, "")
            if on_done is not None:
                on_done(report)
        return len(users)


class ErasureTasks:
    """Erasures finishing in the background of a process (the clinic API's 202)."""

    def __init__(self, eraser: Eraser) -> None:
        self.eraser = eraser
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def finish(self, user_id: str, by: str) -> None:
        """Run the whole erasure of ``user_id`` in a task, unless one runs already here."""
        if user_id not in self._tasks:
            task = asyncio.create_task(self._run(user_id, by), name=f"erase-{user_id}")
            self._tasks[user_id] = task
            task.add_done_callback(lambda _: self._tasks.pop(user_id, None))

    async def _run(self, user_id: str, by: str) -> None:
        try:
            await self.eraser.erase(user_id, by)
        except Exception as exc:  # left started: the next start (or a re-run) resumes it
            log.warning("erasure_failed", user_id=user_id, error=type(exc).__name__)

    async def resume(self) -> None:
        """Finish the erasures a previous process left ``started``."""
        try:
            for user_id in await self.eraser.records.started():
                await self._run(user_id, "")
        except Exception as exc:
            log.warning("erasure_resume_failed", error=type(exc).__name__)

    def running(self) -> Iterable[asyncio.Task[None]]:
        """The tasks still running (the lifespan cancels them at shutdown)."""
        return list(self._tasks.values())


__all__ = ["Eraser", "ErasureReport", "ErasureTasks"]
