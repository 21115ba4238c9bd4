"""Users' folded states in memory, loaded from snapshots and saved back as they fall due.

A cursor is a user's state and the history position it has reached. The
cache holds up to ``size`` cursors, least recently used first out (saved
first if they have unsaved progress). A user without a usable snapshot (none,
or one from another rule set or state version) is caught up from the whole
history. A snapshot is saved every ``snapshot_every`` folded events, and
after a refold or a catch-up.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from services.prescriber import engine
from services.prescriber.arrivals import Timeline
from shared.events import PrescriptionChanged
from shared.store import EventStore, Snapshot
from shared.streams import START


@dataclass(slots=True)
class Cursor:
    """A user's folded state and the history position it has reached."""

    state: engine.State
    position: str
    unsaved: int = 0


@dataclass(slots=True)
class Step:
    """A user's fold of new entries, not yet stored: what it emits, where the cursor moves."""

    user_id: str
    cursor: Cursor
    state: engine.State
    position: str
    changes: list[PrescriptionChanged]
    unsaved: int
    timeline: Timeline | None = None

    @classmethod
    def still(cls, user_id: str, cursor: Cursor) -> Step:
        """Nothing new to fold: the cursor stays."""
        return cls(user_id, cursor, cursor.state, cursor.position, [], cursor.unsaved)


class Cursors:
    """The cursors of the users this process folds, cached, snapshotted in the store."""

    def __init__(
        self, store: EventStore, rules: engine.RuleSet, snapshot_every: int, size: int
    ) -> None:
        self.store = store
        self.rules = rules
        self.snapshot_every = snapshot_every
        self.size = size
        self._cache: OrderedDict[str, Cursor] = OrderedDict()

    async def get(self, user_id: str) -> Cursor:
        """The user's cursor: cached, else from their snapshot, else caught up from the log."""
        cursor = self._cache.get(user_id)
        if cursor is not None:
            self._cache.move_to_end(user_id)
            return cursor
        cursor = await self._load(user_id)
        self._cache[user_id] = cursor
        if len(self._cache) > self.size:
            evicted, old = self._cache.popitem(last=False)
            if old.unsaved:
                await self._save(evicted, old)
        return cursor

    async def move(self, steps: Iterable[Step]) -> None:
        """Move each step's cursor where it leads; save the snapshots that fell due.

        Called only once the changes the steps emit are stored: a failed
        append leaves the entries to be folded again, to the same change ids.
        """
        due: list[tuple[str, Cursor]] = []
        for step in steps:
            cursor = step.cursor
            cursor.state, cursor.position, cursor.unsaved = step.state, step.position, step.unsaved
            if cursor.unsaved >= self.snapshot_every:
                due.append((step.user_id, cursor))
        if due:
            await self.store.save_snapshots([(user_id, self._snapshot(c)) for user_id, c in due])
            for _, cursor in due:
                cursor.unsaved = 0

    def forget(self, user_id: str) -> None:
        """Drop the user's cursor unsaved: the next batch reloads it from the log."""
        self._cache.pop(user_id, None)

    async def evict(self, belongs: Callable[[str], bool], save: bool) -> int:
        """Drop the cursors of the users ``belongs`` picks (saving them first if asked)."""
        chosen = [user_id for user_id in self._cache if belongs(user_id)]
        for user_id in chosen:
            cursor = self._cache.pop(user_id)
            if save and cursor.unsaved:
                await self._save(user_id, cursor)
        return len(chosen)

    async def flush(self) -> None:
        """Save every cached cursor with unsaved progress (on shutdown)."""
        for user_id, cursor in list(self._cache.items()):
            if cursor.unsaved:
                await self._save(user_id, cursor)

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
            return Cursor(engine.initial(user_id), START)
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


__all__ = ["Cursor", "Cursors", "Step"]
