"""The prescriber's use case: fold what a partition feed announces, emit changes.

A feed entry is only a trigger; the user's history stream is the truth. For
each user named in a batch the processor folds every history entry after the
position its state has reached, so a redelivered entry folds nothing twice and
a gap (a lost cache, an old snapshot) is filled from the log. Per-user order
is the history's order. The fold itself is ``arrivals.fold_arrivals``, which
applies one rule per event (react; a late event refolds everything that
arrived so far and emits once, against the last change emitted), so what is
emitted does not depend on how the feed batched the entries, and an
operator's rebuild (``services.replay.rebuild``) reproduces it exactly.

Changes are appended idempotently (their ids derive from the causing event),
so redoing a batch after a crash never emits a second PrescriptionChanged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from services.prescriber import engine
from services.prescriber.arrivals import Timeline, fold_arrivals
from shared.events import Input, PrescriptionChanged
from shared.store import EventStore, Snapshot, VersionGapError

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Cursor:
    """A user's folded state and the history position it has reached."""

    state: engine.State
    position: str
    unsaved: int = 0


@dataclass(frozen=True, slots=True)
class Fed:
    """An event as its feed entry carried it, with the history positions the entry names.

    ``position`` is the event's own history entry, ``previous`` the entry
    before it (``0-0`` for a user's first); either is None if not named.
    """

    event: Input
    position: str | None
    previous: str | None


def _continuing(position: str, fed: Sequence[Fed]) -> list[tuple[str, Input]] | None:
    """The fed events as history entries, if they continue exactly from ``position``.

    That is, the first names ``position`` as the entry before it and each
    next one names the one before: then they are the history after
    ``position``, and no read is needed. Otherwise None.
    """
    if not fed:
        return None
    entries: list[tuple[str, Input]] = []
    for item in fed:
        if item.position is None or item.previous != position:
            return None
        position = item.position
        entries.append((position, item.event))
    return entries


def _announced(fed: Sequence[Fed]) -> str | None:
    """How far to read a history: the last fed position, or None (to its end)."""
    if not fed or any(item.position is None for item in fed):
        return None
    return fed[-1].position


class Timelines:
    """Users' refold timelines, least recently used first out, within ``events`` events.

    A late event refolds its user's history from the timeline's checkpoint
    before its place; without a kept timeline the history is read from the
    start and folded from the first event. Devices that sync late send late
    events in runs, so the next one usually finds its user's timeline here.
    """

    def __init__(self, events: int) -> None:
        self.limit = events
        self.events = 0
        self._kept: OrderedDict[str, tuple[str, Timeline]] = OrderedDict()

    def take(self, user_id: str) -> tuple[str, Timeline] | None:
        """The user's timeline and the position it reaches, removed (None if none)."""
        kept = self._kept.pop(user_id, None)
        if kept is not None:
            self.events -= len(kept[1].events)
        return kept

    def put(self, user_id: str, position: str, timeline: Timeline) -> None:
        """Keep ``timeline``, which holds the user's events up to ``position``."""
        self.take(user_id)
        self._kept[user_id] = (position, timeline)
        self.events += len(timeline.events)
        while self.events > self.limit and self._kept:
            _, (_, oldest) = self._kept.popitem(last=False)
            self.events -= len(oldest.events)

    def drop(self, belongs: Callable[[str], bool]) -> None:
        """Forget the timelines of the users ``belongs`` picks."""
        for user_id in [user_id for user_id in self._kept if belongs(user_id)]:
            self.take(user_id)

    def __len__(self) -> int:
        return len(self._kept)


def _key(position: str) -> tuple[int, int]:
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


