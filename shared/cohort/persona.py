"""Who a virtual patient is at intake: history, preferences and the body's parameters.

A persona is drawn from its own ``random.Random`` keyed by (seed, index), so
patient ``i`` is the same whatever the size of the cohort. Every range below is
documented in docs/CLINICAL.md ("The virtual patients").
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from types import MappingProxyType

from shared.events import Cause, Goal, Preference, RedFlag

from .profile import CLINICS, START

ARCHETYPES = (
    "improver",
    "plateau",
    "flare",
    "runner",
    "skipper",
    "late_sync",
    "red_flag",
    "radicular",
    "chronic",
)
WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "improver": 0.24,
        "plateau": 0.10,
        "flare": 0.12,
        "runner": 0.10,
        "skipper": 0.08,
        "late_sync": 0.10,
        "red_flag": 0.06,
        "radicular": 0.08,
        "chronic": 0.12,
    }
)
ZONES: tuple[tuple[tzinfo, float], ...] = (
    (UTC, 0.55),
    (timezone(timedelta(hours=1)), 0.20),
    (timezone(timedelta(hours=-5)), 0.12),
    (timezone(timedelta(hours=5, minutes=30)), 0.06),
    (timezone(timedelta(hours=10)), 0.07),
)
_LIKES: tuple[Preference, ...] = (
    "walking",
    "swimming",
    "cycling",
    "strength",
    "pilates",
    "yoga",
    "stretching",
)
_GOALS: tuple[Goal, ...] = ("daily_life", "gym", "sport")
_INTAKE_FLAGS: tuple[RedFlag, ...] = ("cancer_history", "major_trauma", "saddle_numbness")
_LATER_FLAGS: tuple[RedFlag, ...] = (
    "saddle_numbness",
    "bladder_bowel_change",
    "progressive_leg_weakness",
    "constant_night_pain",
    "fever_or_unwell",
    "unexplained_weight_loss",
)

Range = tuple[float, float]


@dataclass(frozen=True)
class Course:
    """An archetype's ranges: natural course of resting pain and the body's answer to load.

    pain0 -> pain_end with time constant tau (days); capacity0 and capacity_max
    in ladder levels; recovery is the capacity that comes back with each point
    the natural course takes off resting pain; gain is the capacity one
    well-dosed session adds; benefit the resting pain that two trained levels
    take off; sensitivity scales the answer to overload.
    """

    pain0: Range
    pain_end: Range
    tau: Range
    capacity0: Range
    capacity_max: Range
    gain: Range
    recovery: Range = (0.3, 0.5)
    benefit: Range = (0.4, 1.0)
    sensitivity: Range = (0.8, 1.2)
    floor: float = 0.0


_IMPROVING = Course((4.5, 7.0), (0.3, 1.6), (8, 20), (1.6, 2.6), (5.5, 7.0), (0.08, 0.14))
COURSES: Mapping[str, Course] = MappingProxyType(
    {
        "improver": _IMPROVING,
        "plateau": Course(
            (4.0, 5.5), (0.0, 0.0), (1, 1), (1.5, 2.3), (2.8, 3.6), (0.02, 0.04),
            recovery=(0.0, 0.0), benefit=(0.0, 0.0),
        ),
        "flare": Course((4.5, 7.0), (0.8, 2.0), (10, 24), (1.6, 2.6), (5.5, 7.0), (0.08, 0.14)),
        "runner": Course(
            (4.0, 6.5), (0.2, 1.2), (8, 18), (2.0, 3.0), (6.8, 8.0), (0.11, 0.17),
            recovery=(0.35, 0.55),
        ),
        "skipper": Course((4.5, 6.5), (1.5, 3.0), (15, 35), (1.6, 2.6), (5.0, 6.5), (0.08, 0.14)),
        "late_sync": Course((4.5, 6.5), (0.5, 2.0), (10, 24), (1.6, 2.6), (5.5, 7.0), (0.08, 0.14)),
        "red_flag": Course(
            (4.5, 7.0), (2.0, 3.5), (20, 35), (1.5, 2.3), (4.0, 5.5), (0.05, 0.10),
            recovery=(0.2, 0.4),
        ),
        "radicular": Course(
            (5.0, 7.5), (1.8, 3.2), (25, 50), (1.4, 2.2), (4.0, 5.5), (0.05, 0.09),
            recovery=(0.15, 0.3), sensitivity=(1.2, 1.6),
        ),
        "chronic": Course(
            (4.5, 6.5), (3.2, 4.0), (40, 80), (1.4, 2.2), (4.0, 5.5), (0.05, 0.09),
            recovery=(0.2, 0.4), benefit=(0.3, 0.8), floor=3.2,
        ),
    }
)  # fmt: skip


@dataclass(frozen=True)
class Flare:
    """A spontaneous flare-up: resting pain rises by ``size`` from ``start`` for ``days``."""

    start: int
    size: float
    days: int

    def lift(self, day: int) -> float:
        """How much the flare adds to resting pain on program ``day``."""
        k = day - self.start
        if k < 0 or k >= self.days:
            return 0.0
        if k == 0:
            return 0.7 * self.size
        left = self.days - k  # the last two days settle by thirds
        return self.size * min(1.0, left / 3)


@dataclass(frozen=True)
class Persona:
    """Who a virtual patient is and the parameters of their body."""

    index: int
    user_id: str
    archetype: str
    clinic_id: str
    tz: tzinfo
    started_at: datetime
    cause: Cause
    onset_date: date | None
    goals: tuple[Goal, ...]
    preferences: tuple[Preference, ...]
    sessions_per_week: int
    start_back: tuple[bool, ...] | None
    intake_red_flags: tuple[RedFlag, ...]
    red_flag_day: int | None
    red_flag: RedFlag | None
    cleared_after: int | None
    adherence: float
    log_rate: float
    pain0: float
    pain_end: float
    tau: float
    floor: float
    capacity0: float
    capacity_max: float
    recovery: float
    gain: float
    benefit: float
    sensitivity: float
    flares: tuple[Flare, ...]
    leg_days: frozenset[int]
    offline: bool
    session_hour: float
    weekday_shift: int
    away: range

    def natural(self, day: int) -> float:
        """Resting pain on program ``day`` as the natural course alone would have it."""
        decay = 0.0 if self.tau <= 1 else math.exp(-day / self.tau)
        return self.pain_end + (self.pain0 - self.pain_end) * decay

    def flare_lift(self, day: int) -> float:
        """What simulated flares add to resting pain on ``day``."""
        return sum(f.lift(day) for f in self.flares)


def mixture(weights: Mapping[str, float] | None) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Validate archetype weights; return names and cumulative weights."""
    chosen = WEIGHTS if weights is None else weights
    unknown = set(chosen) - set(ARCHETYPES)
    if unknown:
        raise ValueError(f"unknown archetypes: {sorted(unknown)}; known: {ARCHETYPES}")
    if any(w < 0 or not math.isfinite(w) for w in chosen.values()) or sum(chosen.values()) <= 0:
        raise ValueError("archetype weights must be finite, >= 0 and not all zero")
    names = tuple(name for name in ARCHETYPES if chosen.get(name, 0) > 0)
    total, cum = 0.0, []
    for name in names:
        total += chosen[name]
        cum.append(total)
    return names, tuple(cum)


