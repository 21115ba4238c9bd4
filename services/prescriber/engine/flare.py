"""Flare-ups (RULES.md section 6): detecting one, and resuming after it settles.

Only a patient in build or return_to_run can flare: protect is already the
gentlest program and refer has none. v1 starts a flare on one score 2 above
the 7-day median; v2 on a sustained rise (``flare_rise_scores`` scores in a
row, on different days at most ``flare_rise_gap_days`` apart, each 2 above
the median of the 7 days before the first of them: a ``Rise``), on one score
4 above it, or (both) on high scores on two days in a row. The pre-flare
value is the baseline just before the first flaring score (else the 7-day
median). The flare has settled when the median of the baseline and morning
scores logged since it began (within 72 h) is back within 1 point of that
value; older, pre-flare scores do not count, or they would end a flare the
day it starts.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from services.prescriber.engine.baseline import baseline_at, median_since
from services.prescriber.engine.rules import RuleSet
from services.prescriber.engine.state import Flare, Program, Rise, Score, State, amend


def detect(state: State, program: Program, score: int, at: datetime, rules: RuleSet) -> Program:
    """A baseline or morning score in build or return_to_run: start a flare, or follow a rise.

    ``state`` holds the scores before this one.
    """
    before = median_since(state.scores, at - rules.spans.flare_window)
    if rules.flare_rise_scores <= 1:
        if before is not None and score >= before + rules.flare_jump:
            return start(state, program, "flare_baseline_jump", at, rules)
    else:
        rise = _rise(state, score, at, before, rules)
        if rise is not None and rise.count >= rules.flare_rise_scores:
            code, since = "flare_sustained_rise", rise.since
            return start(state, program, code, since, rules, pre=rise.baseline)
        if rise is not program.rise:
            program = amend(program, rise=rise)
        big = rules.flare_big_jump
        if big is not None and before is not None and score >= before + big:
            return start(state, program, "flare_big_jump", at, rules)
    if score >= rules.flare_high_score and rules.flare_high_days > 1:
        today = at.date()
        wanted = {today - timedelta(days=n) for n in range(1, rules.flare_high_days)}
        if wanted <= set(state.high_days):
            return start(state, program, "flare_two_high_days", at, rules)
    return program


def _rise(
    state: State, score: int, at: datetime, before: float | None, rules: RuleSet
) -> Rise | None:
    """The rise this score continues, starts or ends (None)."""
    rise, today = state.program.rise if state.program else None, at.date()
    if rise is not None and today - rise.day <= rules.spans.flare_rise_gap:
        if today == rise.day:
            return rise  # the row runs over days: another score that day neither counts nor breaks
        if score < rise.median + rules.flare_jump:
            return None  # a day back down breaks the row
        return amend(rise, day=today, count=rise.count + 1)
    if before is None or score < before + rules.flare_jump:
        return None
    return Rise(since=at, day=today, median=before, baseline=baseline_at(state, at, rules))


def high_days(state: State, score: int, today: date, rules: RuleSet) -> tuple[date, ...]:
    """The latest dates with a high score, kept just long enough to see a run of them."""
    if score < rules.flare_high_score or today in state.high_days:
        return state.high_days
    return (*state.high_days, today)[-rules.flare_high_days :]


def start(
    state: State,
    program: Program,
    code: str,
    since: datetime,
    rules: RuleSet,
    *,
    pre: float | None = None,
) -> Program:
    """Enter a flare that began at ``since``, remembering levels and the pre-flare
    baseline to resume from (``pre``, else the baseline just before ``since``)."""
    before = baseline_at(state, since, rules) if pre is None else pre
    if before is None:
        before = rules.missing_baseline
    flare = Flare(
        since=since,
        code=code,
        pre_baseline=before,
        pre_levels=program.levels,
        pre_run_level=program.run_level,
    )
    return amend(program, flare=flare, rise=None)


def check_settling(program: Program, flare: Flare, now: datetime | None, rules: RuleSet) -> Program:
    """A flare still on after ``flare_refer_days`` adds a routine referral (v2)."""
    span = rules.spans.flare_refer
    if span is None or now is None or now - flare.since < span:
        return program
    return amend(program, flare=amend(flare, not_settling=True))


def settled(scores: tuple[Score, ...], at: datetime, flare: Flare, rules: RuleSet) -> bool:
    """The scores since the flare began are back within 1 point of the pre-flare value."""
    since = max(flare.since, at - rules.spans.baseline)
    now_median = median_since(scores, since)
    return now_median is not None and now_median <= flare.pre_baseline + rules.resume_within


def resume(program: Program, flare: Flare, at: datetime, rules: RuleSet) -> Program:
    """Back to build (v2: or return_to_run), each exercise one level below where it was."""
    drop = rules.resume_level_drop
    return amend(
        program,
        flare=None,
        levels=tuple(max(1, level - drop) for level in flare.pre_levels),
        run_level=max(1, flare.pre_run_level - drop),
        running=program.running and rules.resume_keeps_running,
        build_since=at.date(),
        step_code="resumed_after_flare",
        last_step_at=at,
    )