@dataclass(slots=True)
class _Step:
    """A user's fold of new entries, not yet stored: where the cursor will move."""

    user_id: str
    cursor: Cursor
    state: engine.State
    position: str
    changes: list[PrescriptionChanged]
    unsaved: int
    timeline: Timeline | None = None


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
        self.store = store
        self.rules = rules
        self.snapshot_every = snapshot_every
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Cursor] = OrderedDict()
        #: the timelines of users with recent late events, by the position each reaches
        self._timelines = Timelines(timeline_events)

    async def process_users(self, user_ids: Sequence[str]) -> list[PrescriptionChanged]:
        """Bring each user up to date with their history; return the changes emitted."""
        emitted: list[PrescriptionChanged] = []
        for user_id in dict.fromkeys(user_ids):
            emitted.extend(await self.process_user(user_id))
        return emitted

    async def process_batch(
        self, user_ids: Sequence[str], fed: Mapping[str, Sequence[Fed]] | None = None
    ) -> dict[str, Exception]:
        """Bring many users up to date in a few round trips, whatever their number.

        ``fed`` holds, per user, the events their feed entries carried. Where
        they continue the history exactly from the user's position, they are
        folded as they are; the other users' new history is read in one round
        trip (up to the last position their feed entries announce). One write
        stores every change the batch emits, one more the snapshots that fell
        due. Returns the users that failed, with their error; the others are
        done. A failed read or write fails every user it was for.
        """
        users = list(dict.fromkeys(user_ids))
        fed = fed or {}
        news: dict[str, list[tuple[str, Input]]] = {}
        try:
            cursors = [await self._cursor(user_id) for user_id in users]
            reads: list[tuple[str, str]] = []
            ends: list[str | None] = []
            for user_id, cursor in zip(users, cursors, strict=True):
                entries = _continuing(cursor.position, fed.get(user_id, ()))
                if entries is not None:
                    news[user_id] = entries
                else:
                    reads.append((user_id, cursor.position))
                    ends.append(_announced(fed.get(user_id, ())))
            if reads:
                read = await self.store.histories(reads, ends)
                news.update(zip((user_id for user_id, _ in reads), read, strict=True))
        except Exception as exc:
            return dict.fromkeys(users, exc)
        failed: dict[str, Exception] = {}
        steps: list[_Step] = []
        for user_id, cursor in zip(users, cursors, strict=True):
            try:
                steps.append(await self._fold(user_id, cursor, news[user_id]))
            except Exception as exc:
                failed[user_id] = exc
        try:
            failed.update(await self._commit(steps))
        except Exception as exc:
            failed.update(dict.fromkeys((step.user_id for step in steps), exc))
        return failed

    async def process_user(self, user_id: str) -> list[PrescriptionChanged]:
        cursor = await self._cursor(user_id)
        entries = await self.store.history(user_id, after=cursor.position)
        step = await self._fold(user_id, cursor, entries)
        failed = await self._commit([step])
        if failed:
            raise failed[user_id]
        return step.changes

    async def _fold(self, user_id: str, cursor: Cursor, entries: list[tuple[str, Input]]) -> _Step:
        """What folding ``entries`` (the history after the cursor) leads to; nothing is stored."""
        if not entries:
            return _Step(user_id, cursor, cursor.state, cursor.position, [], cursor.unsaved)
        events = [event for _, event in entries]
        folded = fold_arrivals(cursor.state, events, None, self.rules)
        if folded is None:  # a late event: the refold needs what came before
            earlier = await self._earlier(user_id, cursor.position)
            folded = fold_arrivals(cursor.state, events, earlier, self.rules)
            assert folded is not None
            log.debug("user_refolded", user_id=user_id, refolds=folded.refolds)
        unsaved = self.snapshot_every if folded.refolds else cursor.unsaved + len(events)
        position = entries[-1][0]
        return _Step(
            user_id, cursor, folded.state, position, folded.changes, unsaved, folded.timeline
        )

    async def _commit(self, steps: Sequence[_Step]) -> dict[str, Exception]:
        """Store the steps' changes, then move their cursors, then save snapshots due.

        Returns the users whose changes were refused for a version gap (their
        cursors stay); any other failure raises, for the whole batch.
        """
        failed: dict[str, Exception] = {}
        changes = [change for step in steps for change in step.changes]
        if changes:
            try:
                await self.store.append_changes(changes)
            except VersionGapError:
                steps, failed = await self._append_apart(steps)
        # the cursors move only once the changes are stored: a failed append
        # leaves the entries to be folded again, to the same change ids
        due: list[tuple[str, Cursor]] = []
        for step in steps:
            cursor = step.cursor
            cursor.state, cursor.position, cursor.unsaved = step.state, step.position, step.unsaved
            if step.timeline is not None:
                self._timelines.put(step.user_id, step.position, step.timeline)
            if cursor.unsaved >= self.snapshot_every:
                due.append((step.user_id, cursor))
        if due:
            await self.store.save_snapshots([(user_id, self._snapshot(c)) for user_id, c in due])
            for _, cursor in due:
                cursor.unsaved = 0
        return failed

    async def _append_apart(
        self, steps: Sequence[_Step]
    ) -> tuple[list[_Step], dict[str, Exception]]:
        """Append each user's changes on their own, so a version gap fails its user alone
        (changes already stored by the joint call answer duplicate, by version)."""
        kept: list[_Step] = []
        failed: dict[str, Exception] = {}
        for step in steps:
            try:
                await self.store.append_changes(step.changes)
            except VersionGapError as exc:
                failed[step.user_id] = exc
                self._cache.pop(step.user_id, None)  # reload from the log next time
            else:
                kept.append(step)
        return kept, failed

    async def _earlier(self, user_id: str, position: str) -> Timeline | list[Input]:
        """The events at or before ``position``: a kept timeline if there is one, else read.

        A timeline kept at an earlier position is brought up to ``position``
        with the history entries between (history is never rewritten, so what
        it holds stays true).
        """
        kept = self._timelines.take(user_id)
        if kept is not None and _key(kept[0]) <= _key(position):
            reached, timeline = kept
            if reached != position:
                [more] = await self.store.histories([(user_id, reached)], [position])
                timeline.add(event for _, event in more)
            return timeline
        if position in ("", "-", "0", "0-0"):
            return []
        [history] = await self.store.histories([(user_id, "0-0")], [position])
        return [event for _, event in history]

    async def _cursor(self, user_id: str) -> Cursor:
        cursor = self._cache.get(user_id)
        if cursor is not None:
            self._cache.move_to_end(user_id)
            return cursor
        cursor = await self._load(user_id)
        self._cache[user_id] = cursor
        if len(self._cache) > self.cache_size:
            evicted, old = self._cache.popitem(last=False)
            if old.unsaved:
                await self._save(evicted, old)
        return cursor

    async def _load(self, user_id: str) -> Cursor:
        snap = await self.store.load_snapshot(user_id)
        if (
            snap is not None
            and snap.rules_version == self.rules.rules_version
            and snap.state_version == engine.STATE_VERSION
        ):
            return Cursor(engine.load_state(snap.data), snap.position)
        return await self._catch_up(user_id)

    async def _catch_up(self, user_id: str) -> Cursor:
        """No usable snapshot: fold the whole history silently, then emit if due.

        Emitting per event here would re-announce changes clients already have;
        the one emit below makes sure the latest prescription is announced.
        """
        last = await self.store.latest_prescription(user_id)
        if last is None:  # nothing emitted yet: the caller folds the history as it is new
            return Cursor(engine.initial(user_id), "0-0")
        history = await self.store.history(user_id)
        state = engine.replay((event for _, event in history), self.rules, last=last)
        state, change = engine.emit(state, history[-1][1].event_id, self.rules)
        if change is not None:
            await self.store.append_change(change)
        return Cursor(state, history[-1][0], unsaved=self.snapshot_every)

    def _snapshot(self, cursor: Cursor) -> Snapshot:
        return Snapshot(
            data=engine.dump_state(cursor.state),
            position=cursor.position,
            rules_version=self.rules.rules_version,
            state_version=engine.STATE_VERSION,
        )

    async def _save(self, user_id: str, cursor: Cursor) -> None:
        await self.store.save_snapshot(user_id, self._snapshot(cursor))
        cursor.unsaved = 0

    async def evict(self, belongs: Callable[[str], bool], save: bool) -> int:
        """Drop the cached state of the users ``belongs`` picks (saving it first if asked).

        Called when a partition changes owner: the next owner must start from
        the log and the snapshots, and a cache kept from an earlier ownership
        may lag what another owner did since.
        """
        self._timelines.drop(belongs)
        chosen = [user_id for user_id in self._cache if belongs(user_id)]
        for user_id in chosen:
            cursor = self._cache.pop(user_id)
            if save and cursor.unsaved:
                await self._save(user_id, cursor)
        return len(chosen)

    async def flush(self) -> None:
        """Save every cached state with unsaved progress (on shutdown)."""
        for user_id, cursor in list(self._cache.items()):
            if cursor.unsaved:
                await self._save(user_id, cursor)
