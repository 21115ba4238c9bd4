"""The event store contract, and an in-memory implementation of it.

The Redis implementation (``shared.redis_store``) and ``MemoryStore`` pass one
shared contract test suite. Positions are stream entry ids (``"<ms>-<seq>"``)
of the user's history; they order a user's events as they were appended.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from shared.events import Input, PrescriptionChanged, RehabStarted
from shared.streams import START, position_key

Status = Literal["accepted", "duplicate", "conflict", "erased"]


class StoreUnavailable(RuntimeError):  # noqa: N818 - the contract's name, used by callers
    """The store cannot be reached; nothing was written. Callers answer 503."""


class UserErased(LookupError):  # noqa: N818 - the contract's name, used by callers
    """The user was erased: they cannot be enrolled (nothing was written)."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id!r} was erased")
        self.user_id = user_id


class VersionGapError(ValueError):
    """A change's version would skip one: the user's output is not where its writer
    thought it was. Nothing was written; the feed entry goes to the dead letters."""


@dataclass(frozen=True, slots=True)
class Appended:
    """What an append did: stored the event (``accepted``), found it stored already
    (``duplicate``), or found its event_id taken by another payload of the same user
    (``conflict``: nothing stored; ``position`` is the earlier event's), or refused it
    because its user was erased (``erased``: nothing stored, no position)."""

    event_id: str
    status: Status
    position: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A user's folded state as of ``position`` (opaque bytes to the store).

    A snapshot whose ``rules_version`` or ``state_version`` differs from the
    reader's is stale and must be discarded by the reader.
    """

    data: bytes
    position: str
    rules_version: str
    state_version: int


@dataclass(frozen=True, slots=True)
class Enrolment:
    """One change of the clinic that holds a user, as the enrolment record keeps it.

    ``clinic_id`` is the clinic after the change (None: unenrolled), ``previous``
    the one before (None: no clinic; another clinic: a transfer); ``by`` is who
    made it (``clinic:<id>`` or ``operator``), ``at`` when; ``position`` is the
    record's id in the enrolment stream.
    """

    user_id: str
    clinic_id: str | None
    previous: str | None
    by: str
    at: datetime
    position: str


class EventStore(Protocol):
    """Append-only, per-user event histories with idempotent appends."""

    async def append(self, event: Input, *, enrols: bool = True) -> Appended:
        """Store one event atomically (dedupe, history, partition feed).

        Dedupe is per user: an event_id another user stored is no obstacle. The
        user's own event_id again answers ``duplicate`` if the event is equal to
        the stored one, ``conflict`` if not; either way nothing is written.

        With ``enrols``, a RehabStarted naming a clinic enrols its user with that
        clinic if no clinic holds them (never a transfer: transfers are
        ``enrol``-ments); operators' writes do, devices' do not.
        """
        ...

    async def append_many(self, events: Sequence[Input], *, enrols: bool = True) -> list[Appended]:
        """Store many events as ``append`` would, each atomically, results in input order
        (a user's event_id repeated in the batch meets the first one as stored)."""
        ...

    async def history(
        self, user_id: str, after: str = START, count: int | None = None
    ) -> list[tuple[str, Input]]:
        """A user's events after ``after`` (exclusive), oldest first."""
        ...

    async def histories(
        self, cursors: Sequence[tuple[str, str]], until: Sequence[str | None] | None = None
    ) -> list[list[tuple[str, Input]]]:
        """For each ``(user_id, after)``, what ``history(user_id, after)`` returns, in order.

        ``until`` gives, per cursor, the last position wanted (inclusive); None
        or no ``until`` reads to the end.
        """
        ...

    async def append_change(self, change: PrescriptionChanged) -> Appended:
        """Store a PrescriptionChanged once per version, forever (not by a dedupe window).

        The user's changes run versions 1, 2, 3... A change whose version is
        already there answers ``duplicate`` with that entry's position and writes
        nothing; the next version is appended; a later one raises ``VersionGapError``.
        """
        ...

    async def append_changes(self, changes: Sequence[PrescriptionChanged]) -> list[Appended]:
        """Store many changes as ``append_change`` would, results in input order."""
        ...

    async def prescriptions(
        self, user_id: str, after: str = START
    ) -> list[tuple[str, PrescriptionChanged]]:
        """A user's prescription changes after ``after``, oldest first."""
        ...

    async def latest_prescription(self, user_id: str) -> PrescriptionChanged | None: ...

    async def clinic_of(self, user_id: str) -> str | None:
        """The clinic the user is enrolled with now, or None."""
        ...

    async def enrol(self, user_id: str, clinic_id: str, by: str) -> Enrolment:
        """Enrol the user with ``clinic_id`` (a transfer if another clinic held them) and
        record it, in one atomic step. Re-enrolling with the same clinic is recorded too."""
        ...

    async def unenrol(self, user_id: str, clinic_id: str | None, by: str) -> Enrolment | None:
        """End the user's enrolment if ``clinic_id`` holds them (None: whichever clinic does)
        and record it, in one atomic step; None, with nothing written, if it did not."""
        ...

    async def enrolments(self, user_id: str) -> list[Enrolment]:
        """Every recorded enrolment change of the user, oldest first."""
        ...

    async def load_snapshot(self, user_id: str) -> Snapshot | None: ...

    async def save_snapshot(self, user_id: str, snapshot: Snapshot) -> None: ...

    async def save_snapshots(self, snapshots: Sequence[tuple[str, Snapshot]]) -> None:
        """``save_snapshot`` for each ``(user_id, snapshot)``."""
        ...


class MemoryStore:
    """``EventStore`` in memory, for unit tests and fakes; same contract as Redis.

    Positions look like stream ids (``"<ms>-<seq>"``) and increase
    monotonically across the whole store. Dedupe is per user and event_id,
    as in Redis, and a repeated id is compared with the stored event; ids
    never expire here (Redis forgets them after the dedupe TTL).
    ``feeds``/``rxfeeds`` hold what Redis would put on the partition feeds:
    ``(feed position, history position, event)``.
    """

    def __init__(self, partitions: int = 16) -> None:
        self.partitions = partitions
        self._last = (0, -1)
        self._seen: dict[tuple[str, str], tuple[str, Input]] = {}
        self._history: dict[str, list[tuple[str, Input]]] = {}
        self._rx: dict[str, list[tuple[str, PrescriptionChanged]]] = {}
        self._clinic: dict[str, str] = {}
        self._enrolments: list[Enrolment] = []
        self._snapshots: dict[str, Snapshot] = {}
        self.feeds: dict[int, list[tuple[str, str, Input]]] = {}
        self.rxfeeds: dict[int, list[tuple[str, str, PrescriptionChanged]]] = {}

    def _next_position(self) -> str:
        ms, seq = self._last
        now = time.time_ns() // 1_000_000
        self._last = (now, 0) if now > ms else (ms, seq + 1)
        return f"{self._last[0]}-{self._last[1]}"

    def _partition(self, user_id: str) -> int:
        return zlib.crc32(user_id.encode()) % self.partitions

    def _append_now(self, event: Input, enrols: bool) -> Appended:
        event_id = str(event.event_id)
        key = (event.user_id, event_id)
        stored = self._seen.get(key)
        if stored is not None:
            position, earlier = stored
            return Appended(event_id, "duplicate" if earlier == event else "conflict", position)
        position = self._next_position()
        self._history.setdefault(event.user_id, []).append((position, event))
        feed = self.feeds.setdefault(self._partition(event.user_id), [])
        feed.append((self._next_position(), position, event))
        self._seen[key] = (position, event)
        if enrols and isinstance(event, RehabStarted) and event.clinic_id:
            self._clinic.setdefault(event.user_id, event.clinic_id)
        return Appended(event_id, "accepted", position)

    async def append(self, event: Input, *, enrols: bool = True) -> Appended:
        return self._append_now(event, enrols)

    async def append_many(self, events: Sequence[Input], *, enrols: bool = True) -> list[Appended]:
        return [self._append_now(event, enrols) for event in events]

    async def history(
        self, user_id: str, after: str = START, count: int | None = None
    ) -> list[tuple[str, Input]]:
        found = [e for e in self._history.get(user_id, []) if _after(e[0], after)]
        return found if count is None else found[:count]

    async def histories(
        self, cursors: Sequence[tuple[str, str]], until: Sequence[str | None] | None = None
    ) -> list[list[tuple[str, Input]]]:
        ends = until or [None] * len(cursors)
        return [
            [e for e in await self.history(user_id, after) if end is None or not _after(e[0], end)]
            for (user_id, after), end in zip(cursors, ends, strict=True)
        ]

    async def append_change(self, change: PrescriptionChanged) -> Appended:
        event_id, stream = str(change.event_id), self._rx.setdefault(change.user_id, [])
        have = stream[-1][1].version if stream else 0
        if change.version <= have:
            return Appended(event_id, "duplicate", stream[change.version - 1][0])
        if change.version > have + 1:
            raise VersionGapError(f"version {change.version} after {have} for {change.user_id}")
        position = self._next_position()
        stream.append((position, change))
        feed = self.rxfeeds.setdefault(self._partition(change.user_id), [])
        feed.append((self._next_position(), position, change))
        return Appended(event_id, "accepted", position)

    async def append_changes(self, changes: Sequence[PrescriptionChanged]) -> list[Appended]:
        return [await self.append_change(change) for change in changes]

    async def prescriptions(
        self, user_id: str, after: str = START
    ) -> list[tuple[str, PrescriptionChanged]]:
        return [e for e in self._rx.get(user_id, []) if _after(e[0], after)]

    async def latest_prescription(self, user_id: str) -> PrescriptionChanged | None:
        changes = self._rx.get(user_id)
        return changes[-1][1] if changes else None

    async def clinic_of(self, user_id: str) -> str | None:
        return self._clinic.get(user_id)

    def _record(
        self, user_id: str, clinic_id: str | None, previous: str | None, by: str
    ) -> Enrolment:
        at, position = datetime.now(UTC), self._next_position()
        record = Enrolment(user_id, clinic_id, previous, by, at, position)
        self._enrolments.append(record)
        return record

    async def enrol(self, user_id: str, clinic_id: str, by: str) -> Enrolment:
        previous = self._clinic.get(user_id)
        self._clinic[user_id] = clinic_id
        return self._record(user_id, clinic_id, previous, by)

    async def unenrol(self, user_id: str, clinic_id: str | None, by: str) -> Enrolment | None:
        current = self._clinic.get(user_id)
        if current is None or clinic_id not in (None, current):
            return None
        del self._clinic[user_id]
        return self._record(user_id, None, current, by)

    async def enrolments(self, user_id: str) -> list[Enrolment]:
        return [e for e in self._enrolments if e.user_id == user_id]

    async def load_snapshot(self, user_id: str) -> Snapshot | None:
        return self._snapshots.get(user_id)

    def expire_dedupe(self) -> None:
        """Forget every event id, as Redis does once the dedupe window has passed."""
        self._seen.clear()

    async def save_snapshot(self, user_id: str, snapshot: Snapshot) -> None:
        self._snapshots[user_id] = snapshot

    async def save_snapshots(self, snapshots: Sequence[tuple[str, Snapshot]]) -> None:
        for user_id, snapshot in snapshots:
            self._snapshots[user_id] = snapshot


def _after(position: str, after: str) -> bool:
    return after in ("", "-") or position_key(position) > position_key(after)
