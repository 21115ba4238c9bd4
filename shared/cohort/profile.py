"""Simulated patients as they are at intake, before anything is logged.

A profile is drawn from its own ``random.Random`` keyed by (seed, index), so
patient ``i`` is the same whatever ``n`` the cohort has.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from types import MappingProxyType

from shared.events import Cause, Goal, Preference, RedFlag

ARCHETYPES = ("improver", "plateau", "flare", "red_flag", "runner", "skipper", "late_sync")
DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "improver": 0.30,
        "plateau": 0.14,
        "flare": 0.14,
        "red_flag": 0.07,
        "runner": 0.13,
        "skipper": 0.11,
        "late_sync": 0.11,
    }
)
CLINICS = ("clinic-a", "clinic-b", "clinic-c", "clinic-d", "clinic-e")
#: A Monday; the first patients start that day, the last a week later.
START = datetime(2026, 1, 5, tzinfo=UTC)
CET = timezone(timedelta(hours=1))

_CAUSES: tuple[Cause, ...] = ("sprain_strain", "gradual", "unknown")
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
_LATER_FLAGS: tuple[RedFlag, ...] = (
    "saddle_numbness",
    "constant_night_pain",
    "bladder_bowel_change",
    "progressive_leg_weakness",
    "fever_or_unwell",
    "unexplained_weight_loss",
)
_INTAKE_FLAGS: tuple[RedFlag, ...] = ("cancer_history", "major_trauma", "saddle_numbness")
_NEVER = 1e9  # a time constant so long the pain never moves


@dataclass(frozen=True)
class Patient:
    """Who a simulated patient is and how their course will go."""

    index: int
    user_id: str
    archetype: str
    clinic_id: str
    tz: tzinfo
    started_at: datetime  # when RehabStarted happens, local time
    cause: Cause
    onset_date: date | None
    goals: tuple[Goal, ...]
    preferences: tuple[Preference, ...]
    sessions_per_week: int
    start_back: tuple[bool, ...] | None
    intake_red_flags: tuple[RedFlag, ...]
    baseline0: float  # pain level at intake
    baseline_end: float  # level the course tends towards
    tau_days: float  # time constant of the fall from one to the other
    flares: tuple[int, ...]  # course days on which a flare-up starts
    red_flag_day: int | None  # course day a red flag shows (0: at intake)
    red_flag: RedFlag | None
    cleared_after: int | None  # days from the red flag to a new RehabStarted
    adherence: float  # chance that a planned session happens
    setback_rate: float  # chance that a session goes badly
    run_from: int | None  # course day running replaces the aerobic slot
    progress_every: int  # days per exercise level the patient climbs

    @property
    def high_risk(self) -> bool:
        """STarT Back high risk: psychosocial items 5-9 sum to 4 or more."""
        return self.start_back is not None and sum(self.start_back[4:]) >= 4


def mixture(weights: Mapping[str, float] | None) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Validate archetype weights; return names and cumulative weights."""
    chosen = DEFAULT_WEIGHTS if weights is None else weights
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


