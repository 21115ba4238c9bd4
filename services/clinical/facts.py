"""What the engine did for one virtual patient, set against what really happened.

Every definition docs/CLINICAL.md states is computed here, from one ``Run``:
the changes the engine emitted (with the moment each was emitted) and the
patient's ground truth. Days are program days (0 = the day of intake, in the
patient's time zone). "In force at t" is the last change emitted by t.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from uuid import UUID

from services.clinical.driver import Run
from shared.cohort.load import core_level, prescribed_load
from shared.events import PrescriptionChanged, Referral

NO_IMPROVEMENT = "no_improvement_6_weeks"
MOVING = ("build", "return_to_run", "flare")


@dataclass(frozen=True)
class FlareFacts:
    """One simulated flare: could the engine see it, how late it eased off, steps up in it."""

    start: int
    last: int
    detectable: bool
    latency: int | None
    progressions: int


@dataclass(frozen=True)
class OverloadFacts:
    """One session whose load exceeded the capacity of the day, and what followed."""

    day: int
    excess: float
    answered: bool  # neither of the next two sessions was prescribed more load
    stepped_down: bool  # one of them was prescribed less


@dataclass(frozen=True)
class Facts:
    """One patient's course under one rule set, reduced to what the metrics count."""

    archetype: str
    final_phase: str
    final_level: int
    first_progression: int | None
    deloads: int
    resumes: int
    changes: int
    weeks: int
    flares: tuple[FlareFacts, ...]
    overloads: tuple[OverloadFacts, ...]
    referrals: tuple[tuple[str, int], ...]  # (reason, program day) of each new referral
    no_improvement_day: int | None
    red_flags_referred: tuple[bool, ...]
    weekly_levels: tuple[int | None, ...]


def facts(run: Run) -> Facts:
    """Reduce a run to its facts (pure: the same run gives the same facts)."""
    changes = [e.change for e in run.changes]
    weeks = run.weeks
    return Facts(
        archetype=run.truth.archetype,
        final_phase=changes[-1].phase if changes else "none",
        final_level=final_level(changes),
        first_progression=next(
            (run.day_of(c.occurred_at) for c in changes if c.change == "progressed"), None
        ),
        deloads=sum(c.change == "deloaded" for c in changes),
        resumes=sum(c.change == "resumed" for c in changes),
        changes=len(changes),
        weeks=weeks,
        flares=tuple(_flare(run, start, last) for start, last in run.truth.flares),
        overloads=_overloads(run),
        referrals=tuple(referrals(run)),
        no_improvement_day=_first_with(run, NO_IMPROVEMENT),
        red_flags_referred=tuple(_flag_referred(run, e) for e in run.truth.red_flag_events),
        weekly_levels=tuple(_level_at(run, 7 * w - 1) for w in range(1, weeks + 1)),
    )


def final_level(changes: list[PrescriptionChanged]) -> int:
    """The core level of the last prescription that had core exercises (1 if none had)."""
    for change in reversed(changes):
        level = core_level(change.exercises)
        if level is not None:
            return level
    return 1


def referral_reason(referral: Referral) -> str:
    """A routine referral's reason code; red flags by urgency (their text names the flags)."""
    return referral.reason if referral.urgency == "routine" else f"red flags ({referral.urgency})"


def referrals(run: Run) -> list[tuple[str, int]]:
    """Each new referral (one that differs from the one before it) and its program day."""
    out, before = [], None
    for emitted in run.changes:
        referral = emitted.change.referral
        if referral is not None and referral != before:
            out.append((referral_reason(referral), run.day_of(emitted.change.occurred_at)))
        before = referral
    return out


def end_of_day(run: Run, day: int) -> datetime:
    """Midnight after program ``day`` in the patient's time zone."""
    first = run.persona.started_at.date() + timedelta(days=day + 1)
    return datetime.combine(first, time(0), run.persona.tz)


def _first_with(run: Run, code: str) -> int | None:
    for emitted in run.changes:
        change = emitted.change
        codes = {r.code for r in change.reasons}
        if code in codes or (change.referral is not None and change.referral.reason == code):
            return run.day_of(change.occurred_at)
    return None


def _level_at(run: Run, day: int) -> int | None:
    """The core level in force at the end of ``day``; protect counts as 1, refer as none."""
    rx = run.in_force(end_of_day(run, day))
    if rx is None:
        return None
    level = core_level(rx.exercises)
    return 1 if level is None and rx.phase == "protect" else level


def _flare(run: Run, start: int, last: int) -> FlareFacts:
    before = run.in_force(end_of_day(run, start - 1))
    detectable = before is not None and before.phase in MOVING
    latency = 0 if before is not None and before.phase == "flare" else None
    progressions = 0
    for emitted in run.changes:
        day = run.day_of(emitted.change.occurred_at)
        if start <= day <= last:
            kind = emitted.change.change
            if kind == "deloaded" and latency is None:
                latency = day - start
            progressions += kind == "progressed"
    return FlareFacts(start, last, detectable, latency, progressions)


def _overloads(run: Run) -> tuple[OverloadFacts, ...]:
    sessions, out = run.truth.sessions, []
    end = prescribed_load(run.in_force(None))
    for i, session in enumerate(sessions):
        if not session.overloaded:
            continue
        done = prescribed_load(run.in_force(session.at))
        later = [prescribed_load(run.in_force(s.at)) for s in sessions[i + 1 : i + 3]]
        later += [end] * (2 - len(later))
        out.append(
            OverloadFacts(
                day=session.day,
                excess=session.excess,
                answered=all(load <= done for load in later),
                stepped_down=any(load < done for load in later),
            )
        )
    return tuple(out)


def _flag_referred(run: Run, event_id: UUID) -> bool:
    """The change caused by the red-flag event refers for red flags, or one already did."""
    for emitted in run.changes:
        if emitted.change.caused_by == event_id:
            return _red(emitted.change)
    arrived = run.arrived_at.get(event_id)
    return arrived is not None and _red(run.in_force(arrived))


def _red(change: PrescriptionChanged | None) -> bool:
    return (
        change is not None
        and change.referral is not None
        and change.referral.urgency in ("emergency", "urgent")
    )
