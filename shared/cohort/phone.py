"""A virtual patient's phone: it builds their events, holds them until they reach the
server, and shows the prescription, or the one it cached while offline.

Event ids come from the patient's own seeded generator. Online, an event
arrives 1-30 s after it happened. A device that goes offline (``late_sync``)
keeps what happens until it is back, then sends it as one batch; its wearable
also syncs most sessions hours late, after the pain logs around them.
"""

from __future__ import annotations

import heapq
import random
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID

from shared.events import (
    ClinicianReviewed,
    ExerciseDone,
    Input,
    Instrument,
    OutcomeRecorded,
    PainContext,
    PainLocation,
    PainLogged,
    PrescribedExercise,
    PrescriptionChanged,
    RedFlag,
    RehabStarted,
    ReviewAction,
    SessionCompleted,
)

from .body import Response
from .outbox import Arrival
from .persona import Persona
from .reader import PrescriptionReader

_HOUR = 3600


class Phone:
    """One patient's app and device; ``flagged`` collects the ids of red-flag events."""

    def __init__(
        self, persona: Persona, seed: int, days: int, rng: random.Random, flagged: list[UUID]
    ) -> None:
        self.p = persona
        self.rng = rng
        self.flagged = flagged
        self.day0: date = persona.started_at.date()
        self.cached: PrescriptionChanged | None = None
        self.held: list[tuple[datetime, int, Arrival]] = []
        self.seq = 0
        self.offline = offline_days(persona, seed, days) if persona.offline else {}

    def sync(
        self, at: datetime, read: PrescriptionReader, day: int
    ) -> tuple[PrescriptionChanged | None, bool]:
        """The prescription shown at ``at`` and whether it is stale (the cache, offline)."""
        back = self.offline.get(day)
        if back is not None and at < back:
            return self.cached, True
        self.cached = read(at)
        return self.cached, False

    def arrived(self, until: datetime | None = None) -> list[Arrival]:
        """Hand out the events that reached the server by ``until`` (all with None)."""
        held, out = self.held, []
        while held and (until is None or held[0][0] <= until):
            out.append(heapq.heappop(held)[2])
        return out

    def rehab_started(self, at: datetime, flags: tuple[RedFlag, ...]) -> None:
        """The patient (re)starts the program, reporting any red flag at intake."""
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
        self._send(event)

    def pain(
        self,
        at: datetime,
        value: int,
        context: PainContext,
        *,
        session_id: str | None = None,
        flags: tuple[RedFlag, ...] = (),
        location: PainLocation | None = None,
    ) -> None:
        """A pain score in its context."""
        event = PainLogged(
            event_id=self._id(),
            user_id=self.p.user_id,
            occurred_at=at,
            score=value,
            context=context,
            session_id=session_id,
            red_flags=flags,
            location=location,
        )
        self._send(event)

    def completed(
        self,
        at: datetime,
        session_id: str,
        done: tuple[PrescribedExercise, ...],
        response: Response,
        length: int,
    ) -> None:
        """A finished session: the exercises done at their prescribed doses, and how it went."""
        rng = self.rng
        event = SessionCompleted(
            event_id=self._id(),
            user_id=self.p.user_id,
            occurred_at=at,
            session_id=session_id,
            exercises=tuple(_done(e) for e in done),
            completed=response.completed,
            difficulty=response.difficulty,
            pain_during=response.during if rng.random() < 0.85 else None,
            duration_minutes=length,
        )
        late = self.p.offline and rng.random() < 0.6  # the wearable syncs it later
        self._send(event, late_by=int(rng.uniform(3, 40) * _HOUR) if late else 0)

    def outcome(self, at: datetime, instrument: Instrument, value: float) -> None:
        """An outcome measure the patient answered in the app."""
        event = OutcomeRecorded(
            event_id=self._id(),
            user_id=self.p.user_id,
            occurred_at=at,
            instrument=instrument,
            score=value,
        )
        self._send(event)

    def clinic_review(self, at: datetime, action: ReviewAction) -> None:
        """The patient's clinic acts on the program; it reaches the server from the clinic's
        system at once, whatever the phone's connection."""
        event = ClinicianReviewed(
            event_id=self._id(),
            user_id=self.p.user_id,
            occurred_at=at,
            action=action,
            reviewed_by=self.p.clinic_id,
        )
        arrival = at.astimezone(UTC) + timedelta(seconds=1 + self.rng.randrange(30))
        heapq.heappush(self.held, (arrival, self.seq, Arrival(arrival, event)))
        self.seq += 1

    def _send(self, event: Input, late_by: int = 0) -> None:
        if isinstance(event, RehabStarted | PainLogged) and event.red_flags:
            self.flagged.append(event.event_id)
        occurred = event.occurred_at
        back = self.offline.get((occurred.date() - self.day0).days)
        if back is not None and occurred < back:  # offline: the batch syncs when back online
            at = back.astimezone(UTC)
        else:
            at = occurred.astimezone(UTC) + timedelta(seconds=late_by + 1 + self.rng.randrange(30))
        heapq.heappush(self.held, (at, self.seq, Arrival(at, event)))
        self.seq += 1

    def _id(self) -> UUID:
        return UUID(int=self.rng.getrandbits(128), version=4)


def offline_days(persona: Persona, seed: int, days: int) -> dict[int, datetime]:
    """Program day -> when the device is back online, for spans of 1-3 days offline.

    The day it comes back is included: before that moment it is still offline.
    """
    rng = random.Random(f"offline:{seed}:{persona.index}")  # noqa: S311 - simulation
    midnight = datetime.combine(persona.started_at.date(), time(0), persona.tz)
    release: dict[int, datetime] = {}
    day = rng.randint(2, 6)
    while day < days:
        span = rng.randint(1, 3)
        back = midnight + timedelta(days=day + span, seconds=int(rng.uniform(7, 10) * _HOUR))
        for offline in range(day, min(day + span + 1, days)):
            release[offline] = back
        day += span + rng.randint(3, 8)
    return release


def _done(exercise: PrescribedExercise) -> ExerciseDone:
    """A prescribed exercise as the patient logs having done it, at the prescribed dose."""
    return ExerciseDone(
        exercise_id=exercise.exercise_id,
        sets=exercise.sets or 1,
        reps=exercise.reps,
        hold_seconds=exercise.hold_seconds,
        minutes=exercise.minutes,
    )
