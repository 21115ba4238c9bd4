"""Escalation (RULES.md section 7): routine referrals while the program continues.

Each check is made once, at the first event on or after its day (v2: at the
first baseline or morning score, so the check reads a fresh baseline), and
the answer is kept for the episode: a referral once made is not withdrawn.
v1 counts the days from onset, v2 from the program's start. With no baseline
known (first or current) there is nothing to judge and no referral.
"""

from __future__ import annotations

from services.prescriber.engine.baseline import baseline_at
from services.prescriber.engine.phase import days_on_clock
from services.prescriber.engine.review import outcome_improved
from services.prescriber.engine.rules import RuleSet
from services.prescriber.engine.state import Episode, Program, State, amend


def escalate(state: State, episode: Episode, program: Program, rules: RuleSet) -> Program:
    """Latch the day-42 and day-84 checks once their day has come."""
    if program.no_improvement is not None and program.not_recovered is not None:
        return program
    day = days_on_clock(state.today, episode, rules)
    if program.no_improvement is None and day >= rules.no_improvement_day:
        program = amend(program, no_improvement=_no_improvement(state, program, rules))
    if program.not_recovered is None and day >= rules.not_recovered_day:
        program = amend(program, not_recovered=_not_recovered(state, rules))
    return program


def _no_improvement(state: State, program: Program, rules: RuleSet) -> bool:
    assert state.now is not None
    first, now = program.first_baseline, baseline_at(state, state.now, rules)
    if first is None or now is None:
        return False
    exempt = rules.no_improvement_exempt_at
    if exempt is not None and first <= exempt:
        return False
    if program.outcomes and outcome_improved(program, rules):
        return False
    drop = first - now
    return drop < rules.improvement_points and drop < first * rules.improvement_fraction


def _not_recovered(state: State, rules: RuleSet) -> bool:
    assert state.now is not None
    now = baseline_at(state, state.now, rules)
    return now is not None and now > rules.recovered_baseline


def start_back_high(answers: tuple[bool, ...] | None, rules: RuleSet) -> bool:
    """STarT Back psychosocial items 5-9 (indices 4..8) sum to 4 or more."""
    if answers is None:
        return False
    items = answers[rules.start_back_first_item : rules.start_back_last_item + 1]
    return sum(items) >= rules.start_back_threshold


def start_back_medium(answers: tuple[bool, ...] | None, rules: RuleSet) -> bool:
    """v2: overall score (all nine items) 4 or more while psychosocial is below 4."""
    medium = rules.start_back_medium_at
    if answers is None or medium is None:
        return False
    return sum(answers) >= medium and not start_back_high(answers, rules)