def make_persona(
    seed: int,
    index: int,
    *,
    start: datetime = START,
    mix: tuple[tuple[str, ...], tuple[float, ...]] | None = None,
) -> Persona:
    """Draw virtual patient ``index`` of cohort ``seed``; the same inputs give the same one."""
    rng = random.Random(f"virtual:{seed}:{index}")  # noqa: S311 - simulation, not security
    names, cum = mix or mixture(None)
    kind = rng.choices(names, cum_weights=cum)[0]
    zones, odds = zip(*ZONES, strict=True)
    tz = rng.choices(zones, odds)[0]
    day0 = start.astimezone(tz).date() + timedelta(days=rng.randrange(7))
    started = datetime.combine(day0, time(rng.randint(9, 16), rng.randrange(60)), tz)
    cause, onset = _onset(rng, kind, day0)
    course = COURSES[kind]
    pain0 = rng.uniform(*course.pain0)
    drift = rng.uniform(-0.4, 0.3)  # a plateau's course is flat, give or take
    flag_day, flag, cleared = _red_flag(rng, kind)
    return Persona(
        index=index,
        user_id=f"v{seed}-{index:05d}",
        archetype=kind,
        clinic_id=rng.choice(CLINICS),
        tz=tz,
        started_at=started,
        cause=cause,
        onset_date=onset,
        goals=("running",) if kind == "runner" else (rng.choice(_GOALS),),
        preferences=_preferences(rng, kind),
        sessions_per_week=rng.randint(3, 5) if kind == "skipper" else rng.randint(2, 5),
        start_back=_start_back(rng, kind),
        intake_red_flags=(flag,) if flag is not None and flag_day == 0 else (),
        red_flag_day=flag_day,
        red_flag=flag,
        cleared_after=cleared,
        adherence=rng.uniform(0.15, 0.4) if kind == "skipper" else rng.uniform(0.8, 0.97),
        log_rate=rng.uniform(0.5, 0.7) if kind == "skipper" else rng.uniform(0.82, 0.97),
        pain0=pain0,
        pain_end=pain0 + drift if kind == "plateau" else rng.uniform(*course.pain_end),
        tau=rng.uniform(*course.tau),
        floor=course.floor,
        capacity0=rng.uniform(*course.capacity0),
        capacity_max=rng.uniform(*course.capacity_max),
        recovery=rng.uniform(*course.recovery),
        gain=rng.uniform(*course.gain),
        benefit=rng.uniform(*course.benefit),
        sensitivity=rng.uniform(*course.sensitivity),
        flares=_flares(rng) if kind == "flare" else (),
        leg_days=_leg_days(rng) if kind == "radicular" else frozenset(),
        offline=kind == "late_sync",
        session_hour=rng.uniform(7.5, 19.5),
        weekday_shift=rng.randrange(7),
        away=_away(rng),
    )  # fmt: skip


