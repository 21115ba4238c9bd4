"""Virtual patients who follow their prescription: a closed loop around any prescriber.

Each day a ``VirtualPatient`` logs a morning score (sometimes a baseline at
midday instead, sometimes nothing), opens the app at the time it would
exercise and reads its current prescription through the ``PrescriptionReader``
it is given, and on a session day does exactly the prescribed exercises at the
prescribed doses. Its body (``shared.cohort.body``) answers that load, so what
it logs next (pain during and after, the next morning) depends on what the
prescriber asked of it. The reader is all the patient knows of the prescriber:
the pure engine in ``make clinical``, or a clinic API over HTTP.

The model, with what it rests on (details and every range in docs/CLINICAL.md):

- Resting pain follows the archetype's natural course, an exponential fall
  from pain0 towards pain_end: most acute low back pain improves within weeks
  (improvers fall by far more than the minimal clinically important change of
  about 2 points or 30%), persistent pain improves slowly (chronic: never
  below 3), and some patients do not improve at all (plateau). Trained
  capacity takes off up to about a point (exercise helps, modestly).
- Capacity, in ladder levels, is the load the back tolerates. It grows under
  well-dosed load (at or a little below capacity), stalls under too little,
  and load above it is answered with pain during, after and the next morning,
  as the pain-monitoring model expects (Silbernagel et al. 2007); graded
  loading is the only way up.
- Day-to-day noise on a morning score is about a point (sd 0.55, and one
  morning in 25 a bad night adds 1.5-2.5 points for that morning alone).
- Flare-prone patients have one or two spontaneous flares, a rise of resting
  pain by 2.5-4 points sustained over 5-9 days; their first day is the true
  start the metrics measure detection against.

Everything random is drawn from ``random.Random`` keyed by seed, patient index
and day, so a patient does not depend on the cohort's size, and two
prescribers see the same mornings, noise and absences: only what depends on
the load they prescribe differs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID

from shared.events import PainContext, PainLocation, PrescribedExercise

from .body import Body, score
from .load import load_of
from .outbox import Arrival
from .persona import Persona
from .phone import Phone
from .reader import PrescriptionReader

WAIT_DAYS = 4  # after a red flag the patient keeps logging pain while waiting to be seen
OUTCOME_WEEKS = (0, 6, 12)  # when RMDQ is asked: intake, week 6, week 12
_HOUR = 3600


@dataclass(frozen=True)
class SessionTruth:
    """One session as it really was: the load done against the capacity of the day."""

    day: int
    session_id: str
    at: datetime
    load: float
    capacity: float
    excess: float
    during: int
    rx_version: int | None
    stale: bool

    @property
    def overloaded(self) -> bool:
        """The load exceeded the capacity of the day."""
        return self.excess > 0


@dataclass
class Truth:
    """What the metrics compare the prescriber with: what really happened to this patient."""

    archetype: str
    flares: list[tuple[int, int]]  # (first, last) program day of each simulated flare
    leg_days: list[int]
    red_flag_events: list[UUID] = field(default_factory=list)
    sessions: list[SessionTruth] = field(default_factory=list)
    daily: list[tuple[int, float, float]] = field(default_factory=list)  # day, resting, capacity
    rmdq: dict[int, int] = field(default_factory=dict)

    @property
    def overload_days(self) -> list[int]:
        """Program days on which a session's load exceeded the capacity of the day."""
        return [s.day for s in self.sessions if s.overloaded]


