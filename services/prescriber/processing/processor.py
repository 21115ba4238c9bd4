"""The prescriber's use case: fold what a partition feed announces, emit changes.

For each user named in a batch the processor takes their cursor (state and
history position), the history after it (``histories``), folds it with
``arrivals.fold_arrivals`` and stores what the fold emitted, then moves the
cursor. Per-user order is the history's order. The fold applies one rule per
event (react; a late event refolds everything that arrived so far and emits
once, against the last change emitted), so what is emitted does not depend
on how the feed batched the entries, and an operator's rebuild
(``services.replay.rebuild``) reproduces it exactly.

Changes are appended idempotently (their ids derive from the causing event),
so redoing a batch after a crash never emits a second PrescriptionChanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import structlog

from services.prescriber import engine
from services.prescriber.arrivals import fold_arrivals, may_refold
from services.prescriber.processing.changes import Changes
from services.prescriber.processing.cursors import Cursor, Cursors, Step
from services.prescriber.processing.histories import Entries, Fed, Histories
from services.prescriber.processing.timelines import Timelines
from shared.events import PrescriptionChanged
from shared.store import EventStore, StoreUnavailable

log = structlog.get_logger(__name__)


class Processor:
    """Folds users' new history into their state and appends due changes."""

    def __init__(
        self,
        store: EventStore,
        rules: engine.RuleSet = engine.DEFAULT_RULES,
        snapshot_every: int = 50,
        cache_size: int = 20_000,
        timeline_events: int = 5_000,
    ) -> None:
        self.rules = rules
        self.snapshot_every = snapshot_every
        self.cursors = Cursors(store, rules, snapshot_every, cache_size)
        self.histories = Histories(store, Timelines(timeline_events))
        self.changes = Changes(store)

    async def process_batch(
        self, user_ids: Sequence[str], fed: Mapping[str, Sequence[Fed]] | None = None
    ) -> dict[str, Exception]:
        """Bring many users up to date in a few round trips, whatever their number.

        ``fed`` holds, per user, the events their feed entries carried (used
        as they are where they continue the history, ``Histories.after``). One
        write stores every change the batch emits, one more the snapshots that
        fell due. Returns the users that failed, with their error; the others
        are done. A failed write fails every user it was for, and so does a read the
        store could not serve; a read that failed over one user's entries fails that
        user alone (``_read``).
        """
        users = list(dict.fromkeys(user_ids))
        try:
            cursors = {user_id: await self.cursors.get(user_id) for user_id in users}
        except Exception as exc:
            return dict.fromkeys(users, exc)
        positions = {user_id: cursor.position for user_id, cursor in cursors.items()}
        news, failed = await self._read(positions, fed or {})
        steps: list[Step] = []
        for user_id, cursor in cursors.items():
            if user_id in failed:
                continue
            try:
                steps.append(await self._fold(user_id, cursor, news[user_id]))
            except Exception as exc:
                failed[user_id] = exc
        try:
            failed.update(await self._commit(steps))
        except Exception as exc:
            failed.update(dict.fromkeys((step.user_id for step in steps), exc))
        return failed

    async def _read(
        self, positions: Mapping[str, str], fed: Mapping[str, Sequence[Fed]]
    ) -> tuple[dict[str, Entries], dict[str, Exception]]:
        """The users' new entries, and the users whose read failed. A read that fails over
        what it read (an entry that does not open or decode), not over the store, is done
        again user by user, so one user's damaged entry fails that user alone."""
        try:
            return await self.histories.after(positions, fed), {}
        except StoreUnavailable as exc:
            return {}, dict.fromkeys(positions, exc)
        except Exception as exc:
            if len(positions) == 1:
                return {}, dict.fromkeys(positions, exc)
        news: dict[str, Entries] = {}
        failed: dict[str, Exception] = {}
        for user_id, position in positions.items():
            try:
                one = {user_id: fed.get(user_id, ())}
                news.update(await self.histories.after({user_id: position}, one))
            except Exception as exc:
                failed[user_id] = exc
        return news, failed

    async def process_user(self, user_id: str) -> list[PrescriptionChanged]:
        """Bring one user up to date with their history; return the changes emitted."""
        cursor = await self.cursors.get(user_id)
        entries = await self.histories.tail(user_id, cursor.position)
        step = await self._fold(user_id, cursor, entries)
        failed = await self._commit([step])
        if failed:
            raise failed[user_id]
        return step.changes

    async def process_users(self, user_ids: Sequence[str]) -> list[PrescriptionChanged]:
        """Bring each user up to date with their history; return the changes emitted."""
        emitted: list[PrescriptionChanged] = []
        for user_id in dict.fromkeys(user_ids):
            emitted.extend(await self.process_user(user_id))
        return emitted

    async def _fold(self, user_id: str, cursor: Cursor, entries: Entries) -> Step:
        """What folding ``entries`` (the history after the cursor) leads to; nothing is stored."""
        if not entries:
            return Step.still(user_id, cursor)
        events = [event for _, event in entries]
        earlier = None
        if may_refold(cursor.state, events):
            earlier = await self.histories.earlier(user_id, cursor.position)
        folded = fold_arrivals(cursor.state, events, earlier, self.rules)
        if folded.refolds:
            log.debug("user_refolded", user_id=user_id, refolds=folded.refolds)
        unsaved = self.snapshot_every if folded.refolds else cursor.unsaved + len(events)
        position = entries[-1][0]
        return Step(
            user_id, cursor, folded.state, position, folded.changes, unsaved, folded.timeline
        )

    async def _commit(self, steps: Sequence[Step]) -> dict[str, Exception]:
        """Store the steps' changes, then move their cursors and keep their timelines.

        Returns the users whose changes were refused for a version gap (their
        cursors are dropped, to be reloaded from the log next time); any other
        failure raises, for the whole batch.
        """
        stored, refused = await self.changes.append(steps)
        for user_id in refused:
            self.cursors.forget(user_id)
        for step in stored:
            if step.timeline is not None:
                self.histories.keep(step.user_id, step.position, step.timeline)
        await self.cursors.move(stored)
        return refused

    async def evict(self, belongs: Callable[[str], bool], save: bool) -> int:
        """Drop the cached state of the users ``belongs`` picks (saving it first if asked).

        Called when a partition changes owner: the next owner must start from
        the log and the snapshots, and a cache kept from an earlier ownership
        may lag what another owner did since.
        """
        self.histories.timelines.drop(belongs)
        return await self.cursors.evict(belongs, save)

    async def flush(self) -> None:
        """Save every cached state with unsaved progress (on shutdown)."""
        await self.cursors.flush()


__all__ = ["Processor"]
