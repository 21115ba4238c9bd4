"""A seeded open-loop cohort of simulated low-back-pain patients, for tests and benchmarks.

``simulate(n, seed)`` yields about twelve weeks of contract events per patient
(``RehabStarted``, then daily ``PainLogged`` and ``SessionCompleted`` with
their during/after pain logs) in the order a server would receive them. The
same arguments always give the same events, ids included, and patients are
generated lazily: one course at a time per patient, merged by arrival time.
The histories do not depend on any prescription; patients who do what they
are prescribed are ``virtual``'s (``make clinical``, ``backtrack demo``).

Each patient follows one archetype, chosen to drive one path through the
prescription rules (../shared/RULES.md):

- ``improver``: pain falls from about 5-6 to 1-2 and sessions mostly settle;
  the progress path (two green verdicts, one level up).
- ``plateau``: pain stays around 4-5 with more bad sessions; the day-42
  ``no_improvement_6_weeks`` and day-84 referrals. More STarT Back high risk.
- ``flare``: improves, then one or two flare-ups (a rise of 3 or more, to 7+
  for a few days) that settle again; the flare phase and its resumption.
- ``red_flag``: a red flag, mostly mid-course in a morning log and sometimes at
  intake; the patient logs pain for a few days while waiting, and half of them
  come back cleared with a new ``RehabStarted`` (the start-over rule).
- ``runner``: goal running, improves to 2 or less; return to run, and running
  replaces the aerobic exercise from week 7 or so.
- ``skipper``: does well under half the planned sessions and skips more logs;
  the ``low_adherence`` hold.
- ``late_sync``: an offline device; spans of 1-3 days arrive in one batch the
  morning after, and wearable sessions arrive hours to days late, so arrival
  order differs from ``occurred_at`` order (order-independence of the fold).

Everyone else varies too: onset cause and date (some in the sprain protect
week), preferences and the aerobic slot, 2-5 sessions a week, missing logs,
good and bad days, and about one in ten patients on +01:00.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from shared.events import Input

from .course import Course
from .outbox import Arrival
from .profile import (
    ARCHETYPES,
    CLINICS,
    DEFAULT_WEIGHTS,
    START,
    Patient,
    make_patient,
    mixture,
    patients,
)

__all__ = [
    "ARCHETYPES",
    "CLINICS",
    "DEFAULT_WEIGHTS",
    "START",
    "Arrival",
    "Patient",
    "events",
    "history",
    "patients",
    "simulate",
]


def history(patient: Patient, seed: int = 0, weeks: int = 12) -> Iterator[Arrival]:
    """One patient's course in arrival order (the seed must be the patient's cohort seed)."""
    return Course(patient, seed, weeks).arrivals()


def simulate(
    n: int,
    seed: int = 0,
    start: datetime = START,
    weeks: int = 12,
    archetypes: Mapping[str, float] | None = None,
) -> Iterator[Arrival]:
    """Yield every event of ``n`` patients sorted by arrival time.

    Ties keep patient order, then each patient's own order, so the sequence is
    a pure function of the arguments. Patient ``i`` does not depend on ``n``.
    """
    if n < 0 or weeks < 1:
        raise ValueError("n must be >= 0 and weeks >= 1")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    mix = mixture(archetypes)
    return _merged(
        [Course(make_patient(seed, i, start=start, mix=mix), seed, weeks) for i in range(n)]
    )


def _merged(courses: list[Course]) -> Iterator[Arrival]:
    # Advance every course a day at a time; one stable sort per day keeps ties
    # in patient order. Cheaper than heapq.merge over thousands of generators.
    if not courses:
        return
    until = min(course.midnight for course in courses).astimezone(UTC)
    while courses:
        batch: list[Arrival] = []
        for course in courses:
            batch += course.advance(until)
        batch.sort(key=attrgetter("at"))
        yield from batch
        courses = [course for course in courses if not course.done]
        until += timedelta(days=1)


def events(
    n: int,
    seed: int = 0,
    start: datetime = START,
    weeks: int = 12,
    archetypes: Mapping[str, float] | None = None,
) -> Iterator[Input]:
    """The events of ``simulate(...)`` alone, in arrival order."""
    return (arrival.event for arrival in simulate(n, seed, start, weeks, archetypes))