class VirtualPatient:
    """One patient's days; events are held until they reach the server (``arrived``)."""

    def __init__(self, persona: Persona, seed: int, weeks: int = 12) -> None:
        self.p = persona
        self.seed = seed
        self.days = weeks * 7 + 1  # intake day, then whole weeks: day 84 is the week-12 review
        self.day0: date = persona.started_at.date()
        self.midnight = datetime.combine(self.day0, time(0), persona.tz)
        self.body = Body(persona)
        self.truth = Truth(
            archetype=persona.archetype,
            flares=[(f.start, f.start + f.days - 1) for f in persona.flares],
            leg_days=sorted(persona.leg_days),
        )
        self.rng = random.Random()  # noqa: S311 - reseeded per day (``live``)
        self.phone = Phone(persona, seed, self.days, self.rng, self.truth.red_flag_events)

    def end_of(self, day: int) -> datetime:
        """Local midnight after program ``day``, in UTC."""
        return (self.midnight + timedelta(days=day + 1)).astimezone(UTC)

    def arrived(self, until: datetime | None = None) -> list[Arrival]:
        """Hand out the events that reached the server by ``until`` (all with None)."""
        return self.phone.arrived(until)

    def live(self, day: int, read: PrescriptionReader) -> None:
        """Live program ``day``: log, read the prescription, maybe exercise; in time order."""
        self.rng.seed(f"day:{self.seed}:{self.p.index}:{day}")
        if day == 0:
            self._intake(read)
        else:
            self._day(day, read)
        if day in (min(7 * w, self.days - 1) for w in OUTCOME_WEEKS):
            self._outcomes(day)

    # -- a day ------------------------------------------------------------

    def _intake(self, read: PrescriptionReader) -> None:
        p, rng = self.p, self.rng
        self.phone.rehab_started(p.started_at, p.intake_red_flags)
        if rng.random() < 0.85:
            at = p.started_at + timedelta(minutes=2 + rng.randrange(28))
            self.phone.pain(at, self._morning_score(0), "baseline", location=self._where(0))
        self.phone.sync(p.started_at + timedelta(minutes=35), read, 0)
        self.truth.daily.append((0, self.body.resting(0), self.body.capacity(0)))
        self.body.settle()

    def _day(self, day: int, read: PrescriptionReader) -> None:
        mode = self._mode(day)
        if mode == "away" or day in self.p.away:
            self.body.settle()
            return
        body = self.body
        if mode == "cleared":  # examined and cleared: the program goes on where it was
            self.phone.clinic_review(self._local(day, self._between(9, 12)), "clear_red_flags")
        resting = body.resting(day)
        self.truth.daily.append((day, resting, body.capacity(day)))
        plan = self._plan(day)
        body.settle()
        for at, what in sorted(plan):
            if what == "session":
                self._session(day, at, read)
            else:
                self._log(day, at, what, resting)

    def _log(self, day: int, at: datetime, what: str, resting: float) -> None:
        """A morning score (a red flag rides on it), a midday or an evening baseline."""
        flag = self.p.red_flag if what == "morning" and day == self.p.red_flag_day else None
        if what == "evening":  # later in the day: no bad night in it
            value = score(resting + self.rng.gauss(0.0, 0.5))
        else:
            value = self._morning_score(day, resting)
        context: PainContext = "morning" if what == "morning" else "baseline"
        flags = (flag,) if flag else ()
        self.phone.pain(at, value, context, flags=flags, location=self._where(day))

    def _plan(self, day: int) -> list[tuple[datetime, str]]:
        """What happens when today: the pain logs drawn first, then the app's session slot."""
        p, rng = self.p, self.rng
        plan: list[tuple[datetime, str]] = []
        draw = rng.random()
        morning = self._local(day, self._between(6.5, 9.5))
        if draw < p.log_rate or day == p.red_flag_day:
            plan.append((morning, "morning"))
        elif draw < p.log_rate + 0.06:
            plan.append((self._local(day, self._between(12, 14)), "midday"))
        hour = min(20.5, max(7.0, p.session_hour + rng.uniform(-1.5, 1.5)))
        slot = max(self._local(day, int(hour * _HOUR)), morning + timedelta(minutes=20))
        plan.append((slot, "session"))
        if rng.random() < 0.06:
            plan.append((self._local(day, self._between(20.75, 22.5)), "evening"))
        return plan

    def _session(self, day: int, begin: datetime, read: PrescriptionReader) -> None:
        rx, stale = self.phone.sync(begin, read, day)
        if rx is None or not rx.exercises or not self._session_day(day, rx.sessions_per_week):
            return
        rng = self.rng
        load = load_of((e.exercise_id, e.level) for e in rx.exercises)
        response = self.body.session(day, load, rng)
        session_id = f"{self.p.user_id}:{day:03d}"
        done = rx.exercises if response.completed else rx.exercises[:-1] or rx.exercises
        length = _minutes(done) + rng.randrange(9)
        end = begin + timedelta(minutes=length, seconds=rng.randrange(60))
        if rng.random() < 0.8:
            seen = begin + timedelta(minutes=3 + rng.randrange(max(1, length - 3)))
            self.phone.pain(seen, response.during, "during_exercise", session_id=session_id)
        self.phone.completed(end, session_id, done, response, length)
        if rng.random() < 0.85:
            later = end + timedelta(seconds=self._between(1, 4))
            self.phone.pain(later, response.after, "after_exercise", session_id=session_id)
        self.truth.sessions.append(
            SessionTruth(
                day=day,
                session_id=session_id,
                at=begin,
                load=response.load,
                capacity=response.capacity,
                excess=response.excess,
                during=response.during,
                rx_version=rx.version,
                stale=stale,
            )
        )

    def _session_day(self, day: int, per_week: int) -> bool:
        weekday = (self.day0 + timedelta(days=day)).weekday()
        shift = self.p.weekday_shift
        planned = {(round(k * 7 / per_week) + shift) % 7 for k in range(per_week)}
        return weekday in planned and self.rng.random() < self.p.adherence

    def _mode(self, day: int) -> str:
        flagged, cleared = self.p.red_flag_day, self.p.cleared_after
        if flagged is None or day <= flagged:
            return "normal"
        if day <= flagged + WAIT_DAYS:
            return "waiting"
        if cleared is None or day < flagged + cleared:
            return "away"
        return "cleared" if day == flagged + cleared else "normal"

    def _morning_score(self, day: int, resting: float | None = None) -> int:
        rng = self.rng
        level = self.body.resting(day) if resting is None else resting
        noise = rng.gauss(0.0, 0.55)
        if rng.random() < 0.04:  # a bad night: this morning only
            noise += rng.uniform(1.5, 2.5)
        return score(level + noise)

    def _where(self, day: int) -> PainLocation | None:
        rng = self.rng
        if self.p.archetype == "radicular":
            if day in self.p.leg_days:
                return "leg_below_knee"
            return rng.choice(("lower_back", "buttock", "leg_above_knee"))
        if rng.random() < 0.5:
            return None
        return "lower_back" if rng.random() < 0.9 else "buttock"

    def _outcomes(self, day: int) -> None:
        """RMDQ at intake, week 6 and week 12, answered in the app in the evening.

        Roland-Morris (0-24) tracks resting pain (about 2.3 points per point of
        pain), with the scatter of a questionnaire (sd 2).
        """
        rmdq = max(0, min(24, round(2.3 * self.body.resting(day) + self.rng.gauss(0.0, 2.0))))
        self.truth.rmdq[day] = rmdq
        if self._mode(day) == "normal" and day not in self.p.away:
            self.phone.outcome(self._local(day, self._between(19, 21)), "rmdq", float(rmdq))

    def _between(self, low: float, high: float) -> int:
        """Seconds into a day between two hours."""
        return int(self.rng.uniform(low, high) * _HOUR)

    def _local(self, day: int, seconds: int) -> datetime:
        return self.midnight + timedelta(days=day, seconds=seconds)


def _minutes(exercises: tuple[PrescribedExercise, ...]) -> int:
    """A session's length: the aerobic minutes plus about 3 minutes per other exercise."""
    return sum(e.minutes if e.minutes else 3 for e in exercises)