def personas(
    n: int, seed: int = 0, *, start: datetime = START, archetypes: Mapping[str, float] | None = None
) -> list[Persona]:
    """The first ``n`` virtual patients of cohort ``seed``, in index order."""
    mix = mixture(archetypes)
    return [make_persona(seed, i, start=start, mix=mix) for i in range(n)]


def _onset(rng: random.Random, kind: str, day0: date) -> tuple[Cause, date | None]:
    if kind == "chronic":
        cause: Cause = "gradual" if rng.random() < 0.7 else "unknown"
        return cause, day0 - timedelta(days=rng.randint(90, 400))
    odds = (0.5, 0.25, 0.25) if kind == "runner" else (0.4, 0.35, 0.25)
    cause = rng.choices(("sprain_strain", "gradual", "unknown"), odds)[0]
    if rng.random() < 0.04:
        return cause, None
    if cause == "sprain_strain":
        days = rng.randint(1, 6) if rng.random() < 0.7 else rng.randint(7, 30)
    else:
        days = rng.randint(14, 120) if cause == "gradual" else rng.randint(3, 90)
    if kind == "plateau":
        days = max(days, rng.randint(21, 200))
    elif kind in ("improver", "flare", "runner", "late_sync"):
        days = min(days, 42)  # improving quickly is the natural history of recent onsets
    return cause, day0 - timedelta(days=days)


def _preferences(rng: random.Random, kind: str) -> tuple[Preference, ...]:
    liked = rng.sample(_LIKES, rng.randint(1, 3))
    if kind == "runner":
        liked.insert(rng.randrange(len(liked) + 1), "running")
    return tuple(liked)


def _start_back(rng: random.Random, kind: str) -> tuple[bool, ...] | None:
    if rng.random() < 0.15:
        return None
    physical = [rng.random() < 0.4 for _ in range(4)]
    high = {"plateau": 0.3, "chronic": 0.3, "radicular": 0.12}.get(kind, 0.05)
    if rng.random() < high:
        yes = rng.randint(4, 5)
    else:
        yes = rng.choices((0, 1, 2, 3), (0.4, 0.3, 0.2, 0.1))[0]
    psychosocial = [True] * yes + [False] * (5 - yes)
    rng.shuffle(psychosocial)
    return tuple(physical + psychosocial)


def _flares(rng: random.Random) -> tuple[Flare, ...]:
    first = Flare(rng.randint(16, 40), rng.uniform(2.5, 4.0), rng.randint(5, 9))
    second = first.start + first.days + rng.randint(12, 26)
    if rng.random() < 0.5 or second > 76:
        return (first,)
    return (first, Flare(second, rng.uniform(2.5, 4.0), rng.randint(5, 9)))


def _leg_days(rng: random.Random) -> frozenset[int]:
    """Days of leg pain below the knee: a few within a fortnight of the first weeks."""
    first = rng.randint(1, 21)
    return frozenset(rng.sample(range(first, first + 14), rng.randint(3, 7)))


def _away(rng: random.Random) -> range:
    if rng.random() < 0.15:
        first = rng.randint(20, 70)
        return range(first, first + rng.randint(3, 6))
    return range(0)


def _red_flag(rng: random.Random, kind: str) -> tuple[int | None, RedFlag | None, int | None]:
    if kind != "red_flag":
        return None, None, None
    cleared = rng.randint(10, 18) if rng.random() < 0.5 else None
    if rng.random() < 0.3:
        return 0, rng.choice(_INTAKE_FLAGS), cleared
    return rng.randint(10, 60), rng.choice(_LATER_FLAGS), cleared
