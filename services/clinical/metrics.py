"""Cohort figures from patients' facts: a summary per archetype, and the targets of issue 13.

``targets(facts)`` gives (name, measured, threshold, met) rows for one rule
set, so asserting them is one line: ``assert all(t.met for t in targets(...))``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from statistics import mean, median
from typing import TypeVar

from services.clinical.facts import NO_IMPROVEMENT, Facts, FlareFacts
from shared.cohort.body import CLEAR_OVERLOAD

T = TypeVar("T")

WEEK_4_LAST_DAY = 27  # program days 0-27 are weeks 1-4
START_BACK = "start_back_high_risk"
DETECTED_WITHIN = 2


@dataclass(frozen=True)
class Target:
    """One target: what was measured against the threshold it must reach."""

    name: str
    measured: float | None
    threshold: float
    at_least: bool  # measured >= threshold is met (else measured <= threshold)
    percent: bool = False

    @property
    def met(self) -> bool:
        """Measured, and on the right side of the threshold."""
        if self.measured is None:
            return False
        if self.at_least:
            return self.measured >= self.threshold
        return self.measured <= self.threshold

    def row(self) -> tuple[str, float | None, float, bool]:
        """(name, measured, threshold, met)."""
        return self.name, self.measured, self.threshold, self.met


@dataclass(frozen=True)
class Summary:
    """The figures of one group of patients (an archetype, or everyone) under one rule set."""

    patients: int
    phases: dict[str, int]
    median_level: float | None
    progressed: float | None
    progressed_by_week_4: float | None
    median_first_progression: float | None
    deloads: float | None
    resumes: float | None
    flares: int
    flares_within: float | None
    flares_detected: float | None
    median_flare_latency: float | None
    flare_progressions: int
    overloads: int
    overloads_answered: float | None
    overloads_stepped_down: float | None
    clear_overloads: int
    clear_overloads_answered: float | None
    referrals: dict[str, list[int]]  # reason -> program days
    changes_per_week: float | None
    weekly_levels: tuple[float | None, ...]


def summarise(group: Sequence[Facts]) -> Summary:
    """Figures of a group; shares are fractions, None where nothing was there to count."""
    flares = [f for p in group for f in p.flares if f.detectable]
    overloads = [o for p in group for o in p.overloads]
    clear = [o for o in overloads if o.excess >= CLEAR_OVERLOAD]
    firsts = [p.first_progression for p in group if p.first_progression is not None]
    days: dict[str, list[int]] = defaultdict(list)
    for p in group:
        for reason, day in p.referrals:
            days[reason].append(day)
    return Summary(
        patients=len(group),
        phases=dict(Counter(p.final_phase for p in group).most_common()),
        median_level=_median(p.final_level for p in group),
        progressed=_share(group, lambda p: p.first_progression is not None),
        progressed_by_week_4=_share(group, _progressed_by_week_4),
        median_first_progression=_median(firsts),
        deloads=_mean(p.deloads for p in group),
        resumes=_mean(p.resumes for p in group),
        flares=len(flares),
        flares_within=_share(flares, _detected_in_time),
        flares_detected=_share(flares, lambda f: f.latency is not None),
        median_flare_latency=_median(f.latency for f in flares if f.latency is not None),
        flare_progressions=sum(any(f.progressions for f in p.flares) for p in group),
        overloads=len(overloads),
        overloads_answered=_share(overloads, lambda o: o.answered),
        overloads_stepped_down=_share(overloads, lambda o: o.stepped_down),
        clear_overloads=len(clear),
        clear_overloads_answered=_share(clear, lambda o: o.answered),
        referrals=dict(sorted(days.items())),
        changes_per_week=_ratio(sum(p.changes for p in group), sum(p.weeks for p in group)),
        weekly_levels=_weekly(group),
    )


def by_archetype(everyone: Sequence[Facts]) -> dict[str, Summary]:
    """A summary per archetype (in order of first appearance), then ``all``."""
    groups: dict[str, list[Facts]] = defaultdict(list)
    for p in everyone:
        groups[p.archetype].append(p)
    out = {name: summarise(group) for name, group in groups.items()}
    out["all"] = summarise(everyone)
    return out


def targets(everyone: Sequence[Facts]) -> list[Target]:
    """The targets of issue 13 measured on one rule set's cohort."""
    improvers = [p for p in everyone if p.archetype == "improver"]
    plateau = [p for p in everyone if p.archetype == "plateau"]
    flares = [f for p in everyone for f in p.flares if f.detectable]
    overloads = [o for p in everyone for o in p.overloads]
    flags = [ok for p in everyone for ok in p.red_flags_referred]
    other = [p for p in improvers if _other_referrals(p)]
    return [
        Target("improvers: median final level", _median(p.final_level for p in improvers), 3, True),
        Target(
            "improvers: progressed by program week 4",
            _share(improvers, _progressed_by_week_4), 0.9, True, percent=True,
        ),
        Target(
            "deload/resume cycles per patient", _mean(p.deloads for p in everyone), 0.5, False
        ),
        Target(
            f"simulated flares detected within {DETECTED_WITHIN} days of their start",
            _share(flares, _detected_in_time), 0.9, True, percent=True,
        ),
        Target(
            "patients progressed during a simulated flare",
            sum(any(f.progressions for f in p.flares) for p in everyone), 0, False,
        ),
        Target(
            "overloads held or stepped down within 2 sessions",
            _share(overloads, lambda o: o.answered), 0.95, True, percent=True,
        ),
        Target(
            f"plateau: referred {NO_IMPROVEMENT} on program days 42-49",
            _share(plateau, _referred_on_time), 0.9, True, percent=True,
        ),
        Target(
            "improvers: referred for anything but red flags or STarT Back",
            _share(improvers, lambda p: bool(_other_referrals(p))), 0.05, False, percent=True,
        ),
        Target(
            "improvers: such referrals before program day 42",
            sum(any(day < 42 for _, day in _other_referrals(p)) for p in other), 0, False,
        ),
        Target(
            "red flags referred on the event that reports them",
            _share(flags, bool), 1, True, percent=True,
        ),
        Target(
            "PrescriptionChanged per patient-week",
            _ratio(sum(p.changes for p in everyone), sum(p.weeks for p in everyone)), 0.5, False,
        ),
    ]  # fmt: skip


def _progressed_by_week_4(p: Facts) -> bool:
    return p.first_progression is not None and p.first_progression <= WEEK_4_LAST_DAY


def _detected_in_time(flare: FlareFacts) -> bool:
    return flare.latency is not None and flare.latency <= DETECTED_WITHIN


def _referred_on_time(p: Facts) -> bool:
    return p.no_improvement_day is not None and 42 <= p.no_improvement_day <= 49


def _other_referrals(p: Facts) -> list[tuple[str, int]]:
    return [(r, d) for r, d in p.referrals if r != START_BACK and not r.startswith("red flags")]


def _weekly(group: Sequence[Facts]) -> tuple[float | None, ...]:
    weeks = max((p.weeks for p in group), default=0)
    return tuple(
        _median(p.weekly_levels[w] for p in group if w < len(p.weekly_levels)) for w in range(weeks)
    )


def _median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(median(known)) if known else None


def _mean(values: Iterable[float]) -> float | None:
    known = list(values)
    return float(mean(known)) if known else None


def _share(items: Sequence[T], test: Callable[[T], bool]) -> float | None:
    if not items:
        return None
    return sum(1 for item in items if test(item)) / len(items)


def _ratio(top: float, bottom: float) -> float | None:
    return top / bottom if bottom else None
