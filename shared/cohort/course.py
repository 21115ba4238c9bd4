"""One simulated patient's course, day by day: pain, sessions, red flags.

``Course.advance(until)`` simulates the days that begin by ``until`` and
hands out the events that have reached the server by then, so a cohort can
be merged by arrival time while holding only a few days of events each.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from shared.events import RedFlag

from .outbox import Arrival, Outbox
from .profile import Patient
from .program import minutes, session_plan

_WAIT_DAYS = 4  # after a red flag the patient keeps logging pain while waiting to be seen
_FLARE_DAYS = 6
_DAY = timedelta(days=1)


def _score(x: float) -> int:
    return 0 if x < 0 else 10 if x > 10 else round(x)


class Course(Outbox):
    """Generator state for one patient; ``arrivals()`` yields in arrival order."""

    def __init__(self, patient: Patient, seed: int, weeks: int) -> None:
        super().__init__(patient, seed, weeks * 7)
        self.next_day = 0
        self.carry = 0.0  # extra pain the morning after a session that went badly
        self.next_midnight = self.midnight.astimezone(UTC)  # of next_day, for cheap compares
        self.planned = self._weekdays()

    @property
    def done(self) -> bool:
        """Every day simulated and every event handed out."""
        return self.next_day >= self.days and not self.held

    def advance(self, until: datetime) -> list[Arrival]:
        """Simulate the days that start by ``until``; hand out what has arrived by then.

        Later days only hold events that occur, hence arrive, after their local
        midnight, so nothing handed out later can arrive before ``until``.
        """
        while self.next_day < self.days and self.next_midnight <= until:
            if self.next_day == 0:
                self._intake()
            else:
                self._day(self.next_day)
            self.next_day += 1
            self.next_midnight += _DAY
        return self._arrived(until)

    def arrivals(self) -> Iterator[Arrival]:
        """Every event of the course, sorted by arrival time, ties in occurrence order."""
        until = self.midnight.astimezone(UTC)
        while not self.done:
            yield from self.advance(until)
            until += _DAY

    # -- days ------------------------------------------------------------

    def _intake(self) -> None:
        p = self.p
        self._rehab_started(p.started_at, p.intake_red_flags)
        if self.rng.random() < 0.7:
            after = p.started_at + timedelta(minutes=self._int(2, 30))
            self._pain(after, _score(p.baseline0), "baseline")

    def _day(self, day: int) -> None:
        mode = self._mode(day)
        if mode == "away":
            return
        if mode == "restart":
            self._rehab_started(self._local(day, self._int(9 * 3600, 12 * 3600)), ())
        level = self._level(day) + self.rng.gauss(0.0, 0.6) + self.carry
        self.carry = 0.0
        flag = self.p.red_flag if day == self.p.red_flag_day else None
        self._mornings(day, level, flag)
        if mode != "waiting" and flag is None and self._session_day(day):
            self._session(day, level)

    def _mode(self, day: int) -> str:
        flagged, cleared = self.p.red_flag_day, self.p.cleared_after
        if flagged is None or day <= flagged:
            return "normal"
        if day <= flagged + _WAIT_DAYS:
            return "waiting"
        if cleared is None or day < flagged + cleared:
            return "away"
        return "restart" if day == flagged + cleared else "normal"

    def _level(self, day: int) -> float:
        p = self.p
        level = p.baseline_end + (p.baseline0 - p.baseline_end) * math.exp(-day / p.tau_days)
        for start in p.flares:
            if start <= day < start + _FLARE_DAYS:
                peak = max(3.0, 7.6 - level)  # two days >= 7, or a jump of >= 2
                level += peak if day - start < 3 else peak * (start + _FLARE_DAYS - day) / 3
        return level

    def _flaring(self, day: int) -> bool:
        return any(start <= day < start + _FLARE_DAYS for start in self.p.flares)

    def _mornings(self, day: int, level: float, flag: RedFlag | None) -> None:
        rng, score = self.rng, _score(level)
        logs = 0.65 if self.p.archetype == "skipper" else 0.88
        draw = rng.random()
        if flag is not None or draw < logs:
            at = self._local(day, self._int(6 * 3600 + 1800, 9 * 3600 + 1800))
            self._pain(at, score, "morning", flags=(flag,) if flag else ())
        elif draw < logs + 0.05:
            self._pain(self._local(day, self._int(12 * 3600, 14 * 3600)), score, "baseline")
        if rng.random() < 0.08:
            at = self._local(day, self._int(19 * 3600, 22 * 3600 + 1800))
            self._pain(at, _score(level + rng.gauss(0.0, 0.5)), "baseline")

    def _session_day(self, day: int) -> bool:
        planned = (self.day0 + timedelta(days=day)).weekday() in self.planned
        return planned and self.rng.random() < self.p.adherence

    def _session(self, day: int, level: float) -> None:
        rng, p = self.rng, self.p
        flaring = self._flaring(day)
        bad = rng.random() < (0.5 if flaring else p.setback_rate)
        plan = session_plan(p, day, flaring=flaring)
        begin = self._local(day, self._int(11 * 3600, 19 * 3600))
        length = minutes(plan) + self._int(0, 8)
        end = begin + timedelta(minutes=length, seconds=rng.randrange(60))
        session_id = f"{p.user_id}:{day:03d}"
        if bad:
            during = _score(level + 1 + rng.random() * 2.5)
            after = _score(level + 1.5 + rng.random())
            self.carry = 1.5
        else:
            during = _score(level * 0.4 + rng.gauss(0.0, 0.8))
            after = min(_score(level), _score(level - 0.5 + rng.gauss(0.0, 0.6)))
        if rng.random() < 0.8:
            seen = begin + timedelta(minutes=self._int(3, max(4, length - 1)))
            self._pain(seen, during, "during_exercise", session_id=session_id)
        done = rng.random() < (0.55 if bad else 0.93)
        self._completed(
            end,
            session_id,
            plan=plan if done else plan[:-1],
            done=done,
            during=during,
            bad=bad,
            length=length,
        )
        if rng.random() < 0.85:
            later = end + timedelta(seconds=self._int(3600, 4 * 3600))
            self._pain(later, after, "after_exercise", session_id=session_id)

    def _weekdays(self) -> frozenset[int]:
        per_week = self.p.sessions_per_week
        shift = self.rng.randrange(7)
        return frozenset((round(k * 7 / per_week) + shift) % 7 for k in range(per_week))