def make_patient(
    seed: int,
    index: int,
    *,
    start: datetime = START,
    mix: tuple[tuple[str, ...], tuple[float, ...]] | None = None,
) -> Patient:
    """Draw patient ``index`` of the cohort ``seed``; the same inputs give the same patient."""
    rng = random.Random(f"patient:{seed}:{index}")  # noqa: S311 - simulation, not security
    names, cum = mix or mixture(None)
    kind = rng.choices(names, cum_weights=cum)[0]
    tz = CET if rng.random() < 0.1 else UTC
    day0 = start.astimezone(tz).date() + timedelta(days=rng.randrange(7))
    started = datetime.combine(day0, time(rng.randint(9, 16), rng.randrange(60)), tz)
    cause = rng.choices(_CAUSES, (0.45, 0.35, 0.2))[0]
    b0, end, tau = _curve(rng, kind)
    flag_day, flag, cleared = _red_flag(rng, kind)
    return Patient(
        index=index,
        user_id=f"p{seed}-{index:05d}",
        archetype=kind,
        clinic_id=rng.choice(CLINICS),
        tz=tz,
        started_at=started,
        cause=cause,
        onset_date=_onset(rng, cause, day0),
        goals=("running",) if kind == "runner" else (rng.choice(_GOALS),),
        preferences=_preferences(rng, kind),
        sessions_per_week=rng.randint(3, 5) if kind == "skipper" else rng.randint(2, 5),
        start_back=_start_back(rng, kind),
        intake_red_flags=(flag,) if flag is not None and flag_day == 0 else (),
        baseline0=b0,
        baseline_end=end,
        tau_days=tau,
        flares=_flares(rng) if kind == "flare" else (),
        red_flag_day=flag_day,
        red_flag=flag,
        cleared_after=cleared,
        adherence=rng.uniform(0.12, 0.3) if kind == "skipper" else rng.uniform(0.8, 0.97),
        setback_rate={"plateau": 0.25, "skipper": 0.2, "flare": 0.12}.get(kind, 0.07),
        run_from=rng.randint(42, 56) if kind == "runner" else None,
        progress_every=24 if kind in ("plateau", "skipper", "red_flag") else 10,
    )


def patients(
    n: int, seed: int = 0, *, start: datetime = START, archetypes: Mapping[str, float] | None = None
) -> list[Patient]:
    """The first ``n`` patients of cohort ``seed``, in index order."""
    mix = mixture(archetypes)
    return [make_patient(seed, i, start=start, mix=mix) for i in range(n)]


def _curve(rng: random.Random, kind: str) -> tuple[float, float, float]:
    if kind == "plateau":
        b0 = rng.uniform(4.0, 5.3)
        return b0, b0, _NEVER
    if kind == "runner":
        return rng.uniform(4.0, 6.0), rng.uniform(0.3, 1.3), rng.uniform(8, 16)
    if kind == "skipper":
        return rng.uniform(4.5, 6.0), rng.uniform(2.5, 4.0), rng.uniform(25, 40)
    if kind == "red_flag":
        return rng.uniform(4.5, 6.5), rng.uniform(2.0, 3.5), rng.uniform(20, 35)
    return rng.uniform(5.0, 6.5), rng.uniform(0.8, 1.8), rng.uniform(12, 24)


def _onset(rng: random.Random, cause: Cause, day0: date) -> date | None:
    if rng.random() < 0.05:
        return None
    days = {"sprain_strain": (1, 6), "gradual": (14, 90), "unknown": (3, 60)}[cause]
    return day0 - timedelta(days=rng.randint(*days))


def _preferences(rng: random.Random, kind: str) -> tuple[Preference, ...]:
    liked = rng.sample(_LIKES, rng.randint(1, 3))
    if kind == "runner":
        liked.insert(rng.randrange(len(liked) + 1), "running")
    return tuple(liked)


def _start_back(rng: random.Random, kind: str) -> tuple[bool, ...] | None:
    if rng.random() < 0.2:
        return None
    physical = [rng.random() < 0.4 for _ in range(4)]
    if rng.random() < (0.35 if kind == "plateau" else 0.06):
        yes = rng.randint(4, 5)
    else:
        yes = rng.choices((0, 1, 2, 3), (0.4, 0.3, 0.2, 0.1))[0]
    psychosocial = [True] * yes + [False] * (5 - yes)
    rng.shuffle(psychosocial)
    return tuple(physical + psychosocial)


def _flares(rng: random.Random) -> tuple[int, ...]:
    first = rng.randint(18, 40)
    if rng.random() < 0.5:
        return (first,)
    return (first, first + rng.randint(16, 30))


def _red_flag(rng: random.Random, kind: str) -> tuple[int | None, RedFlag | None, int | None]:
    if kind != "red_flag":
        return None, None, None
    cleared = rng.randint(10, 18) if rng.random() < 0.5 else None
    if rng.random() < 0.25:
        return 0, rng.choice(_INTAKE_FLAGS), cleared
    return rng.randint(14, 50), rng.choice(_LATER_FLAGS), cleared
