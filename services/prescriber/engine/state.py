"""The per-user state the fold carries: frozen, tuples only, bounded windows.

Every window keeps only what a rule can still look at (7 days of baseline and
morning scores, 12 h of during-exercise logs, 14 days of session times, the
last few verdicts and event ids), so the cost of one event stays flat however
long the history grows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar
from uuid import UUID

from shared.events import PrescriptionChanged

Score = tuple[datetime, int]
DuringLog = tuple[datetime, int, str | None]
Verdict = str  # "green" | "amber" | "red"


@dataclass(frozen=True)
class Episode:
    """What a RehabStarted fixed for its episode; never changes within it."""

    event_id: UUID
    started_at: datetime
    onset: date
    protect: bool
    aerobic: str
    exercises: tuple[str, ...]
    run_goal: bool
    sessions_per_week: int
    start_back_high: bool
    start_back_medium: bool = False


@dataclass(frozen=True)
class Pending:
    """A session whose verdict is not final yet (no morning log, not 36 h old)."""

    session_id: str
    at: datetime
    baseline: float | None
    completed: bool
    hard: bool
    run: bool
    during: int | None
    after: int | None = None
    morning: int | None = None
    next_baseline: int | None = None  # a baseline log in the next-day window (v2)


@dataclass(frozen=True)
class Final:
    """A final verdict and the facts progression looks at."""

    at: datetime
    verdict: Verdict
    completed: bool
    hard: bool


@dataclass(frozen=True)
class Flare:
    """An ongoing flare-up: what it started from, to know when it settled."""

    since: datetime
    code: str
    pre_baseline: float
    pre_levels: tuple[int, ...]
    pre_run_level: int
    not_settling: bool = False
    acknowledged: bool = False  # its not-settling referral was acknowledged by a clinician


@dataclass(frozen=True)
class Rise:
    """Scores in a row above the pre-flare median: a flare if enough follow (v2)."""

    since: datetime
    day: date  # the latest score's date: the next must fall on another day
    median: float  # the 7-day median before the first of them
    baseline: float | None  # the baseline just before the first of them
    count: int = 1


@dataclass(frozen=True)
class Program:
    """The episode's moving parts: levels, pending verdicts, flare, escalation."""

    levels: tuple[int, ...]
    red_flags: tuple[str, ...] = ()
    running: bool = False
    run_level: int = 1
    build_since: date | None = None
    flare: Flare | None = None
    pending: tuple[Pending, ...] = ()
    finals: tuple[Final, ...] = ()
    sessions: tuple[datetime, ...] = ()
    last_step_at: datetime | None = None
    step_code: str | None = None
    last_green_at: datetime | None = None
    last_other_at: datetime | None = None
    first_baseline: float | None = None
    no_improvement: bool | None = None
    not_recovered: bool | None = None
    prior_baseline: float | None = None  # known at intake: the first baseline's fallback (v2)
    last_regress_at: datetime | None = None
    rise: Rise | None = None
    radicular: bool = False
    held: bool = False  # a clinician holds automatic progression
    excluded: tuple[str, ...] = ()  # exercises a clinician took out of the prescription
    start_back_cleared: bool = False  # a clinician acknowledged the STarT Back referral
    outcomes: tuple[tuple[str, float, float], ...] = ()  # instrument, first, latest score


@dataclass(frozen=True)
class State:
    """One user's folded state; ``last`` is the last PrescriptionChanged emitted."""

    user_id: str
    now: datetime | None = None
    last_id: UUID | None = None
    today: date | None = None
    recent_ids: tuple[UUID, ...] = ()
    needs_refold: bool = False
    clinic_id: str | None = None
    last: PrescriptionChanged | None = None
    scores: tuple[Score, ...] = ()
    last_baseline: float | None = None
    high_days: tuple[date, ...] = ()
    leg_days: tuple[date, ...] = ()  # recent dates with leg pain below the knee
    review: tuple[UUID, str] | None = None  # the latest ClinicianReviewed: id and action
    during: tuple[DuringLog, ...] = ()
    early_flags: tuple[str, ...] = ()
    episode: Episode | None = None
    program: Program | None = None


def initial(user_id: str) -> State:
    """The state of a user before any event: no episode, nothing to decide."""
    return State(user_id=user_id)


T = TypeVar("T")
_new = object.__new__
_set = object.__setattr__


def amend(record: T, **changes: Any) -> T:
    """A copy of a frozen record with some fields changed; ``changes`` must name fields."""
    return amend_with(record, changes)


def amend_with(record: T, changes: dict[str, Any]) -> T:
    """``amend`` with the changes as a dict (saves building keyword arguments on hot paths).

    The records keep their fields in ``__dict__`` (no slots) so that a copy is
    one dict merge in C: ``dataclasses.replace`` re-runs the frozen ``__init__``
    (a guarded setattr per field plus field introspection), several times slower
    on the fold's hot path. (``__dict__.copy()`` then ``update`` keeps the
    shared-key layout and measured slower over the whole fold.) ``changes``
    itself is not kept.
    """
    copy = _new(type(record))
    _set(copy, "__dict__", {**record.__dict__, **changes})
    result: T = copy
    return result
