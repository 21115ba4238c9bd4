"""Where a simulated patient's events are built and held until they arrive.

Every event gets a uuid drawn from the patient's own seeded generator, and an
arrival time: seconds after it occurred, or, for a device that was offline,
the morning it came back online. Events wait in a heap keyed by arrival.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID

from shared.events import (
    Difficulty,
    ExerciseDone,
    Input,
    PainContext,
    PainLogged,
    RedFlag,
    RehabStarted,
    SessionCompleted,
)

from .profile import Patient


@dataclass(frozen=True)
class Arrival:
    """An event and the moment it reaches the server (UTC)."""

    at: datetime
    event: Input


class Outbox:
    """Builds one patient's events and holds them until their arrival time."""

    def __init__(self, patient: Patient, seed: int, days: int) -> None:
        self.p = patient
        self.rng = random.Random(f"course:{seed}:{patient.index}")  # noqa: S311 - simulation
        self.days = days
        self.day0: date = patient.started_at.date()
        self.midnight = datetime.combine(self.day0, time(0), patient.tz)
        self.held: list[tuple[datetime, int, Arrival]] = []
        self.seq = 0
        self.release = self._offline_days() if patient.archetype == "late_sync" else {}

    def _arrived(self, until: datetime) -> list[Arrival]:
        held, out = self.held, []
        while held and held[0][0] <= until:
            out.append(heapq.heappop(held)[2])
        return out

    def _id(self) -> UUID:
        return UUID(int=self.rng.getrandbits(128), version=4)

    def _rehab_started(self, at: datetime, flags: tuple[RedFlag, ...]) -> None:
        p = self.p
        event = RehabStarted(
            event_id=self._id(),
            user_id=p.user_id,
            occurred_at=at,
            onset_date=p.onset_date,
            cause=p.cause,
            goals=p.goals,
            preferences=p.preferences,
            sessions_per_week=p.sessions_per_week,
            clinic_id=p.clinic_id,
            red_flags=flags,
            start_back=p.start_back,
        )
        self._send(event, at)

    def _pain(
        self,
        at: datetime,
        score: int,
        context: PainContext,
        *,
        session_id: str | None = None,
        flags: tuple[RedFlag, ...] = (),
    ) -> None:
        event = PainLogged(
            event_id=self._id(),
            user_id=self.p.user_id,
            occurred_at=at,
            score=score,
            context=context,
            session_id=session_id,
            red_flags=flags,
        )
        self._send(event, at)

    def _completed(
        self,
        at: datetime,
        session_id: str,
        *,
        plan: tuple[ExerciseDone, ...],
        done: bool,
        during: int,
        bad: bool,
        length: int,
    ) -> None:
        rng = self.rng
        difficulty: Difficulty = "ok"
        if (bad and rng.random() < 0.7) or rng.random() < 0.05:
            difficulty = "hard"
        elif during <= 1 and rng.random() < 0.5:
            difficulty = "easy"
        event = SessionCompleted(
            event_id=self._id(),
            user_id=self.p.user_id,
            occurred_at=at,
            session_id=session_id,
            exercises=plan,
            completed=done,
            difficulty=difficulty,
            pain_during=during if rng.random() < 0.85 else None,
            duration_minutes=length,
        )
        # a wearable that syncs late: the session lands after the pain logs around it
        late = bool(self.release) and rng.random() < 0.6
        self._send(event, at, late_by=self._int(3 * 3600, 40 * 3600) if late else 0)

    def _send(self, event: Input, occurred: datetime, late_by: int = 0) -> None:
        released = self.release.get((occurred.date() - self.day0).days)
        if released is not None:  # offline: the whole batch syncs when back online
            at = self._local(released, self._int(7 * 3600, 10 * 3600)).astimezone(UTC)
        else:
            at = occurred.astimezone(UTC) + timedelta(seconds=late_by + self._int(1, 30))
        heapq.heappush(self.held, (at, self.seq, Arrival(at, event)))
        self.seq += 1

    def _int(self, low: int, high: int) -> int:
        # randint's rejection sampling costs more than the whole event build
        return low + int(self.rng.random() * (high - low + 1))

    def _local(self, day: int, seconds: int) -> datetime:
        return self.midnight + timedelta(days=day, seconds=seconds)

    def _offline_days(self) -> dict[int, int]:
        """Course day -> day its events sync, for spans of 1-3 days offline."""
        release: dict[int, int] = {}
        day = self._int(2, 6)
        while day < self.days:
            span = self._int(1, 3)
            for offline in range(day, min(day + span, self.days)):
                release[offline] = day + span
            day += span + self._int(3, 8)
        return release
