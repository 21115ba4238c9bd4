"""Flare-ups (RULES.md section 6): detecting one, and resuming after it settles.

Only a patient in build or return_to_run can flare: protect is already the
gentlest program and refer has none. The pre-flare value is the baseline just
before the flaring score (else the 7-day median). The flare has settled when
the median of the baseline and morning scores logged since it began (within
72 h) is back within 1 point of that value; older, pre-flare scores do not
count, or they would end a flare the day it starts.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from services.prescriber.engine.baseline import baseline_at, median_since
from services.prescriber.engine.rules import RuleSet
from services.prescriber.engine.state import Flare, Program, Score, State, amend


def flare_code(state: State, score: int, at: datetime, today: date, rules: RuleSet) -> str | None:
    """Why this score starts a flare, or None. ``state`` holds the scores before it."""
    before = median_since(state.scores, at - rules.spans.flare_window)
    if before is not None and score >= before + rules.flare_jump:
        return "flare_baseline_jump"
    if score >= rules.flare_high_score and rules.flare_high_days > 1:
        wanted = {today - timedelta(days=n) for n in range(1, rules.flare_high_days)}
        if wanted <= set(state.high_days):
            return "flare_two_high_days"
    return None


def high_days(state: State, score: int, today: date, rules: RuleSet) -> tuple[date, ...]:
    """The latest dates with a high score, kept just long enough to see a run of them."""
    if score < rules.flare_high_score or today in state.high_days:
        return state.high_days
    return (*state.high_days, today)[-rules.flare_high_days :]


def start(state: State, program: Program, code: str, at: datetime, rules: RuleSet) -> Program:
    """Enter a flare, remembering levels and the pre-flare baseline to resume from."""
    before = baseline_at(state, at, rules)
    if before is None:
        before = rules.missing_baseline
    flare = Flare(
        since=at,
        code=code,
        pre_baseline=before,
        pre_levels=program.levels,
        pre_run_level=program.run_level,
    )
    return amend(program, flare=flare)


def settled(scores: tuple[Score, ...], at: datetime, flare: Flare, rules: RuleSet) -> bool:
    """The scores since the flare began are back within 1 point of the pre-flare value."""
    since = max(flare.since, at - rules.spans.baseline)
    now_median = median_since(scores, since)
    return now_median is not None and now_median <= flare.pre_baseline + rules.resume_within


def resume(program: Program, flare: Flare, at: datetime, rules: RuleSet) -> Program:
    """Back to build, each exercise one level below where it was before the flare."""
    drop = rules.resume_level_drop
    return amend(
        program,
        flare=None,
        levels=tuple(max(1, level - drop) for level in flare.pre_levels),
        run_level=max(1, flare.pre_run_level - drop),
        running=False,
        build_since=at.date(),
        step_code="resumed_after_flare",
        last_step_at=at,
    )
