"""decide: the prescription a physiotherapist would write for the folded state.

- ``protect`` is walking at level 1 whatever the aerobic preference: swimming
  and cycling load the back more than walking does in the first week.
- ``flare`` is walking at half the minutes of the aerobic slot (or walk-run)
  held before the flare, at least 10, rounded down to a walking level, plus
  ``cat_camel`` and ``knee_hugs`` at level 1.
- ``refer`` prescribes nothing; a red-flag referral overrides any routine one.
- Routine referrals rank radicular_pain_review > flare_not_settling >
  not_recovered_12_weeks > no_improvement_6_weeks > start_back_high_risk;
  every one that applies is listed in the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.prescriber.engine.phase import period_of, phase_of, stage_of
from services.prescriber.engine.rules import DEFAULT_RULES, RuleSet
from services.prescriber.engine.state import Episode, Program, State
from shared.events import PrescribedExercise, Reason, Referral

_MEMO_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class Prescription:
    """What the patient should do now, and why."""

    phase: str
    stage: str
    exercises: tuple[PrescribedExercise, ...]
    sessions_per_week: int
    referral: Referral | None
    reasons: tuple[Reason, ...]


def decide(state: State, rules: RuleSet = DEFAULT_RULES) -> Prescription | None:
    """The prescription for ``state`` (None before any RehabStarted); "now" is state.now.

    Deterministic: equal states give the identical Prescription object (memoised
    per rule set on everything the prescription depends on).
    """
    episode, program = state.episode, state.program
    if episode is None or program is None:
        return None
    phase = phase_of(state.today, episode, program, rules)
    key = (
        phase,
        stage_of(state.today, episode, rules),
        episode.exercises,
        episode.sessions_per_week,
        program.levels if program.flare is None else program.flare.pre_levels,
        program.run_level if program.flare is None else program.flare.pre_run_level,
        program.running,
        program.red_flags,
        _referral_codes(episode, program),
        program.step_code,
        program.flare.code if program.flare is not None else None,
        program.excluded,
    )
    memo = rules.memo
    found = memo.get(key)
    if found is None:
        if len(memo) > _MEMO_LIMIT:
            memo.clear()
        found = _prescribe(phase, key[1], episode, program, rules)
        memo[key] = found
    assert isinstance(found, Prescription)
    return found


def same_basis(before: State, after: State, rules: RuleSet = DEFAULT_RULES) -> bool:
    """True only if ``decide(after)`` is certainly ``decide(before)``.

    Conservative (False may still decide the same): compares by identity what
    decide reads (the fold keeps a field's object unless it changes it, and
    equal-but-new objects only cost a decide); a new date matters only if it
    moves phase or stage.
    """
    one, two, episode = before.program, after.program, after.episode
    if episode is not before.episode or episode is None or one is None or two is None:
        return False
    if one is not two and (
        one.levels is not two.levels
        or one.flare is not two.flare
        or one.run_level is not two.run_level
        or one.running is not two.running
        or one.red_flags is not two.red_flags
        or one.step_code is not two.step_code
        or one.no_improvement is not two.no_improvement
        or one.not_recovered is not two.not_recovered
        or one.radicular is not two.radicular
        or one.excluded is not two.excluded
        or one.start_back_cleared is not two.start_back_cleared
    ):
        return False
    return after.today == before.today or period_of(before.today, episode, rules) == period_of(
        after.today, episode, rules
    )


def _prescribe(
    phase: str, stage: str, episode: Episode, program: Program, rules: RuleSet
) -> Prescription:
    exercises = _exercises(phase, episode, program, rules)
    if program.excluded:
        exercises = tuple(e for e in exercises if e.exercise_id not in program.excluded)
    return Prescription(
        phase=phase,
        stage=stage,
        exercises=exercises,
        sessions_per_week=_sessions_per_week(phase, episode, rules),
        referral=_referral(episode, program, rules),
        reasons=_reasons(phase, episode, program),
    )


def _sessions_per_week(phase: str, episode: Episode, rules: RuleSet) -> int:
    if phase == "protect" and rules.protect_sessions_per_week is not None:
        return rules.protect_sessions_per_week
    if phase == "flare" and rules.flare_sessions_per_week is not None:
        return rules.flare_sessions_per_week
    return episode.sessions_per_week


def _exercises(
    phase: str, episode: Episode, program: Program, rules: RuleSet
) -> tuple[PrescribedExercise, ...]:
    if phase == "refer":
        return ()
    if phase == "protect":
        return (rules.prescribed(rules.protect_exercise, 1),)
    if phase == "flare":
        kept = tuple(rules.prescribed(ex, 1) for ex in episode.exercises if ex in rules.flare_keep)
        return (*kept, _flare_walk(episode, program, rules))
    pairs = zip(episode.exercises, program.levels, strict=True)
    if phase == "return_to_run":
        body = tuple(rules.prescribed(ex, lv) for ex, lv in pairs if ex != episode.aerobic)
        return (*body, rules.prescribed(rules.run_ladder, program.run_level))
    return tuple(rules.prescribed(ex, lv) for ex, lv in pairs)


def _flare_walk(episode: Episode, program: Program, rules: RuleSet) -> PrescribedExercise:
    flare = program.flare
    assert flare is not None
    if program.running:
        held = rules.prescribed(rules.run_ladder, flare.pre_run_level)
    else:
        held = rules.prescribed(episode.aerobic, flare.pre_levels[-1])
    minutes = max(
        rules.flare_walk_min_minutes, int((held.minutes or 0) * rules.flare_walk_fraction)
    )
    walk = rules.protect_exercise
    levels = [
        n
        for n, rung in enumerate(rules.ladders[walk], start=1)
        if rung.minutes is not None and rung.minutes <= minutes
    ]
    return rules.prescribed(walk, max(levels, default=1))


def _referral_codes(episode: Episode, program: Program) -> tuple[str, ...]:
    flare = program.flare
    start_back = episode.start_back_high and not program.start_back_cleared
    if not (
        program.not_recovered
        or program.no_improvement
        or start_back
        or program.radicular
        or (flare is not None and flare.not_settling)
    ):
        return ()
    codes = []
    if program.radicular:
        codes.append("radicular_pain_review")
    if flare is not None and flare.not_settling:
        codes.append("flare_not_settling")
    if program.not_recovered:
        codes.append("not_recovered_12_weeks")
    if program.no_improvement:
        codes.append("no_improvement_6_weeks")
    if start_back:
        codes.append("start_back_high_risk")
    return tuple(codes)


def _referral(episode: Episode, program: Program, rules: RuleSet) -> Referral | None:
    if program.red_flags:
        emergency = any(f in rules.emergency_flags for f in program.red_flags)
        text = rules.emergency_reason if emergency else rules.urgent_reason
        return Referral(
            urgency="emergency" if emergency else "urgent",
            reason=text.format(flags=", ".join(sorted(program.red_flags))),
        )
    codes = _referral_codes(episode, program)
    return Referral(urgency="routine", reason=codes[0]) if codes else None


_DETAILS = {
    "red_flag": "red-flag symptoms: see a clinician before exercising",
    "protect_phase": "first week after a sprain or strain: stay active with walking",
    "build_phase": "the targeted program, guided by how pain answers each session",
    "return_to_run": "14 days in build, every session GREEN and baseline <= 2",
    "flare_baseline_jump": "baseline jumped 2 or more above its 7-day median",
    "flare_two_high_days": "pain 7 or more on two days in a row",
    "flare_sustained_rise": "two scores in a row 2 or more above the pre-flare 7-day median",
    "flare_big_jump": "one score 4 or more above its 7-day median",
    "flare_not_settling": "a flare-up not settled after 14 days",
    "radicular_pain_review": "leg pain below the knee on two days within a week",
    "start_back_medium_risk": "STarT Back overall score 4 or more: medium risk, for information",
    "rules_updated": "the first change decided under a newer rule set",
    "clinician_clear_red_flags": "a clinician examined the patient and cleared the red flags",
    "clinician_set_levels": "a clinician set the exercise levels",
    "clinician_exclude_exercise": "a clinician took an exercise out of the program",
    "clinician_include_exercise": "a clinician returned an exercise to the program",
    "clinician_hold": "a clinician holds automatic progression",
    "clinician_release": "a clinician released automatic progression",
    "clinician_acknowledge_referral": "a clinician saw the referral; the program goes on",
    "progressed_two_green": "two GREEN sessions in a row, completed and not hard",
    "regressed_red_verdict": "a session answered RED",
    "regressed_red_run_verdict": "a run session answered RED: the run ladder steps down",
    "resumed_after_flare": "baseline back within 1 point of its pre-flare value",
    "no_improvement_6_weeks": "no improvement in baseline after 6 weeks",
    "not_recovered_12_weeks": "baseline still above 2 after 12 weeks",
    "start_back_high_risk": "STarT Back psychosocial score 4 or more",
}
_PHASE_CODE = {
    "refer": "red_flag",
    "protect": "protect_phase",
    "build": "build_phase",
    "return_to_run": "return_to_run",
}


def detail(code: str) -> str:
    """The human-readable detail of a reason code."""
    return _DETAILS.get(code, code)


def _reasons(phase: str, episode: Episode, program: Program) -> tuple[Reason, ...]:
    codes = [_PHASE_CODE.get(phase) or (program.flare.code if program.flare else "flare")]
    if phase in ("build", "return_to_run") and program.step_code not in (None, codes[0]):
        codes.append(program.step_code or "")
    codes.extend(_referral_codes(episode, program))
    return tuple(Reason(code=c, detail=_DETAILS.get(c, c)) for c in codes)
